"""spoolgate/store/groupcommit.py on SQLite and PostgreSQL: batching, isolation, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from spoolgate.store import schema
from spoolgate.store.engine import create_engine, normalise_url
from spoolgate.store.groupcommit import GroupCommitter
from spoolgate.store.store import Store, StoreError, open_store
from tests.integration.store.messages import incoming

pytestmark = pytest.mark.integration


@pytest.fixture
def other_engine(store_url: str) -> Iterator[sa.Engine]:
    """A second engine on the store's database: it sees only what was committed."""
    engine = create_engine(store_url)
    yield engine
    engine.dispose()


def _visible(engine: sa.Engine, queue_id: str) -> tuple[int, int]:
    """(messages, recipient rows) another connection sees for *queue_id*."""
    with engine.connect() as conn:
        messages = conn.execute(sa.select(sa.func.count()).select_from(schema.messages)
                                .where(schema.messages.c.queue_id == queue_id)).scalar_one()
        rcpts = conn.execute(sa.select(sa.func.count()).select_from(schema.recipients)
                             .where(schema.recipients.c.queue_id == queue_id)).scalar_one()
    return messages, rcpts


def test_concurrent_commits_share_transactions_and_return_once_visible(
        store: Store, other_engine: sa.Engine) -> None:
    batches: list[int] = []
    messages = [incoming([f"u{n}@example.test", f"v{n}@other.test"],
                         data=f"Subject: {n}\r\n\r\n{n}\r\n".encode()) for n in range(200)]
    seen_on_return: dict[str, tuple[int, int]] = {}

    async def session(committer: GroupCommitter, message) -> None:
        await committer.commit(message)
        # No await between the wake-up and this look: the row must already be committed.
        seen_on_return[message.queue_id] = _visible(other_engine, message.queue_id)

    async def main() -> None:
        committer = GroupCommitter(store, max_wait=0.002, max_batch=64,
                                   observe=lambda size, _seconds: batches.append(size))
        committer.start()
        try:
            await asyncio.wait_for(asyncio.gather(*(session(committer, m) for m in messages)), 60)
        finally:
            await committer.stop()

    asyncio.run(main())

    assert seen_on_return == {m.queue_id: (1, 2) for m in messages}
    assert sorted(store.queue_ids()) == sorted(m.queue_id for m in messages)
    assert all(store.message_data(m.queue_id) == m.data for m in messages[::20])
    assert sum(batches) == 200
    assert len(batches) < 200, batches
    assert 1 < max(batches) <= 64, batches


def test_a_failing_message_does_not_fail_its_batch(store: Store) -> None:
    existing = incoming(["first@example.test"], data=b"first copy\r\n")
    store.commit_incoming([existing])
    clash = incoming(["second@example.test"], queue_id=existing.queue_id, data=b"clash\r\n")
    messages = [incoming([f"n{n}@example.test"]) for n in range(4)]
    messages.insert(2, clash)
    batches: list[int] = []

    async def main() -> list[BaseException | None]:
        committer = GroupCommitter(store, max_wait=0.05,
                                   observe=lambda size, _seconds: batches.append(size))
        committer.start()
        try:
            return await asyncio.wait_for(asyncio.gather(
                *(committer.commit(m) for m in messages), return_exceptions=True), 60)
        finally:
            await committer.stop()

    outcomes = asyncio.run(main())

    assert batches == [5]  # all five went into one transaction first
    assert isinstance(outcomes[2], StoreError)
    assert outcomes[:2] + outcomes[3:] == [None] * 4
    assert sorted(store.queue_ids()) == sorted(m.queue_id for m in messages)
    assert store.message_data(existing.queue_id) == b"first copy\r\n"
    assert [r.address for r in store.show(existing.queue_id).entry.recipients] == [
        "first@example.test"]


def test_stop_fails_waiting_messages_instead_of_hanging(store: Store) -> None:
    messages = [incoming() for _ in range(5)]

    async def main() -> list[BaseException | None]:
        # The writer gathers for an hour: every message is still waiting when stop() comes.
        committer = GroupCommitter(store, max_wait=3600)
        committer.start()
        sessions = [asyncio.create_task(committer.commit(m)) for m in messages]
        await asyncio.sleep(0)  # each session has handed its message over and waits
        await asyncio.wait_for(committer.stop(), 30)
        return await asyncio.wait_for(asyncio.gather(*sessions, return_exceptions=True), 30)

    outcomes = asyncio.run(main())

    assert all(isinstance(o, StoreError) and "shutting down" in str(o) for o in outcomes), outcomes
    assert store.count_messages() == 0


def _wait_for_lock_waiter(url: str, timeout: float = 30.0) -> None:
    engine = sa.create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
    query = sa.text("SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'")
    deadline = time.monotonic() + timeout
    try:
        with engine.connect() as conn:
            while conn.execute(query).scalar_one() == 0:
                assert time.monotonic() < deadline, "the commit never waited for the table lock"
                time.sleep(0.01)
    finally:
        engine.dispose()


def test_stop_during_a_commit_settles_every_waiter(pg_url: str) -> None:
    """PostgreSQL: the batch being written commits and says so; the ones queued behind fail."""
    store = open_store(pg_url)
    locker = sa.create_engine(normalise_url(pg_url))
    in_flight, queued = incoming(), [incoming(), incoming()]
    stopping = threading.Event()
    try:
        with locker.connect() as lock_conn:
            lock_conn.exec_driver_sql("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")

            def release_when_stopping() -> None:
                stopping.wait(60)
                lock_conn.rollback()

            async def main() -> list[BaseException | None]:
                committer = GroupCommitter(store, max_wait=0)
                committer.start()
                first = asyncio.create_task(committer.commit(in_flight))
                await asyncio.to_thread(_wait_for_lock_waiter, pg_url)
                behind = [asyncio.create_task(committer.commit(m)) for m in queued]
                await asyncio.sleep(0)
                releaser = threading.Thread(target=release_when_stopping)
                releaser.start()
                stopping.set()
                await asyncio.wait_for(committer.stop(), 60)
                releaser.join(60)
                return await asyncio.wait_for(
                    asyncio.gather(first, *behind, return_exceptions=True), 30)

            outcomes = asyncio.run(main())

        assert outcomes[0] is None
        assert all(isinstance(o, StoreError) for o in outcomes[1:]), outcomes
        assert store.queue_ids() == [in_flight.queue_id]
    finally:
        locker.dispose()
        store.close()
