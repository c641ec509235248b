"""Webmail accounts for the CLI: add a user, set a password, list, disable.

Thin over :class:`spoolgate.store.accounts.Accounts`, with the checks an operator needs:
the address must be in one of the gateway's domains and the password long enough. Errors
are :class:`UserError` with a message for the operator; passwords are never logged.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from argon2 import PasswordHasher

from spoolgate.store.accounts import AccountExists, Accounts, User
from spoolgate.store.store import Store
from spoolgate.webmail.auth import default_hasher

MIN_PASSWORD_LENGTH = 10


class UserError(Exception):
    """The operator's request cannot be done; the message says why."""


def _checked_email(email: str, domains: Iterable[str]) -> str:
    email = email.strip().lower()
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        raise UserError(f"{email!r} is not an email address")
    allowed = {d.lower() for d in domains}
    if domain not in allowed:
        raise UserError(f"{domain} is not one of this gateway's domains "
                        f"({', '.join(sorted(allowed)) or 'none configured'})")
    return email


def _checked_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    return password


def add_user(store: Store, email: str, password: str, *, domains: Iterable[str],
             hasher: PasswordHasher | None = None) -> User:
    """Create a webmail account for *email* (in one of *domains*)."""
    email = _checked_email(email, domains)
    digest = (hasher or default_hasher()).hash(_checked_password(password))
    try:
        return Accounts(store).add_user(email, digest, time.time())
    except AccountExists:
        raise UserError(f"{email} already has an account") from None


def set_password(store: Store, email: str, password: str, *,
                 hasher: PasswordHasher | None = None) -> None:
    """Replace the password; the user's sessions end."""
    digest = (hasher or default_hasher()).hash(_checked_password(password))
    if not Accounts(store).set_password(email, digest, time.time()):
        raise UserError(f"{email} has no account")


def list_users(store: Store) -> list[User]:
    return Accounts(store).list_users()


def disable_user(store: Store, email: str, disabled: bool = True) -> None:
    """Disable (sessions end at once) or re-enable an account."""
    if not Accounts(store).set_disabled(email, disabled):
        raise UserError(f"{email} has no account")
