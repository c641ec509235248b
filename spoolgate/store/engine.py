"""Database engines with the durability settings DESIGN.md requires.

SQLite runs in WAL mode with ``synchronous=FULL``: a commit returns only after
the WAL is fsync'd. PostgreSQL keeps its defaults (``fsync``,
``synchronous_commit=on``). SQLite allows one writer at a time, so writers of
every process on the node take an exclusive ``flock`` on a lock file beside the
database first; a blocked writer then wakes the moment the lock is free,
instead of in SQLite's busy-handler sleeps. WAL checkpoints are taken off the
commit path: :meth:`spoolgate.store.store.Store.checkpoint` runs them in the
background, and the automatic checkpoint only stands by for a WAL that grows past
``AUTOCHECKPOINT_PAGES`` (if nothing calls ``checkpoint``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa


def normalise_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


AUTOCHECKPOINT_PAGES = 20_000
WAL_SWITCH_TIMEOUT = 30.0


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """Put the database in WAL mode, waiting while another process does the same.

    When connections of several processes switch a new database file to WAL at the
    same moment, SQLite answers SQLITE_BUSY at once, without calling the busy handler.
    """
    deadline = time.monotonic() + WAL_SWITCH_TIMEOUT
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cursor = dbapi_conn.cursor()
    _enable_wal(cursor)
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(url: str) -> sa.Engine:
    """An engine for *url* with durable settings applied to every connection."""
    url = normalise_url(url)
    if sqlite_path(url) is not None:
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                                  pool_size=8, max_overflow=8)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)


class WriteLock:
    """Serialises writers: a thread lock, plus an flock shared with other processes (SQLite)."""

    def __init__(self, lock_file: Path | None) -> None:
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        if lock_file is not None:
            self._fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            if self._fd is None:
                yield
                return
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def write_lock_for(url: str) -> WriteLock:
    path = sqlite_path(normalise_url(url))
    return WriteLock(None if path is None else path.with_name(path.name + "-writelock"))
