"""The audit log: who did what to what, when and from where.

Owns ``audit_log``. The console and the CLI record every action that changes something
(a release, a delete, a user added, a role changed) here, in the same store the action
touched, so several nodes share one log. Entries are only ever added; the log is read
newest first, optionally for one actor or target.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from spoolgate.store import schema
from spoolgate.store.store import Store

DETAIL_LIMIT = 2000  # characters: an entry says what happened, it is not a data dump


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: float
    actor: str       # an address, or "cli:<os user>"
    client_ip: str   # "" from the CLI
    action: str      # e.g. "queue.release", "user.add"
    target: str      # a queue ID, an address, a route
    detail: str


class AuditLog:
    """The audit log of one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, at: float, actor: str, client_ip: str, action: str, target: str,
               detail: str = "") -> None:
        a = schema.audit_log
        with self.store.writing() as conn:
            conn.execute(a.insert().values(at=at, actor=actor, client_ip=client_ip,
                                           action=action, target=target,
                                           detail=detail[:DETAIL_LIMIT]))

    def recent(self, limit: int = 100, *, actor: str | None = None,
               target: str | None = None, before_id: int | None = None) -> list[AuditEntry]:
        """Newest first; *before_id* pages on from the last entry of the previous page."""
        a = schema.audit_log
        query = sa.select(*a.c).order_by(a.c.id.desc()).limit(limit)
        if actor is not None:
            query = query.where(a.c.actor == actor)
        if target is not None:
            query = query.where(a.c.target == target)
        if before_id is not None:
            query = query.where(a.c.id < before_id)
        with self.store.reading() as conn:
            return [AuditEntry(**row._mapping) for row in conn.execute(query)]
