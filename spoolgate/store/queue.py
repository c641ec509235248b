"""Queue state: claiming due recipients, recording attempts, route health, operator verbs.

Every function here changes per-recipient rows, routes or events in one
transaction, so a crash leaves either the old state or the new one. Workers
claim rows with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite has
one writer, so the same statement needs no row locks); a lease that expires
returns its rows to the queue. Failures surface as
:class:`~spoolgate.store.store.StoreError`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from spoolgate.mail.envelope import IncomingMessage
from spoolgate.mail.states import RecipientState as S
from spoolgate.store import schema
from spoolgate.store.store import Store, insert_incoming, insert_rows

PENDING = schema.PENDING  # due for an attempt: the partial index's states
# The partial index's own predicate, as literal SQL: a planner can use a partial index
# only when the query's condition matches it, which bound parameters never do.
_PENDING_LITERAL = sa.text("recipients.state IN ('queued', 'deferred')")
# SQLite's planner, without statistics, prefers the (state, next_attempt_at) index and a
# sort of every due row; name the partial index (SQLAlchemy does not render SQLite hints).
_SQLITE_DUE = sa.text(
    "SELECT id FROM recipients INDEXED BY recipients_pending "
    "WHERE recipients.state IN ('queued', 'deferred') AND next_attempt_at <= :now "
    "ORDER BY next_attempt_at, queued_at LIMIT :limit")
WAITING = (*PENDING, S.DELIVERING.value, S.HELD.value, S.QUARANTINED.value)
"""States in which a message still needs its bytes (not purgeable)."""


@dataclass(frozen=True, slots=True)
class ClaimedRecipient:
    """One recipient row leased for delivery, with what delivery needs of its message."""

    row_id: int
    queue_id: str
    address: str
    domain: str
    orcpt: str | None
    notify: str | None
    attempts: int
    queued_at: float
    delay_notified: bool
    sender: str
    ret: str | None
    envid: str | None
    body_type: str
    smtputf8: bool
    size: int
    data: bytes | None = None  # the message, when small enough to come with the claim
    route: str | None = None   # OUTBOUND: through the outbound route whatever the domain

    def __repr__(self) -> str:  # never dump message bytes into a log line
        return f"ClaimedRecipient({self.queue_id}, {self.address}, {self.attempts} attempts)"


INLINE_DATA_LIMIT = 256 * 1024
"""Messages up to this size come with their claim (one query for the batch); larger
ones are read one by one, so a batch never holds many large messages in memory."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one claimed row; ``attempted`` counts it as a delivery attempt."""

    row_id: int
    queue_id: str
    address: str
    state: S
    reply: str | None
    next_attempt_at: float
    attempted: bool = True
    remote_mta: str | None = None
    delay_notified: bool = False
    event: str | None = None        # event kind to log; None logs nothing (a postponement)
    detail: str = ""
    retention: float = 0.0          # seconds to keep the message once nothing is pending
    # A postponement while *route* is down: if the route is up again by the time this is
    # committed, the row is due at once in arrival order instead of at the next probe.
    route: str | None = None


OUTBOUND = "outbound"
"""A recipient row's route override: deliver through the outbound route (outage alerts)."""


@dataclass(frozen=True, slots=True)
class RouteStatus:
    name: str
    state: str                      # "up", "down", or "recovering" (mail flows, reported down)
    since: float
    failures: int
    last_error: str | None
    next_probe_at: float
    failing_since: float | None = None  # when the current run of failures began
    successes: int = 0              # consecutive, while recovering


@dataclass(frozen=True, slots=True)
class RouteChange:
    """A route went down or came up: recorded once, by the node whose transaction did it."""

    event_id: int
    route: str
    state: str                      # "down" or "up"
    at: float
    node: str
    since: float                    # down: when the failures began; up: when it went down
    last_error: str | None
    failures: int
    waiting: int                    # messages of the route's domains still waiting
    domains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteEvent:
    """One row of the route event log, for the console."""

    id: int
    at: float
    node: str
    route: str
    state: str
    detail: str


AlertMessages = Callable[[RouteChange], Sequence[IncomingMessage]]
"""Builds the messages queued with a route change, in its transaction (outbound route)."""


