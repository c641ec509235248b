"""spoolgate/store/engine.py on SQLite: durable settings on every connection, several writers."""

from __future__ import annotations

import contextlib
import multiprocessing
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from spoolgate.store import schema
from spoolgate.store.engine import create_engine, sqlite_path
from spoolgate.store.store import StoreError, open_store
from tests.integration.store.messages import incoming

pytestmark = pytest.mark.integration

WAL, SYNCHRONOUS_FULL = "wal", 2
COMMITS_PER_PROCESS = 150
NEW_FILES = 20


def test_every_connection_is_wal_and_synchronous_full(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    try:
        for _round in range(2):
            with contextlib.ExitStack() as stack:
                # Held at once, so the pool has to open four distinct connections.
                conns = [stack.enter_context(store.engine.connect()) for _ in range(4)]
                assert len({id(c.connection.dbapi_connection) for c in conns}) == 4
                for conn in conns:
                    assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == WAL
                    assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == SYNCHRONOUS_FULL
            store.commit_incoming([incoming()])
            store.engine.dispose()  # the second round gets brand-new connections
    finally:
        store.close()
    # WAL is a property of the file: a plain connection finds it too.
    with contextlib.closing(sqlite3.connect(sqlite_path(sqlite_url))) as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone() == (WAL,)
        assert plain.execute("SELECT count(*) FROM messages").fetchone() == (2,)


def _open_new_files_in_child(urls: list[str], start_line, results) -> None:
    outcomes = []
    for url in urls:
        start_line.wait(60)
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                outcomes.append(conn.exec_driver_sql("PRAGMA journal_mode").scalar())
        except Exception as error:
            outcomes.append(f"{type(error).__name__}: {error}")
        finally:
            engine.dispose()
    results.put(outcomes)


def test_two_processes_opening_a_new_file_at_once_both_get_wal(folder: Path) -> None:
    """Switching a new file to WAL from two processes at once must not fail either of them.

    SQLite answers the loser "database is locked" at once (no busy handler); each of the
    rounds starts both processes together on a file that does not exist yet.
    """
    urls = [f"sqlite:///{folder / f'new{n}.db'}" for n in range(NEW_FILES)]
    context = multiprocessing.get_context("spawn")
    start_line, results = context.Barrier(2), context.Queue()
    children = [context.Process(target=_open_new_files_in_child, args=(urls, start_line, results))
                for _ in range(2)]
    try:
        for child in children:
            child.start()
        outcomes = [results.get(timeout=120) for _ in children]
    finally:
        for child in children:
            child.join(60)
            if child.is_alive():
                child.kill()

    assert outcomes == [[WAL] * NEW_FILES] * 2


def _commit_in_child(url: str, node: str, start_line, results) -> None:
    errors, stored = [], []
    try:
        store = open_store(url)
    except Exception as error:
        results.put((node, [f"open: {error}"], []))
        return
    try:
        start_line.wait(60)
        for n in range(COMMITS_PER_PROCESS):
            message = incoming([f"{node}.{n}@example.test"], node=node)
            try:
                store.commit_incoming([message])
                stored.append(message.queue_id)
            except StoreError as error:
                errors.append(str(error))
    finally:
        store.close()
        results.put((node, errors, stored))


def test_two_processes_commit_to_one_file_at_once(sqlite_url: str) -> None:
    open_store(sqlite_url).close()
    context = multiprocessing.get_context("spawn")
    start_line, results = context.Barrier(2), context.Queue()
    children = [context.Process(target=_commit_in_child, args=(sqlite_url, node, start_line, results))
                for node in ("p1", "p2")]
    try:
        for child in children:
            child.start()
        reports = {node: (errors, stored)
                   for node, errors, stored in (results.get(timeout=120) for _ in children)}
    finally:
        for child in children:
            child.join(60)
            if child.is_alive():
                child.kill()

    assert [child.exitcode for child in children] == [0, 0]
    assert {node: errors for node, (errors, _) in reports.items()} == {"p1": [], "p2": []}
    store = open_store(sqlite_url)
    try:
        expected = reports["p1"][1] + reports["p2"][1]
        assert len(expected) == 2 * COMMITS_PER_PROCESS
        assert sorted(store.queue_ids()) == sorted(expected)
        with store.engine.connect() as conn:
            writers = list(conn.execute(sa.select(schema.messages.c.node)
                                        .order_by(sa.literal_column("rowid"))).scalars())
            assert conn.execute(sa.select(sa.func.count())
                                .select_from(schema.recipients)).scalar_one() == len(expected)
    finally:
        store.close()
    # The two really wrote at the same time: their commits interleave in the file.
    switches = sum(1 for a, b in zip(writers, writers[1:], strict=False) if a != b)
    assert switches > 1, "one process finished before the other began; nothing was concurrent"
