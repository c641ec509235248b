"""The quarantine digest's state: who gets one, who sends it, its key and used links.

Owns ``digest_tokens``, the digest columns of ``users`` (``digest``, ``digest_sent_at``)
as far as sending goes, and the ``digest_secret`` row of ``schema_meta``. Which node sends
a user's digest is decided by one conditional UPDATE of ``digest_sent_at`` (compare and
set), so several nodes or a restart never send the same digest twice. The link key is made
once, on first use, by whichever node gets there first. A used link is recorded by its
SHA-256, in one INSERT that only one request can win. Failures surface as
:class:`~spoolgate.store.store.StoreError`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from spoolgate.store import schema
from spoolgate.store.store import Store

SECRET_KEY = "digest_secret"


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A user who opted in, and when their last digest went out (None: never)."""

    email: str
    sent_at: float | None


class DigestStore:
    """Digest bookkeeping over one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _insert(self):
        return postgresql.insert if self.store.backend == "postgresql" else sqlite.insert

    def secret(self) -> bytes:
        """The key that signs digest links (32 random bytes, made on first use)."""
        m = schema.schema_meta
        query = sa.select(m.c.value).where(m.c.key == SECRET_KEY)
        with self.store.reading() as conn:
            value = conn.execute(query).scalar()
        if value is None:
            with self.store.writing() as conn:
                conn.execute(self._insert()(m).values(
                    key=SECRET_KEY, value=secrets.token_hex(32)).on_conflict_do_nothing())
                value = conn.execute(query).scalar_one()
        return bytes.fromhex(value)

    def subscribers(self) -> list[Subscriber]:
        """Enabled users who want the digest."""
        u = schema.users
        query = (sa.select(u.c.email, u.c.digest_sent_at)
                 .where(u.c.digest == sa.true(), u.c.disabled == sa.false())
                 .order_by(u.c.email))
        with self.store.reading() as conn:
            return [Subscriber(row.email, row.digest_sent_at) for row in conn.execute(query)]

    def claim(self, email: str, previous: float | None, now: float) -> bool:
        """Take the user's digest for this node: set ``digest_sent_at`` to *now* only if it
        is still *previous*. False: another node (or run) took it first."""
        u = schema.users
        same = (u.c.digest_sent_at.is_(None) if previous is None
                else u.c.digest_sent_at == previous)
        with self.store.writing() as conn:
            return conn.execute(u.update().where(u.c.email == email.lower(), same)
                                .values(digest_sent_at=now)).rowcount == 1

    def unclaim(self, email: str, claimed: float, previous: float | None) -> None:
        """Undo :meth:`claim` after the digest could not be queued (it is due again)."""
        u = schema.users
        with self.store.writing() as conn:
            conn.execute(u.update().where(u.c.email == email.lower(),
                                          u.c.digest_sent_at == claimed)
                         .values(digest_sent_at=previous))

    def use_token(self, token_hash: str, expires_at: float, now: float) -> bool:
        """Record a link as used; False when it was used before. Expired records go."""
        t = schema.digest_tokens
        with self.store.writing() as conn:
            conn.execute(t.delete().where(t.c.expires_at < now))
            return conn.execute(self._insert()(t).values(
                token_hash=token_hash, used_at=now, expires_at=expires_at)
                .on_conflict_do_nothing().returning(t.c.token_hash)).first() is not None

    def token_used(self, token_hash: str) -> bool:
        t = schema.digest_tokens
        with self.store.reading() as conn:
            return conn.execute(sa.select(t.c.token_hash)
                                .where(t.c.token_hash == token_hash)).first() is not None

    def forget_token(self, token_hash: str) -> None:
        """Make a link usable again (its action failed for a passing reason)."""
        t = schema.digest_tokens
        with self.store.writing() as conn:
            conn.execute(t.delete().where(t.c.token_hash == token_hash))