class Queue:
    """The queue operations of one :class:`Store`; the only writer of queue state."""

    def __init__(self, store: Store, node: str) -> None:
        self.store = store
        self.node = node

    # -- delivery workers -------------------------------------------------------------

    def claim_due(self, now: float, limit: int, lease: float) -> list[ClaimedRecipient]:
        """Lease up to *limit* due rows, earliest due first, for *lease* seconds."""
        r = schema.recipients
        with self.store.writing(durable=False) as conn:
            if conn.dialect.name == "sqlite":
                due = _SQLITE_DUE  # one writer: no row locks needed
            else:
                # Walk the partial index in order and stop at *limit*, whatever the
                # statistics say (stale ones after a burst make the planner sort every
                # due row instead).
                conn.exec_driver_sql("SET LOCAL enable_sort = off")
                conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
                due = (sa.select(r.c.id).where(_PENDING_LITERAL, r.c.next_attempt_at <= now)
                       .order_by(r.c.next_attempt_at, r.c.queued_at).limit(limit)
                       .with_for_update(skip_locked=True))
            ids = list(conn.execute(due, {"now": now, "limit": limit}).scalars())
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("RESET enable_sort")
                conn.exec_driver_sql("RESET enable_bitmapscan")
            if not ids:
                return []
            conn.execute(r.update().where(r.c.id.in_(ids)).values(
                state=S.DELIVERING.value, lease_owner=self.node, lease_until=now + lease,
                updated_at=now))
            rows = conn.execute(_claimed(ids).order_by(r.c.next_attempt_at, r.c.queued_at,
                                                       r.c.id)).all()
        return [ClaimedRecipient(*row) for row in rows]

    def release_leases(self, now: float, owner: str | None = None) -> int:
        """Return leased rows to the queue: expired ones, or all of *owner* (a restart)."""
        r = schema.recipients
        stale = r.c.lease_until < now if owner is None else r.c.lease_owner == owner
        with self.store.writing() as conn:
            result = conn.execute(r.update().where(r.c.state == S.DELIVERING.value, stale).values(
                state=sa.case((r.c.attempts == 0, S.QUEUED.value), else_=S.DEFERRED.value),
                next_attempt_at=now, lease_owner=None, lease_until=None, updated_at=now))
        return result.rowcount

    def record(self, outcomes: Sequence[Outcome], notices: Sequence[IncomingMessage] = (),
               now: float | None = None) -> None:
        """Apply *outcomes* of this node's leases and queue *notices* (DSNs), atomically."""
        now = time.time() if now is None else now
        params = [(o.state.value, int(o.attempted), o.route, o.next_attempt_at, o.reply,
                   int(o.attempted), now, o.remote_mta, o.delay_notified, now, o.row_id,
                   self.node) for o in outcomes]
        events = [{"queue_id": o.queue_id, "at": now, "node": self.node, "kind": o.event,
                   "recipient": o.address, "detail": o.detail} for o in outcomes if o.event]
        keep: dict[str, float] = {}
        for o in outcomes:
            if o.state not in (S.QUEUED, S.DEFERRED):
                keep[o.queue_id] = max(keep.get(o.queue_id, 0.0), o.retention)
        with self.store.writing() as conn:
            if params:
                # The hot statement of a drain, on the driver directly: SQLAlchemy's
                # per-row parameter processing cost more than the database's work.
                conn.exec_driver_sql(_record_sql(conn.dialect.paramstyle), params)
            if events:
                insert_rows(conn, schema.events, events)
            if notices:
                insert_incoming(conn, notices)
            by_retention: dict[float, list[str]] = {}
            for queue_id, retention in keep.items():
                by_retention.setdefault(retention, []).append(queue_id)
            for retention, queue_ids in by_retention.items():
                _mark_done_if_finished(conn, queue_ids, now + retention)

    # -- route health ------------------------------------------------------------------

    def routes(self) -> list[RouteStatus]:
        t = schema.routes
        with self.store.reading() as conn:
            rows = conn.execute(sa.select(*_route_columns()).order_by(t.c.name)).all()
        return [RouteStatus(*row) for row in rows]

    def route_failed(self, name: str, error: str, now: float, down_after: int,
                     probe_delay: float, *, down_seconds: float = 0.0,
                     domains: Iterable[str] = (),
                     alerts: AlertMessages | None = None) -> tuple[RouteStatus, RouteChange | None]:
        """Count a failed connection; the route goes down after *down_after* in a row that
        span *down_seconds*, and a recovering one goes back down at once (it was never
        reported up, so that is no change).

        Returns the new status and the change, if this call made one: then its route
        event and the messages of *alerts* are in the same transaction.
        """
        t = schema.routes
        with self.store.writing() as conn:
            row = _route_row(conn, name, now)
            failures = row.failures + 1
            failing_since = row.failing_since if row.failures and row.failing_since else now
            values = {"failures": failures, "last_error": error, "updated_at": now,
                      "failing_since": failing_since, "successes": 0}
            change = None
            if row.state == "recovering":
                values.update(state="down", next_probe_at=now + probe_delay)
            elif (row.state == "up" and failures >= down_after
                  and now - failing_since >= down_seconds):
                # Decided on the row itself, so two nodes can never both record it.
                if conn.execute(t.update().where(t.c.name == name, t.c.state == "up").values(
                        state="down", since=now, next_probe_at=now + probe_delay,
                        **values)).rowcount == 1:
                    change = self._record_change(conn, name, "down", now, failing_since, error,
                                                 failures, domains, alerts)
            if change is None:
                conn.execute(t.update().where(t.c.name == name).values(**values))
            status = _route_row(conn, name, now)
        return status, change

    def route_answered(self, name: str, now: float, domains: Iterable[str], up_after: int = 1,
                       alerts: AlertMessages | None = None
                       ) -> tuple[RouteStatus, RouteChange | None]:
        """The route took a transaction. A down one is open again at once (its queue due,
        oldest first) and reported up after *up_after* successes in a row ("recovering"
        until then). Returns the new status and the change, if this call made one."""
        t, r = schema.routes, schema.recipients
        domains = tuple(d.lower() for d in domains)
        with self.store.writing() as conn:
            row = _route_row(conn, name, now)
            if row.state == "up":
                if row.failures:
                    conn.execute(t.update().where(t.c.name == name).values(
                        failures=0, failing_since=None, successes=0, updated_at=now))
                    row = _route_row(conn, name, now)
                return row, None
            successes = row.successes + 1 if row.state == "recovering" else 1
            if row.state == "down" and domains:  # mail flows again: oldest first
                conn.execute(r.update().where(r.c.domain.in_(domains), r.c.state.in_(PENDING))
                             .values(next_attempt_at=r.c.queued_at, updated_at=now))
            change = None
            if successes >= up_after and conn.execute(
                    t.update().where(t.c.name == name, t.c.state == row.state).values(
                        state="up", since=now, failures=0, failing_since=None, successes=0,
                        next_probe_at=0.0, updated_at=now)).rowcount == 1:
                change = self._record_change(conn, name, "up", now, row.since, row.last_error,
                                             row.failures, domains, alerts)
            if change is None:
                conn.execute(t.update().where(t.c.name == name).values(
                    state="recovering", successes=successes, next_probe_at=0.0,
                    updated_at=now))
            status = _route_row(conn, name, now)
        return status, change

    def _record_change(self, conn: sa.Connection, name: str, state: str, now: float,
                       since: float, error: str | None, failures: int, domains: Iterable[str],
                       alerts: AlertMessages | None) -> RouteChange:
        """The route event of a change and the messages of *alerts*, in *conn*'s transaction."""
        r = schema.recipients
        names = tuple(domains)
        waiting = conn.execute(sa.select(sa.func.count(sa.distinct(r.c.queue_id))).where(
            r.c.domain.in_(names), r.c.state.in_(WAITING),
            r.c.route.is_(None))).scalar_one() if names else 0
        if state == "down":
            detail = (f"down after {failures} failed attempts since {_utc(since)}: "
                      f"{error or 'no reply'}; {waiting} messages waiting")
        else:
            detail = f"up again; down since {_utc(since)}; {waiting} messages waiting"
        event_id = conn.execute(schema.route_events.insert().values(
            at=now, node=self.node, route=name, state=state, detail=detail)
        ).inserted_primary_key[0]
        change = RouteChange(event_id, name, state, now, self.node, since, error, failures,
                             waiting, names)
        messages = list(alerts(change)) if alerts is not None else []
        if messages:
            insert_incoming(conn, messages)
            conn.execute(r.update().where(r.c.queue_id.in_([m.queue_id for m in messages]))
                         .values(route=OUTBOUND))
        return change

    def route_events(self, since: float = 0.0, limit: int = 100) -> list[RouteEvent]:
        """Route changes at or after *since*, newest first, at most *limit*."""
        e = schema.route_events
        with self.store.reading() as conn:
            rows = conn.execute(sa.select(e.c.id, e.c.at, e.c.node, e.c.route, e.c.state,
                                          e.c.detail).where(e.c.at >= since)
                                .order_by(e.c.id.desc()).limit(limit)).all()
        return [RouteEvent(*row) for row in rows]

    def claim_probe(self, name: str, now: float, next_probe_at: float) -> tuple[bool, float]:
        """Take the one probe of a down route for this node, if it is due and nobody has.

        Returns whether this node got it, and when the route's next probe is due.
        """
        t = schema.routes
        with self.store.writing() as conn:
            got = conn.execute(t.update().where(t.c.name == name, t.c.state == "down",
                                                t.c.next_probe_at <= now)
                               .values(next_probe_at=next_probe_at, updated_at=now)).rowcount
            due = conn.execute(sa.select(t.c.next_probe_at).where(t.c.name == name)).scalar()
        return got == 1, float(due or now)

    # -- operator verbs ----------------------------------------------------------------

    def flush(self, domain: str | None = None, queue_id: str | None = None,
              now: float | None = None) -> int:
        """Make pending rows due now, and let down routes probe now."""
        now = time.time() if now is None else now
        r = schema.recipients
        where = [r.c.state.in_(PENDING)] + _filters(domain, queue_id)
        with self.store.writing() as conn:
            count = conn.execute(r.update().where(*where).values(
                next_attempt_at=sa.func.min(r.c.next_attempt_at, now)
                if conn.dialect.name == "sqlite" else sa.func.least(r.c.next_attempt_at, now),
                updated_at=now)).rowcount
            conn.execute(schema.routes.update().where(schema.routes.c.state == "down")
                         .values(next_probe_at=now))
        return count

    def hold(self, domain: str | None = None, queue_id: str | None = None,
             detail: str = "by operator") -> int:
        """Put pending rows on hold: never delivered, never expiring, until released."""
        return self._move(PENDING, S.HELD, "held", domain, queue_id, detail=detail)

    def release(self, domain: str | None = None, queue_id: str | None = None,
                detail: str = "by operator") -> int:
        """Return held rows to the queue, due now."""
        return self._move((S.HELD.value,), S.DEFERRED, "released", domain, queue_id,
                          detail=detail)

    def release_quarantine(self, queue_id: str, detail: str,
                           addresses: Sequence[str] | None = None) -> int:
        """Let a quarantined message go: its rows are due for delivery now, one event each.

        With *addresses* (compared without case), only those recipients' rows: a user
        releases their own copy, the others stay in quarantine.
        """
        return self._move((S.QUARANTINED.value,), S.QUEUED, "released", None, queue_id,
                          detail=detail, addresses=addresses)

    def awaiting_rescan(self, limit: int = 100) -> list[tuple[str, float]]:
        """(queue ID, received at) of held messages intake marked ``rescan-needed`` and no
        rescan has settled yet, oldest first."""
        r, e, m = schema.recipients, schema.events, schema.messages
        marked = sa.exists().where(e.c.queue_id == r.c.queue_id, e.c.kind == "rescan-needed")
        settled = sa.exists().where(e.c.queue_id == r.c.queue_id, e.c.kind == "rescanned")
        with self.store.reading() as conn:
            rows = conn.execute(
                sa.select(r.c.queue_id, m.c.received_at).distinct()
                .join(m, m.c.queue_id == r.c.queue_id)
                .where(r.c.state == S.HELD.value, marked, ~settled)
                .order_by(m.c.received_at, r.c.queue_id).limit(limit)).all()
        return [(row.queue_id, row.received_at) for row in rows]

    def settle_rescan(self, queue_id: str, to: S, detail: str) -> int:
        """Move a message's held rows to the queue (due now) or to quarantine after its
        rescan, one ``rescanned`` event each; 0 if someone else moved them first."""
        if to not in (S.QUEUED, S.QUARANTINED):
            raise ValueError(f"a rescan settles to queued or quarantined, not {to.value}")
        return self._move((S.HELD.value,), to, "rescanned", None, queue_id, detail=detail)

    def note(self, queue_id: str, kind: str, detail: str, recipient: str | None = None,
             now: float | None = None) -> None:
        """Record an event about a message that moves no row (a user marked it as spam,
        a rescan refused a release), for message tracking."""
        with self.store.writing() as conn:
            conn.execute(schema.events.insert().values(
                queue_id=queue_id, at=time.time() if now is None else now, node=self.node,
                kind=kind, recipient=recipient, detail=detail))

    def expire_quarantine(self, cutoff: float, retention: float, batch: int = 500) -> int:
        """Delete quarantined rows that arrived before *cutoff* (their quarantine is over);
        the purge removes the message *retention* seconds later."""
        r = schema.recipients
        with self.store.reading() as conn:
            ids = list(conn.execute(
                sa.select(r.c.queue_id).where(r.c.state == S.QUARANTINED.value,
                                              r.c.next_attempt_at < cutoff)
                .limit(batch)).scalars())
        return sum(self._move((S.QUARANTINED.value,), S.DELETED, "expired", None, queue_id,
                              retention=retention, detail="quarantine retention over")
                   for queue_id in sorted(set(ids)))

    def delete(self, queue_id: str, retention: float = 0.0, domain: str | None = None,
               detail: str = "by operator") -> int:
        """Delete a message (its rows for *domain* only, if given): its waiting rows are
        never delivered; the purge removes it after *retention* seconds (so ``queue show``
        still explains it meanwhile)."""
        return self._move(WAITING, S.DELETED, "deleted", domain, queue_id,
                          skip=(S.DELIVERING.value,), retention=retention, detail=detail)

    def _move(self, from_states: Sequence[str], to: S, event: str, domain: str | None,
              queue_id: str | None, skip: Sequence[str] = (),
              retention: float | None = None, detail: str = "by operator",
              addresses: Sequence[str] | None = None) -> int:
        if domain is None and queue_id is None:
            raise ValueError("name a queue ID or a domain")
        now = time.time()
        r = schema.recipients
        states = [s for s in from_states if s not in skip]
        where = [r.c.state.in_(states)] + _filters(domain, queue_id)
        if addresses is not None:
            where.append(sa.func.lower(r.c.address).in_(sorted({a.lower() for a in addresses})))
        with self.store.writing() as conn:
            moved = conn.execute(sa.select(r.c.id, r.c.queue_id, r.c.address)
                                 .where(*where)).all()
            if not moved:
                return 0
            conn.execute(r.update().where(r.c.id.in_([row.id for row in moved])).values(
                state=to.value, updated_at=now,
                **({"next_attempt_at": now} if to in (S.DEFERRED, S.QUEUED) else {})))
            conn.execute(schema.events.insert(), [
                {"queue_id": row.queue_id, "at": now, "node": self.node, "kind": event,
                 "recipient": row.address, "detail": detail} for row in moved])
            if retention is not None:
                _mark_done_if_finished(conn, sorted({row.queue_id for row in moved}),
                                       now + retention)
        return len(moved)

    def pending_rows(self, queue_id: str) -> list[ClaimedRecipient]:
        """Lease every waiting row of one message to this node now (for bounce)."""
        r = schema.recipients
        now = time.time()
        with self.store.writing() as conn:
            ids = list(conn.execute(sa.select(r.c.id).where(
                r.c.queue_id == queue_id, r.c.state.in_((*PENDING, S.HELD.value)))).scalars())
            if not ids:
                return []
            conn.execute(r.update().where(r.c.id.in_(ids)).values(
                state=S.DELIVERING.value, lease_owner=self.node, lease_until=now + 60,
                updated_at=now))
            rows = conn.execute(_claimed(ids)).all()
        return [ClaimedRecipient(*row) for row in rows]

    def last_replies(self, queue_id: str) -> dict[str, tuple[str | None, str | None, float | None]]:
        """address -> (last reply, remote MTA, last attempt time), for DSNs."""
        r = schema.recipients
        with self.store.reading() as conn:
            rows = conn.execute(sa.select(r.c.address, r.c.last_reply, r.c.remote_mta,
                                          r.c.last_attempt_at)
                                .where(r.c.queue_id == queue_id)).all()
        return {row.address: (row.last_reply, row.remote_mta, row.last_attempt_at)
                for row in rows}

    def summary(self, now: float | None = None) -> list[tuple[str, str, list[int]]]:
        """Waiting recipients per domain and state by age bucket (like Postfix's qshape)."""
        now = time.time() if now is None else now
        r = schema.recipients
        with self.store.reading() as conn:
            rows = conn.execute(sa.select(r.c.domain, r.c.state, r.c.queued_at)
                                .where(r.c.state.in_(WAITING))).all()
        table: dict[tuple[str, str], list[int]] = {}
        for row in rows:
            counts = table.setdefault((row.domain, row.state), [0] * len(AGE_BUCKETS))
            age = (now - (row.queued_at or now)) / 60
            counts[next(i for i, limit in enumerate(AGE_BUCKETS) if age < limit)] += 1
        return [(domain, state, counts) for (domain, state), counts in sorted(table.items())]

    def purge(self, now: float, batch: int = 500) -> int:
        """Remove up to *batch* messages whose retention is over; returns how many."""
        m, r, e = schema.messages, schema.recipients, schema.events
        with self.store.writing() as conn:
            ids = list(conn.execute(sa.select(m.c.queue_id).where(m.c.purge_after <= now)
                                    .order_by(m.c.purge_after).limit(batch)).scalars())
            if ids:
                conn.execute(e.delete().where(e.c.queue_id.in_(ids)))
                conn.execute(r.delete().where(r.c.queue_id.in_(ids)))
                conn.execute(m.delete().where(m.c.queue_id.in_(ids)))
        return len(ids)


