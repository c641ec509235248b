"""spoolgate/store/queue.py on SQLite and PostgreSQL: held ``rescan-needed`` mail, found
and settled once."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from spoolgate.mail.states import RecipientState as S
from spoolgate.store.queue import Queue
from spoolgate.store.store import Store
from tests.integration.store.messages import incoming, recipient_states

MARKED = (("accepted", "from=<alice@src.test>"), ("rescan-needed", "clamav: refused"))


def _held(store: Store, *recipients: str, received_at: float,
          events: tuple[tuple[str, str], ...] = MARKED) -> str:
    msg = replace(incoming(recipients, received_at=received_at, events=events), held=True)
    store.commit_incoming([msg])
    return msg.queue_id


def test_held_marked_mail_awaits_its_rescan_oldest_first(store: Store) -> None:
    queue = Queue(store, "node-a")
    now = time.time()
    newer = _held(store, "alice@example.test", "bob@example.test", received_at=now)
    older = _held(store, "carol@example.test", received_at=now - 60)
    _held(store, "dave@example.test", received_at=now, events=MARKED[:1])  # an operator's hold
    store.commit_incoming([incoming(["erin@example.test"], events=MARKED)])  # queued: not held

    assert queue.awaiting_rescan() == [(older, pytest.approx(now - 60)),
                                       (newer, pytest.approx(now))]
    assert recipient_states(store, newer) == {"alice@example.test": "held", "bob@example.test": "held"}


def test_a_settled_rescan_moves_every_held_row_once_with_an_event_each(store: Store) -> None:
    queue = Queue(store, "node-a")
    queue_id = _held(store, "alice@example.test", "bob@example.test", received_at=time.time())

    assert queue.settle_rescan(queue_id, S.QUARANTINED, "quarantined after a rescan: x") == 2
    assert queue.settle_rescan(queue_id, S.QUEUED, "another node, later") == 0

    assert set(recipient_states(store, queue_id).values()) == {"quarantined"}
    settled = [e for e in store.show(queue_id).events if e.kind == "rescanned"]
    assert sorted((e.recipient, e.detail) for e in settled) == [
        ("alice@example.test", "quarantined after a rescan: x"),
        ("bob@example.test", "quarantined after a rescan: x")]
    assert queue.awaiting_rescan() == []


def test_a_rescan_settled_to_the_queue_makes_the_rows_due_now(store: Store) -> None:
    queue = Queue(store, "node-a")
    queue_id = _held(store, "alice@example.test", received_at=time.time() - 3600)
    assert queue.claim_due(time.time(), 10, lease=60) == []  # held: never claimed

    assert queue.settle_rescan(queue_id, S.QUEUED, "delivered after a rescan") == 1

    assert recipient_states(store, queue_id) == {"alice@example.test": "queued"}
    assert [row.address for row in queue.claim_due(time.time(), 10, lease=60)] \
        == ["alice@example.test"]


def test_a_rescan_never_settles_to_another_state(store: Store) -> None:
    queue = Queue(store, "node-a")
    queue_id = _held(store, "alice@example.test", received_at=time.time())

    with pytest.raises(ValueError, match="queued or quarantined"):
        queue.settle_rescan(queue_id, S.DELIVERED, "x")
    assert recipient_states(store, queue_id) == {"alice@example.test": "held"}
