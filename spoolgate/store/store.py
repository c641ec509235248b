"""The store's operations: commit incoming messages, list and show the queue.

Every method is synchronous and thread-safe; the server calls them from a
bounded executor (see :mod:`spoolgate.store.groupcommit`), the CLI calls them
directly. Database failures surface as :class:`StoreError`, which callers
treat as temporary (SMTP ``452 4.3.1``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa

from spoolgate.mail.envelope import IncomingMessage
from spoolgate.mail.states import RecipientState
from spoolgate.store import schema
from spoolgate.store.engine import WriteLock, create_engine, write_lock_for
from spoolgate.store.migrations import migrate


class StoreError(Exception):
    """The database refused or failed an operation (disk full, connection lost, ...).

    ``conflict`` is true when the data itself was refused (a constraint), false when the
    database could not take any write (the next attempt of other data would fail too).
    """

    def __init__(self, message: str, conflict: bool = False) -> None:
        super().__init__(message)
        self.conflict = conflict


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    address: str
    state: str
    attempts: int
    next_attempt_at: float
    last_reply: str | None
    notify: str | None
    orcpt: str | None


@dataclass(frozen=True, slots=True)
class QueueEntry:
    queue_id: str
    received_at: float
    sender: str
    size: int
    recipients: tuple[RecipientStatus, ...]


@dataclass(frozen=True, slots=True)
class Event:
    at: float
    node: str
    kind: str
    recipient: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class MessageDetail:
    entry: QueueEntry
    client_ip: str
    helo: str
    tls: str | None
    node: str
    body_type: str
    smtputf8: bool
    ret: str | None
    envid: str | None
    events: tuple[Event, ...]


class Store:
    """One database holding messages, per-recipient queue rows and events."""

    def __init__(self, engine: sa.Engine, write_lock: WriteLock) -> None:
        self.engine = engine
        self._write_lock = write_lock

    @property
    def write_lock(self) -> WriteLock:
        """The lock every writer of this store takes (a file lock shared by processes on
        SQLite), for store modules beside this one such as the Bayes tokens."""
        return self._write_lock

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()
        self._write_lock.close()

    @contextmanager
    def writing(self, durable: bool = True) -> Iterator[sa.Connection]:
        """One write transaction under the node's write lock (for the store package).

        ``durable=False`` is for changes a crash may undo without harm, such as a lease
        (a restarted node returns its leases anyway): on SQLite that commit skips its
        fsync, and the next durable commit makes it durable too (WAL order).
        """
        with self._writing(durable) as conn:
            yield conn

    @contextmanager
    def reading(self) -> Iterator[sa.Connection]:
        with self._reading() as conn:
            yield conn

    @contextmanager
    def _writing(self, durable: bool = True) -> Iterator[sa.Connection]:
        relaxed = not durable and self.backend == "sqlite"
        try:
            with self._write_lock.held(), self.engine.connect() as conn:
                # On the DBAPI connection: through SQLAlchemy the PRAGMA would open the
                # transaction that begin() opens next.
                raw = conn.connection.driver_connection if relaxed else None
                if raw is not None:
                    raw.execute("PRAGMA synchronous=NORMAL")
                try:
                    with conn.begin():
                        yield conn
                finally:
                    if raw is not None:
                        raw.execute("PRAGMA synchronous=FULL")
        except sa.exc.SQLAlchemyError as error:
            raise StoreError(str(error.orig if hasattr(error, "orig") else error),
                             conflict=isinstance(error, sa.exc.IntegrityError)) from error

    @contextmanager
    def _reading(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as error:
            raise StoreError(str(error.orig if hasattr(error, "orig") else error)) from error

    def commit_incoming(self, batch: Sequence[IncomingMessage]) -> None:
        """Store *batch* (messages, recipient rows, events) in one durable transaction."""
        with self._writing() as conn:
            insert_incoming(conn, batch)

    def checkpoint(self) -> None:
        """Copy committed WAL pages into the SQLite database, without blocking writers.

        Runs beside the commits (a PASSIVE checkpoint takes no writer lock), so a commit
        never pays for a checkpoint. A no-op on PostgreSQL.
        """
        if self.backend != "sqlite":
            return
        with self._reading() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def list_queue(self, state: str | None = None, domain: str | None = None,
                   limit: int = 1000) -> list[QueueEntry]:
        """Messages with at least one recipient matching the filters, oldest first."""
        m, r = schema.messages, schema.recipients
        picked = sa.select(r.c.queue_id).distinct()
        if state:
            picked = picked.where(r.c.state == state)
        if domain:
            picked = picked.where(r.c.domain == domain.lower())
        query = (sa.select(m.c.queue_id, m.c.received_at, m.c.sender, m.c.size)
                 .where(m.c.queue_id.in_(picked))
                 .order_by(m.c.received_at, m.c.queue_id).limit(limit))
        with self._reading() as conn:
            heads = conn.execute(query).all()
            rcpts = self._recipients(conn, [h.queue_id for h in heads])
        return [QueueEntry(h.queue_id, h.received_at, h.sender, h.size,
                           rcpts.get(h.queue_id, ())) for h in heads]

    def show(self, queue_id: str) -> MessageDetail | None:
        """Envelope, recipients with states and the event log of one message."""
        m, e = schema.messages, schema.events
        columns = [c for c in m.c if c.name != "data"]
        with self._reading() as conn:
            head = conn.execute(sa.select(*columns).where(m.c.queue_id == queue_id)).first()
            if head is None:
                return None
            rcpts = self._recipients(conn, [queue_id]).get(queue_id, ())
            events = conn.execute(sa.select(e.c.at, e.c.node, e.c.kind, e.c.recipient, e.c.detail)
                                  .where(e.c.queue_id == queue_id).order_by(e.c.id)).all()
        entry = QueueEntry(head.queue_id, head.received_at, head.sender, head.size, rcpts)
        return MessageDetail(entry, head.client_ip, head.helo, head.tls, head.node,
                             head.body_type, head.smtputf8, head.ret, head.envid,
                             tuple(Event(*row) for row in events))

    def message_data(self, queue_id: str) -> bytes | None:
        """The stored bytes of one message, exactly as they will be relayed."""
        with self._reading() as conn:
            return conn.execute(sa.select(schema.messages.c.data)
                                .where(schema.messages.c.queue_id == queue_id)).scalar()

    def ping(self) -> None:
        """A trivial query: returns when the database answers, else :class:`StoreError`."""
        with self._reading() as conn:
            conn.execute(sa.select(sa.literal(1))).scalar_one()

    def count_messages(self) -> int:
        with self._reading() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(schema.messages)).scalar_one()

    def queue_ids(self) -> list[str]:
        """Every stored queue ID (for drills and consistency checks)."""
        with self._reading() as conn:
            return list(conn.execute(sa.select(schema.messages.c.queue_id)).scalars())

    @staticmethod
    def _recipients(conn: sa.Connection,
                    queue_ids: list[str]) -> dict[str, tuple[RecipientStatus, ...]]:
        if not queue_ids:
            return {}
        r = schema.recipients
        rows = conn.execute(sa.select(r.c.queue_id, r.c.address, r.c.state, r.c.attempts,
                                      r.c.next_attempt_at, r.c.last_reply, r.c.notify, r.c.orcpt)
                            .where(r.c.queue_id.in_(queue_ids)).order_by(r.c.id)).all()
        grouped: dict[str, list[RecipientStatus]] = {}
        for row in rows:
            grouped.setdefault(row.queue_id, []).append(RecipientStatus(*row[1:]))
        return {key: tuple(value) for key, value in grouped.items()}


# Bound parameters per statement, under SQLite's 32,766 and PostgreSQL's 65,535.
_MAX_PARAMS = 30_000


@functools.lru_cache(maxsize=512)
def _multi_row_insert(table: sa.Table, columns: tuple[str, ...], rows: int, paramstyle: str) -> str:
    mark = "?" if paramstyle == "qmark" else "%s"
    row = "(" + ", ".join([mark] * len(columns)) + ")"
    return (f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES "
            + ", ".join([row] * rows))


def insert_rows(conn: sa.Connection, table: sa.Table, rows: list[dict]) -> None:
    """Insert *rows* with multi-row VALUES statements, in as few steps as possible.

    The hot path of group commit: one statement per table instead of one database
    step per row, so the commit thread gives up and retakes the GIL a few times per
    batch rather than once per row (under load each retake waits for the event loop).
    The SQL text is built once per shape; every value is a bound parameter.
    """
    if not rows:
        return
    columns = tuple(rows[0])
    per_statement = max(1, _MAX_PARAMS // len(columns))
    for start in range(0, len(rows), per_statement):
        chunk = rows[start:start + per_statement]
        sql = _multi_row_insert(table, columns, len(chunk), conn.dialect.paramstyle)
        conn.exec_driver_sql(sql, tuple(row[c] for row in chunk for c in columns))


def insert_incoming(conn: sa.Connection, batch: Sequence[IncomingMessage]) -> None:
    """Insert messages with their recipient rows and events inside *conn*'s transaction."""
    now = time.time()
    message_rows, recipient_rows, event_rows = [], [], []
    for msg in batch:
        env = msg.envelope
        message_rows.append({
            "queue_id": msg.queue_id, "received_at": msg.received_at, "node": msg.node,
            "sender": env.sender, "client_ip": env.client.ip, "helo": env.client.helo,
            "tls": env.client.tls, "size": len(msg.data), "body_type": env.body_type,
            "smtputf8": env.smtputf8, "ret": env.ret.value if env.ret else None,
            "envid": env.envid, "data": msg.data, "subject": msg.subject,
            "message_id": msg.message_id, "origin": msg.origin,
        })
        for rcpt in env.recipients:
            recipient_rows.append({
                "queue_id": msg.queue_id, "address": rcpt.address, "domain": rcpt.domain,
                "orcpt": rcpt.orcpt,
                "notify": ",".join(sorted(rcpt.notify)) if rcpt.notify else None,
                "state": (RecipientState.QUARANTINED if msg.quarantined
                          else RecipientState.HELD if msg.held
                          else RecipientState.QUEUED).value, "attempts": 0,
                "next_attempt_at": msg.received_at, "last_reply": None,
                "queued_at": msg.received_at,
                "lease_owner": None, "lease_until": None, "updated_at": now,
            })
        for kind, detail in msg.events:
            event_rows.append({"queue_id": msg.queue_id, "at": msg.received_at,
                               "node": msg.node, "kind": kind, "recipient": None,
                               "detail": detail})
    insert_rows(conn, schema.messages, message_rows)
    insert_rows(conn, schema.recipients, recipient_rows)
    insert_rows(conn, schema.events, event_rows)


def open_store(url: str, auto_migrate: bool = True) -> Store:
    """Connect to *url*, bring its schema up to date, and return the store."""
    engine = create_engine(url)
    try:
        migrate(engine, auto=auto_migrate)
    except sa.exc.SQLAlchemyError as error:
        engine.dispose()
        raise StoreError(f"cannot open the store: {error.orig if hasattr(error, 'orig') else error}") from error
    except Exception:
        engine.dispose()
        raise
    return Store(engine, write_lock_for(url))
