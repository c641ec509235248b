"""What the admin console reads: the queue by filter, message tracking, traffic and verdicts.

Read-only queries over ``messages``, ``recipients``, ``events`` and ``rejections``; every
change goes through :class:`~spoolgate.store.queue.Queue`. Every query takes a *scope*:
the recipient domains the reader may see (``None``: all, for an admin). A message is in
scope when one of its recipients is, and only those recipient rows are shown, so a
domain admin never learns another domain's addresses or states from a shared message.
Figures come from the same rows the gateway works on, so they cannot drift from them.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from spoolgate.store import schema
from spoolgate.store.store import Event, Store

Scope = frozenset[str] | None
VERDICTS = ("pass", "tag", "quarantine", "reject", "tempfail")
_LIKE_ESCAPE = "\\"


@dataclass(frozen=True, slots=True)
class QueueFilter:
    """The queue screen's filters; text filters match case-insensitively anywhere."""

    states: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()          # recipient domains (a route names its domains)
    sender: str = ""
    recipient: str = ""
    older_than: float | None = None        # seconds since arrival
    newer_than: float | None = None


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One recipient row with what the queue screen shows of its message."""

    queue_id: str
    received_at: float
    sender: str
    size: int
    subject: str
    address: str
    domain: str
    state: str
    attempts: int
    next_attempt_at: float
    last_reply: str | None


@dataclass(frozen=True, slots=True)
class TrackingQuery:
    sender: str = ""
    recipient: str = ""
    subject: str = ""
    message_id: str = ""
    queue_id: str = ""
    client_ip: str = ""
    since: float | None = None
    until: float | None = None

    @property
    def empty(self) -> bool:
        return not any((self.sender, self.recipient, self.subject, self.message_id,
                        self.queue_id, self.client_ip, self.since, self.until))


@dataclass(frozen=True, slots=True)
class Tracked:
    """One answer of message tracking: a stored message, or a refusal in the SMTP session."""

    at: float
    queue_id: str | None              # None: refused in-session, never stored
    sender: str
    recipients: tuple[tuple[str, str], ...]   # (address, state) in scope; a refusal: "rejected"
    subject: str
    message_id: str
    client_ip: str
    outcome: str                      # the last word: the reply, or the states
    reason: str = ""                  # a refusal's reason (relay, unknown-user, spam, …)


@dataclass(frozen=True, slots=True)
class TrafficPoint:
    start: float
    accepted: int
    delivered: int
    rejected: int


class Console:
    """The console's queries over one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def queue(self, where: QueueFilter, scope: Scope, limit: int = 100, offset: int = 0,
              now: float | None = None) -> list[QueueRow]:
        """Recipient rows matching *where*, oldest message first."""
        m, r = schema.messages, schema.recipients
        query = (sa.select(m.c.queue_id, m.c.received_at, m.c.sender, m.c.size, m.c.subject,
                           r.c.address, r.c.domain, r.c.state, r.c.attempts,
                           r.c.next_attempt_at, r.c.last_reply)
                 .join(r, r.c.queue_id == m.c.queue_id)
                 .where(*_queue_conditions(where, scope, time.time() if now is None else now))
                 .order_by(m.c.received_at, m.c.queue_id, r.c.id).limit(limit).offset(offset))
        with self.store.reading() as conn:
            return [QueueRow(**row._mapping) for row in conn.execute(query)]

    def count(self, where: QueueFilter, scope: Scope, now: float | None = None) -> int:
        r, m = schema.recipients, schema.messages
        query = (sa.select(sa.func.count()).select_from(m.join(r, r.c.queue_id == m.c.queue_id))
                 .where(*_queue_conditions(where, scope, time.time() if now is None else now)))
        with self.store.reading() as conn:
            return conn.execute(query).scalar_one()

    def verdicts_of(self, queue_ids: Collection[str]) -> dict[str, str]:
        """Why each message was quarantined, from its last scan: "virus X", or the score
        and the rules that made it ("score 12: SPAM_WORDS(12), HTML_ONLY(1)")."""
        e = schema.events
        if not queue_ids:
            return {}
        with self.store.reading() as conn:
            rows = conn.execute(sa.select(e.c.queue_id, e.c.detail)
                                .where(e.c.queue_id.in_(sorted(set(queue_ids))),
                                       e.c.kind == "scanned").order_by(e.c.id)).all()
        return {queue_id: _verdict_words(detail) for queue_id, detail in rows}

    def in_scope(self, queue_id: str, scope: Scope) -> bool:
        """Whether the message exists and one of its recipients is in *scope*."""
        r = schema.recipients
        query = sa.select(r.c.id).where(r.c.queue_id == queue_id).limit(1)
        if scope is not None:
            query = query.where(r.c.domain.in_(sorted(scope)))
        with self.store.reading() as conn:
            return conn.execute(query).first() is not None

    def events(self, queue_id: str, scope: Scope) -> list[Event]:
        """The message's event log; recipient events of other domains are left out."""
        e = schema.events
        with self.store.reading() as conn:
            rows = conn.execute(sa.select(e.c.at, e.c.node, e.c.kind, e.c.recipient, e.c.detail)
                                .where(e.c.queue_id == queue_id).order_by(e.c.id)).all()
        return [Event(*row) for row in rows
                if scope is None or row.recipient is None or _domain(row.recipient) in scope]

    def track(self, query: TrackingQuery, scope: Scope, limit: int = 200) -> list[Tracked]:
        """Stored messages and in-session refusals matching *query*, newest first."""
        with self.store.reading() as conn:
            found = _tracked_messages(conn, query, scope, limit)
            if not query.queue_id:
                found += _tracked_rejections(conn, query, scope, limit)
        return sorted(found, key=lambda t: t.at, reverse=True)[:limit]

    def traffic(self, since: float, until: float, bucket: float, scope: Scope) -> list[TrafficPoint]:
        """Messages accepted, delivered and refused per *bucket* seconds in [since, until)."""
        e, r, x = schema.events, schema.recipients, schema.rejections
        points: dict[int, list[int]] = {}
        with self.store.reading() as conn:
            slot = _slot(conn, e.c.at, since, bucket)
            kinds = (sa.select(slot, e.c.kind, sa.func.count(sa.distinct(e.c.queue_id)))
                     .where(e.c.at >= since, e.c.at < until,
                            e.c.kind.in_(("accepted", "delivered")))
                     .group_by(slot, e.c.kind))
            if scope is not None:
                kinds = kinds.where(e.c.queue_id.in_(
                    sa.select(r.c.queue_id).where(r.c.domain.in_(sorted(scope)))))
            for index, kind, count in conn.execute(kinds):
                points.setdefault(int(index), [0, 0, 0])[0 if kind == "accepted" else 1] = count
            rslot = _slot(conn, x.c.at, since, bucket)
            refused = (sa.select(rslot, sa.func.count()).where(x.c.at >= since, x.c.at < until)
                       .group_by(rslot))
            if scope is not None:
                refused = refused.where(x.c.domain.in_(sorted(scope)))
            for index, count in conn.execute(refused):
                points.setdefault(int(index), [0, 0, 0])[2] = count
        slots = max(1, int((until - since + bucket - 1) // bucket))
        return [TrafficPoint(since + i * bucket, *points.get(i, [0, 0, 0])) for i in range(slots)]

    def verdicts(self, since: float, scope: Scope) -> dict[str, int]:
        """Since *since*: scan verdicts by action, viruses, in-session refusals, and the
        recipient rows delivered, deferred, quarantined and failed."""
        e, r, x = schema.events, schema.recipients, schema.rejections
        mix = dict.fromkeys(("delivered", "deferred", "quarantined", "failed", "rejected",
                             "spam", "virus"), 0)
        with self.store.reading() as conn:
            scanned = sa.select(e.c.detail).where(e.c.at >= since, e.c.kind == "scanned")
            states = (sa.select(r.c.state, sa.func.count()).where(r.c.updated_at >= since)
                      .group_by(r.c.state))
            refused = sa.select(x.c.reason, sa.func.count()).where(x.c.at >= since) \
                .group_by(x.c.reason)
            if scope is not None:
                domains = sorted(scope)
                scanned = scanned.where(e.c.queue_id.in_(
                    sa.select(r.c.queue_id).where(r.c.domain.in_(domains))))
                states = states.where(r.c.domain.in_(domains))
                refused = refused.where(x.c.domain.in_(domains))
            for (detail,) in conn.execute(scanned):
                fields = dict(word.partition("=")[::2] for word in detail.split())
                if fields.get("viruses", "-") != "-":
                    mix["virus"] += 1
                elif fields.get("action") in ("tag", "quarantine"):
                    mix["spam"] += 1
            for state, count in conn.execute(states):
                if state in mix:
                    mix[state] = count
            for reason, count in conn.execute(refused):
                mix["rejected"] += count
                if reason in ("spam", "virus"):
                    mix[reason] += count
        return mix

    def depth(self, scope: Scope, now: float | None = None) -> list[tuple[str, str, int, float]]:
        """Waiting recipients per (domain, state): how many and the oldest's age in seconds."""
        now = time.time() if now is None else now
        r = schema.recipients
        waiting = ("queued", "deferred", "delivering", "held", "quarantined")
        query = (sa.select(r.c.domain, r.c.state, sa.func.count(), sa.func.min(r.c.queued_at))
                 .where(r.c.state.in_(waiting)).group_by(r.c.domain, r.c.state)
                 .order_by(r.c.domain, r.c.state))
        if scope is not None:
            query = query.where(r.c.domain.in_(sorted(scope)))
        with self.store.reading() as conn:
            return [(domain, state, count, max(0.0, now - (oldest or now)))
                    for domain, state, count, oldest in conn.execute(query)]


def _queue_conditions(where: QueueFilter, scope: Scope, now: float) -> list:
    m, r = schema.messages, schema.recipients
    conditions: list = []
    if scope is not None:
        conditions.append(r.c.domain.in_(sorted(scope)))
    if where.states:
        conditions.append(r.c.state.in_(where.states))
    if where.domains:
        conditions.append(r.c.domain.in_([d.lower() for d in where.domains]))
    if where.sender:
        conditions.append(_contains(m.c.sender, where.sender))
    if where.recipient:
        conditions.append(_contains(r.c.address, where.recipient))
    if where.older_than is not None:
        conditions.append(m.c.received_at <= now - where.older_than)
    if where.newer_than is not None:
        conditions.append(m.c.received_at >= now - where.newer_than)
    return conditions


def _contains(column: sa.ColumnElement, text: str) -> sa.ColumnElement[bool]:
    escaped = (text.lower().replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2)
               .replace("%", _LIKE_ESCAPE + "%").replace("_", _LIKE_ESCAPE + "_"))
    return sa.func.lower(column).like(f"%{escaped}%", escape=_LIKE_ESCAPE)


def _slot(conn: sa.Connection, at: sa.ColumnElement, since: float, bucket: float):
    offset = (at - since) / bucket
    if conn.dialect.name == "postgresql":
        return sa.func.floor(offset).label("slot")
    return sa.cast(offset, sa.Integer).label("slot")  # at >= since: truncation is floor


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _tracked_messages(conn: sa.Connection, query: TrackingQuery, scope: Scope,
                      limit: int) -> list[Tracked]:
    m, r = schema.messages, schema.recipients
    conditions = _time_conditions(m.c.received_at, query)
    if query.queue_id:
        conditions.append(m.c.queue_id == query.queue_id.strip().upper())
    for column, text in ((m.c.sender, query.sender), (m.c.subject, query.subject),
                         (m.c.message_id, query.message_id)):
        if text:
            conditions.append(_contains(column, text))
    if query.client_ip:
        conditions.append(m.c.client_ip == query.client_ip.strip())
    rows_wanted = sa.true()
    if query.recipient:
        rows_wanted = _contains(r.c.address, query.recipient)
    if scope is not None:
        rows_wanted = sa.and_(rows_wanted, r.c.domain.in_(sorted(scope)))
    if query.recipient or scope is not None:
        conditions.append(m.c.queue_id.in_(sa.select(r.c.queue_id).where(rows_wanted)))
    heads = conn.execute(
        sa.select(m.c.queue_id, m.c.received_at, m.c.sender, m.c.subject, m.c.message_id,
                  m.c.client_ip)
        .where(*conditions).order_by(m.c.received_at.desc()).limit(limit)).all()
    if not heads:
        return []
    picked = sa.select(r.c.queue_id, r.c.address, r.c.state, r.c.last_reply).where(
        r.c.queue_id.in_([h.queue_id for h in heads])).order_by(r.c.id)
    if scope is not None:
        picked = picked.where(r.c.domain.in_(sorted(scope)))
    rows: dict[str, list] = {}
    for row in conn.execute(picked):
        rows.setdefault(row.queue_id, []).append(row)
    return [Tracked(h.received_at, h.queue_id, h.sender,
                    tuple((x.address, x.state) for x in rows.get(h.queue_id, ())),
                    h.subject, h.message_id, h.client_ip,
                    _outcome(rows.get(h.queue_id, ())))
            for h in heads]


def _tracked_rejections(conn: sa.Connection, query: TrackingQuery, scope: Scope,
                        limit: int) -> list[Tracked]:
    x = schema.rejections
    conditions = _time_conditions(x.c.at, query)
    for column, text in ((x.c.sender, query.sender), (x.c.recipient, query.recipient),
                         (x.c.subject, query.subject), (x.c.message_id, query.message_id)):
        if text:
            conditions.append(_contains(column, text))
    if query.client_ip:
        conditions.append(x.c.client_ip == query.client_ip.strip())
    if scope is not None:
        conditions.append(x.c.domain.in_(sorted(scope)))
    rows = conn.execute(sa.select(x).where(*conditions).order_by(x.c.at.desc()).limit(limit))
    return [Tracked(row.at, None, row.sender, ((row.recipient, "rejected"),) if row.recipient
                    else (), row.subject, row.message_id, row.client_ip, row.reply, row.reason)
            for row in rows]


def _verdict_words(detail: str) -> str:
    fields = dict(word.partition("=")[::2] for word in detail.split() if "=" in word)
    if fields.get("viruses", "-") not in ("", "-"):
        return f"virus {fields['viruses']}"
    symbols = fields.get("symbols", "-")
    words = f"score {fields.get('score', '?')}"
    return words if symbols in ("", "-") else f"{words}: {symbols.replace(',', ', ')}"


def _time_conditions(column: sa.ColumnElement, query: TrackingQuery) -> list:
    conditions = []
    if query.since is not None:
        conditions.append(column >= query.since)
    if query.until is not None:
        conditions.append(column < query.until)
    return conditions


def _outcome(rows: Iterable) -> str:
    states: dict[str, int] = {}
    for row in rows:
        states[row.state] = states.get(row.state, 0) + 1
    return ", ".join(f"{count} {state}" for state, count in states.items())


def scope_of(role: str, domains: Collection[str]) -> Scope:
    """The domains a console user may see: all for an admin, theirs for a domain admin,
    none for anyone else (an empty scope, which matches nothing)."""
    if role == "admin":
        return None
    if role == "domain-admin":
        return frozenset(d.lower() for d in domains)
    return frozenset()