def _claimed(ids: Sequence[int]) -> sa.Select:
    """The rows *ids* with what delivery needs of their message, as :class:`ClaimedRecipient`
    takes them (small messages' bytes included)."""
    r, m = schema.recipients, schema.messages
    return (sa.select(r.c.id, r.c.queue_id, r.c.address, r.c.domain, r.c.orcpt, r.c.notify,
                      r.c.attempts, r.c.queued_at, r.c.delay_notified, m.c.sender, m.c.ret,
                      m.c.envid, m.c.body_type, m.c.smtputf8, m.c.size,
                      sa.case((m.c.size <= INLINE_DATA_LIMIT, m.c.data), else_=sa.null()),
                      r.c.route)
            .join(m, m.c.queue_id == r.c.queue_id).where(r.c.id.in_(ids)))


@functools.lru_cache(maxsize=2)
def _record_sql(paramstyle: str) -> str:
    """The outcome UPDATE of :meth:`Queue.record` for the driver's parameter style.

    A postponement (``route`` given) whose route is up again by commit time is due at
    once, in arrival order, instead of at the next probe.
    """
    sql = (
        "UPDATE recipients SET state = ?, attempts = attempts + ?, "
        "next_attempt_at = CASE WHEN EXISTS (SELECT 1 FROM routes WHERE routes.name = ? "
        "AND routes.state <> 'down') THEN queued_at ELSE ? END, "
        "last_reply = ?, "
        "last_attempt_at = CASE WHEN ? > 0 THEN ? ELSE last_attempt_at END, "
        "remote_mta = COALESCE(?, remote_mta), delay_notified = ?, "
        "lease_owner = NULL, lease_until = NULL, updated_at = ? "
        "WHERE id = ? AND state = 'delivering' AND lease_owner = ?")
    return sql if paramstyle == "qmark" else sql.replace("?", "%s")


