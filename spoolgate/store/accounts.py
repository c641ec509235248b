"""Webmail accounts: users, sign-in sessions and the sign-in throttle counters.

Owns the ``users``, ``web_sessions`` and ``login_throttle`` tables. Every operation is
one transaction under the store's write lock (reads need none), synchronous and
thread-safe like the rest of the store, so several nodes on one PostgreSQL store share
users, sessions and throttling. Session rows are keyed by the SHA-256 of the cookie
token: the store never holds a token that would let its reader sign in. A TOTP time step
is accepted in one conditional UPDATE, so a code is good once across nodes. Database
failures surface as :class:`~spoolgate.store.store.StoreError`; adding a user who
exists raises :class:`AccountExists`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from spoolgate.store import schema
from spoolgate.store.store import Store, StoreError

ROLES = ("admin", "domain-admin", "user")  # the console's: everything, some domains, none


class AccountExists(Exception):
    """A user with that address is already there."""


@dataclass(frozen=True, slots=True)
class User:
    email: str
    password_hash: str
    totp_secret: str | None
    disabled: bool
    created_at: float
    password_changed_at: float
    role: str = "user"                  # admin | domain-admin | user
    domains: tuple[str, ...] = ()       # a domain-admin's domains
    totp_last_step: int | None = None   # the last TOTP time step accepted (no replays)
    imap_verified_at: float | None = None  # when the hash was last proved by IMAP
    digest: bool = False                # wants the daily quarantine digest
    digest_sent_at: float | None = None  # when the last digest was sent (or checked)

    def __repr__(self) -> str:  # never put a hash or secret in a log line
        return f"User({self.email}, role={self.role}, disabled={self.disabled})"


@dataclass(frozen=True, slots=True)
class WebSession:
    id: str                # sha256 hex of the cookie token
    email: str
    csrf_token: str
    created_at: float
    last_seen_at: float
    client_ip: str
    pending: str | None = None  # "totp": the password was right, the second factor is due

    def __repr__(self) -> str:
        return f"WebSession({self.email}, created_at={self.created_at})"


@dataclass(frozen=True, slots=True)
class Throttle:
    key: str
    failures: int
    last_failure_at: float
    locked_until: float | None


@dataclass(frozen=True, slots=True)
class ThrottleRule:
    """When failures stop counting (``forget_after`` seconds without one), and after how
    many a key is locked for ``lock_for`` seconds."""

    lock_after: int
    lock_for: float
    forget_after: float


class Accounts:
    """Users, sessions and throttle counters of one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- users -------------------------------------------------------------------------

    def add_user(self, email: str, password_hash: str, now: float, role: str = "user",
                 domains: Sequence[str] = ()) -> User:
        u = schema.users
        user = User(email.lower(), password_hash, None, False, now, now, role,
                    tuple(d.lower() for d in domains))
        with self.store.writing() as conn:
            if conn.execute(sa.select(u.c.email).where(u.c.email == user.email)).first():
                raise AccountExists(user.email)
            conn.execute(u.insert().values(
                email=user.email, password_hash=password_hash, totp_secret=None,
                disabled=False, created_at=now, password_changed_at=now, role=role,
                domains="\n".join(user.domains)))
        return user

    def get_user(self, email: str) -> User | None:
        u = schema.users
        with self.store.reading() as conn:
            row = conn.execute(sa.select(*u.c).where(u.c.email == email.lower())).first()
        return None if row is None else _user(row)

    def list_users(self) -> list[User]:
        u = schema.users
        with self.store.reading() as conn:
            return [_user(row) for row in conn.execute(sa.select(*u.c).order_by(u.c.email))]

    def set_password(self, email: str, password_hash: str, now: float) -> bool:
        """Replace the hash; every session of the user ends with it. False: no such user."""
        return self._update(email, end_sessions=True, password_hash=password_hash,
                            password_changed_at=now)

    def rehash(self, email: str, old_hash: str, new_hash: str) -> None:
        """Store a stronger hash of the same password, unless it changed meanwhile."""
        u = schema.users
        with self.store.writing() as conn:
            conn.execute(u.update().where(u.c.email == email.lower(),
                                          u.c.password_hash == old_hash)
                         .values(password_hash=new_hash))

    def set_role(self, email: str, role: str, domains: Sequence[str] = ()) -> bool:
        """Give the user *role* (one of :data:`ROLES`), with a domain admin's *domains*.
        Takes effect on the user's next request. False: no such user."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        return self._update(email, role=role, domains="\n".join(d.lower() for d in domains))

    def set_disabled(self, email: str, disabled: bool) -> bool:
        """Disable (every session ends) or enable a user. False: no such user."""
        return self._update(email, end_sessions=disabled, disabled=disabled)

    def set_digest(self, email: str, wanted: bool) -> bool:
        """Opt the user in to (or out of) the daily quarantine digest. False: no such user."""
        return self._update(email, digest=wanted)

    def set_totp(self, email: str, secret: str | None) -> bool:
        """Set (or with None remove) the TOTP secret; the step counter restarts and every
        session of the user ends. False: no such user."""
        return self._update(email, end_sessions=True, totp_secret=secret, totp_last_step=None)

    def _update(self, email: str, *, end_sessions: bool = False, **values: object) -> bool:
        """Set *values* on the user's row, with *end_sessions* deleting every session of
        the user in the same transaction. False: no such user."""
        u, s = schema.users, schema.web_sessions
        with self.store.writing() as conn:
            changed = conn.execute(u.update().where(u.c.email == email.lower())
                                   .values(**values)).rowcount
            if end_sessions:
                conn.execute(s.delete().where(s.c.email == email.lower()))
        return changed == 1

    def accept_totp_step(self, email: str, step: int) -> bool:
        """Record *step* as used, only if it is later than every step used before: a code
        is good once, even when two nodes check it at the same moment."""
        u = schema.users
        with self.store.writing() as conn:
            return conn.execute(u.update().where(
                u.c.email == email.lower(), u.c.totp_secret.is_not(None),
                sa.or_(u.c.totp_last_step.is_(None), u.c.totp_last_step < step),
            ).values(totp_last_step=step)).rowcount == 1

    def store_verifier(self, email: str, password_hash: str, now: float,
                       changed: bool) -> bool:
        """Keep *password_hash* of a password the domain's IMAP server just accepted. When
        the password *changed*, the user's sessions end as with :meth:`set_password`.
        False: no such user."""
        u, s = schema.users, schema.web_sessions
        values: dict[str, object] = {"password_hash": password_hash, "imap_verified_at": now}
        if changed:
            values["password_changed_at"] = now
        with self.store.writing() as conn:
            count = conn.execute(u.update().where(u.c.email == email.lower())
                                 .values(**values)).rowcount
            if changed:
                conn.execute(s.delete().where(s.c.email == email.lower()))
        return count == 1

    # -- sessions ----------------------------------------------------------------------

    def create_session(self, session: WebSession, replaces: str | None = None) -> None:
        """Store *session*; the one it *replaces* (the same browser's) ends in the same
        transaction, so a sign-in always rotates the session ID."""
        s = schema.web_sessions
        with self.store.writing() as conn:
            if replaces is not None:
                conn.execute(s.delete().where(s.c.id == replaces))
            conn.execute(s.insert().values(
                id=session.id, email=session.email, csrf_token=session.csrf_token,
                created_at=session.created_at, last_seen_at=session.last_seen_at,
                client_ip=session.client_ip, pending=session.pending))

    def get_session(self, session_id: str) -> WebSession | None:
        """The session, if its user exists, is enabled and has not changed the password
        since it began."""
        s, u = schema.web_sessions, schema.users
        query = (sa.select(*s.c).join(u, u.c.email == s.c.email)
                 .where(s.c.id == session_id, u.c.disabled == sa.false(),
                        u.c.password_changed_at <= s.c.created_at))
        with self.store.reading() as conn:
            row = conn.execute(query).first()
        return None if row is None else WebSession(**row._mapping)

    def complete_session(self, session_id: str, completed: WebSession) -> bool:
        """Replace the pending session *session_id* by *completed* (a new ID, nothing
        pending) in one transaction. False: it was no longer there (expired, signed out,
        or completed by a concurrent request)."""
        s = schema.web_sessions
        with self.store.writing() as conn:
            if conn.execute(s.delete().where(s.c.id == session_id,
                                             s.c.pending.is_not(None))).rowcount != 1:
                return False
            conn.execute(s.insert().values(
                id=completed.id, email=completed.email, csrf_token=completed.csrf_token,
                created_at=completed.created_at, last_seen_at=completed.last_seen_at,
                client_ip=completed.client_ip, pending=completed.pending))
        return True

    def touch_session(self, session_id: str, now: float) -> None:
        s = schema.web_sessions
        with self.store.writing(durable=False) as conn:  # a lost touch costs one idle minute
            conn.execute(s.update().where(s.c.id == session_id).values(last_seen_at=now))

    def delete_session(self, session_id: str) -> None:
        s = schema.web_sessions
        with self.store.writing() as conn:
            conn.execute(s.delete().where(s.c.id == session_id))

    def expire_sessions(self, idle_before: float, created_before: float) -> int:
        """Remove sessions idle since *idle_before* or begun before *created_before*."""
        s = schema.web_sessions
        with self.store.writing() as conn:
            return conn.execute(s.delete().where(sa.or_(
                s.c.last_seen_at < idle_before, s.c.created_at < created_before))).rowcount

    # -- sign-in throttle --------------------------------------------------------------

    def throttles(self, keys: Sequence[str]) -> dict[str, Throttle]:
        t = schema.login_throttle
        with self.store.reading() as conn:
            rows = conn.execute(sa.select(*t.c).where(t.c.key.in_(list(keys)))).all()
        return {row.key: Throttle(*row) for row in rows}

    def record_failure(self, rules: dict[str, ThrottleRule], now: float) -> dict[str, Throttle]:
        """Count one failed sign-in against each key of *rules*, locking those over their
        limit; a count restarts once forgotten or once its lockout is over."""
        t = schema.login_throttle
        result: dict[str, Throttle] = {}
        with self.store.writing() as conn:
            for key, rule in sorted(rules.items()):  # one lock order for every node
                old = _throttle_row(conn, key, now)
                failures = _next_count(old, rule, now)
                locked = now + rule.lock_for if failures >= rule.lock_after else None
                conn.execute(t.update().where(t.c.key == key).values(
                    failures=failures, last_failure_at=now, locked_until=locked))
                result[key] = Throttle(key, failures, now, locked)
        return result

    def clear_failures(self, keys: Sequence[str]) -> None:
        t = schema.login_throttle
        with self.store.writing() as conn:
            conn.execute(t.delete().where(t.c.key.in_(list(keys))))


def _user(row: sa.Row) -> User:
    fields = dict(row._mapping)
    fields["domains"] = tuple(d for d in (fields["domains"] or "").split("\n") if d)
    return User(**fields)


def _next_count(old: Throttle, rule: ThrottleRule, now: float) -> int:
    lock_over = old.locked_until is not None and old.locked_until <= now
    forgotten = now - old.last_failure_at >= rule.forget_after
    return 1 if lock_over or forgotten else old.failures + 1


def _throttle_row(conn: sa.Connection, key: str, now: float) -> Throttle:
    """The key's row, locked for this transaction (created with no failures on first use)."""
    t = schema.login_throttle
    query = sa.select(*t.c).where(t.c.key == key).with_for_update()
    row = conn.execute(query).first()
    if row is None:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        conn.execute(insert(t).values(key=key, failures=0, last_failure_at=now,
                                      locked_until=None).on_conflict_do_nothing())
        row = conn.execute(query).first()
    if row is None:  # pragma: no cover - the row was just written in this transaction
        raise StoreError(f"throttle row {key} vanished")
    return Throttle(*row)
