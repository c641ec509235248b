"""Webmail accounts for the CLI: add a user, set a password, list, disable, TOTP.

Thin over :class:`spoolgate.store.accounts.Accounts`, with the checks an operator needs:
the address must be in one of the gateway's domains and the password long enough. Errors
are :class:`UserError` with a message for the operator; passwords are never logged.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import pyotp
from argon2 import PasswordHasher

from spoolgate.store.accounts import ROLES, AccountExists, Accounts, User
from spoolgate.store.store import Store
from spoolgate.webmail.auth import default_hasher

MIN_PASSWORD_LENGTH = 10
TOTP_ISSUER = "Spoolgate"


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
             hasher: PasswordHasher | None = None, role: str = "user",
             role_domains: Iterable[str] = ()) -> User:
    """Create a webmail account for *email* (in one of *domains*), with a console *role*
    (a domain admin's *role_domains*)."""
    domains = list(domains)
    email = _checked_email(email, domains)
    managed = _checked_role(role, role_domains, domains)
    digest = (hasher or default_hasher()).hash(_checked_password(password))
    try:
        return Accounts(store).add_user(email, digest, time.time(), role, managed)
    except AccountExists:
        raise UserError(f"{email} already has an account") from None


def set_role(store: Store, email: str, role: str, role_domains: Iterable[str] = (), *,
             domains: Iterable[str]) -> None:
    """Change the console role of *email*; it applies from the user's next request."""
    managed = _checked_role(role, role_domains, list(domains))
    if not Accounts(store).set_role(email.strip(), role, managed):
        raise UserError(f"{email.strip().lower()} has no account")


def _checked_role(role: str, role_domains: Iterable[str], domains: list[str]) -> list[str]:
    """The domains a *role* manages: a domain admin needs some, of this gateway's."""
    if role not in ROLES:
        raise UserError(f"unknown role {role!r} (expected {', '.join(ROLES)})")
    managed = sorted({d.strip().lower() for d in role_domains if d.strip()})
    if role != "domain-admin":
        if managed:
            raise UserError(f"--domain is for a domain-admin; an {role} has none")
        return []
    if not managed:
        raise UserError("a domain-admin needs at least one --domain")
    unknown = [d for d in managed if d not in {x.lower() for x in domains}]
    if unknown:
        raise UserError(f"{', '.join(unknown)}: not among this gateway's domains")
    return managed


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


@dataclass(frozen=True, slots=True)
class TotpEnrolment:
    """What the user types or scans into an authenticator app."""

    secret: str   # base32
    uri: str      # otpauth://totp/Spoolgate:EMAIL?secret=...&issuer=Spoolgate

    def __repr__(self) -> str:  # never put the secret in a log line
        return "TotpEnrolment(...)"


def enable_totp(store: Store, email: str) -> TotpEnrolment:
    """Give *email* a new TOTP secret (replacing any); the user's sessions end."""
    secret = pyotp.random_base32()
    email = email.strip().lower()
    if not Accounts(store).set_totp(email, secret):
        raise UserError(f"{email} has no account")
    uri = pyotp.TOTP(secret).provisioning_uri(name=email,
                                              issuer_name=TOTP_ISSUER)
    return TotpEnrolment(secret, uri)


def disable_totp(store: Store, email: str) -> None:
    """Remove *email*'s TOTP secret: the password alone signs in again."""
    email = email.strip().lower()
    if not Accounts(store).set_totp(email, None):
        raise UserError(f"{email} has no account")