AGE_BUCKETS = (5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, float("inf"))
"""Upper bounds in minutes of ``summary``'s age columns, as in Postfix's qshape."""


def _filters(domain: str | None, queue_id: str | None) -> list[sa.ColumnElement[bool]]:
    r = schema.recipients
    where = []
    if domain is not None:
        where.append(r.c.domain == domain.lower())
    if queue_id is not None:
        where.append(r.c.queue_id == queue_id)
    return where


def _route_columns() -> tuple[sa.Column, ...]:
    t = schema.routes
    return (t.c.name, t.c.state, t.c.since, t.c.failures, t.c.last_error, t.c.next_probe_at,
            t.c.failing_since, t.c.successes)


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _route_row(conn: sa.Connection, name: str, now: float) -> RouteStatus:
    """The route's row, locked for this transaction (created \"up\" on first use)."""
    t = schema.routes
    query = sa.select(*_route_columns()).where(t.c.name == name).with_for_update()
    row = conn.execute(query).first()
    if row is None:
        dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        conn.execute(dialect_insert(t).values(
            name=name, state="up", since=now, failures=0, last_error=None, next_probe_at=0.0,
            updated_at=now).on_conflict_do_nothing())
        row = conn.execute(query).first()
    return RouteStatus(*row)


def _mark_done_if_finished(conn: sa.Connection, queue_ids: Sequence[str],
                           purge_after: float) -> None:
    """Start the retention clock of those *queue_ids* with no recipient waiting any more."""
    r, m = schema.recipients, schema.messages
    waiting = sa.exists().where(r.c.queue_id == m.c.queue_id, r.c.state.in_(WAITING))
    conn.execute(m.update().where(m.c.queue_id.in_(queue_ids), ~waiting)
                 .values(purge_after=purge_after))
