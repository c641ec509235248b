"""Password sign-in: argon2id hashes, constant-time refusal and throttling.

Owns the decision whether a sign-in attempt succeeds. Hashes are argon2id with
RFC 9106's low-memory profile (t=3, 64 MiB, p=4); an unknown or disabled user costs the
same verification as a known one, against a dummy hash, so timing does not tell whether an
account exists. Failures are counted per account and per client IP in the store (shared by
every node): after a few, each next attempt must wait a doubling delay, and after many the
key is locked until the lockout expires. A throttled attempt is refused without checking
the password, so it teaches an attacker nothing.

For a domain with an IMAP server configured, that server decides while it answers: an
accepted password is signed in and its argon2id hash kept as the user's local verifier (the
account is created on first sign-in when the domain accepts the local part); a rejected one
is a failure, with no fallback. Only when the server does not answer does the local
verifier decide, so the last password the company's server accepted keeps working during
its outage. A user with a TOTP secret needs a 6-digit code too (:meth:`verify_totp`):
wrong codes count in the same throttle, each time step is accepted once (no replay), and
the account's failures are cleared only once the code is right. Passwords and codes are
never logged. Store failures propagate as :class:`~spoolgate.store.store.StoreError`.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from spoolgate.config import ImapSettings
from spoolgate.store.accounts import AccountExists, Accounts, Throttle, ThrottleRule, User
from spoolgate.webmail.imap_check import ImapVerdict, check_password
from spoolgate.webmail.settings import WebmailSettings

TOTP_STEP = 30      # seconds per code (RFC 6238's default, what authenticator apps use)
TOTP_WINDOW = 1     # steps accepted either side of now, for clock drift

ImapCheck = Callable[[ImapSettings, str, str, float], ImapVerdict]

log = logging.getLogger(__name__)


def default_hasher() -> PasswordHasher:
    """argon2id with RFC 9106's second recommended (low-memory) parameters."""
    return PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4, hash_len=32,
                          salt_len=16)


@dataclass(frozen=True, slots=True)
class SignInResult:
    user: User | None
    retry_at: float | None = None    # throttled: try again at this time
    locked: bool = False             # the throttle is a lockout, not a delay


class Authenticator:
    """Checks passwords and TOTP codes with throttling; *clock* gives the time (tests move
    it); *imap_check* asks a domain's IMAP server (:func:`check_password`)."""

    def __init__(self, accounts: Accounts, settings: WebmailSettings,
                 hasher: PasswordHasher, clock: Callable[[], float],
                 imap_check: ImapCheck = check_password) -> None:
        self.accounts = accounts
        self.settings = settings
        self.hasher = hasher
        self.clock = clock
        self.imap_check = imap_check
        self._dummy = hasher.hash("spoolgate: no such user")

    def hash_password(self, password: str) -> str:
        return self.hasher.hash(password)

    def sign_in(self, email: str, password: str, client_ip: str) -> SignInResult:
        """The user if *password* is theirs and no throttle stands in the way. A user with
        a TOTP secret is not signed in yet: :meth:`verify_totp` must follow."""
        email = email.strip().lower()
        rules, now, throttled = self._admit(email, client_ip)
        if throttled is not None:
            return throttled
        verdict = self._ask_imap(email, password)
        if verdict is ImapVerdict.ACCEPTED:
            user = self._keep_verifier(email, password, now)
        elif verdict is ImapVerdict.REJECTED:
            user = None  # no fallback: the company's server decides while it answers
        else:
            user = self._local_user(email, password)
        if user is not None and not user.disabled:
            if user.totp_secret is None:  # otherwise cleared once the code is right too
                self.accounts.clear_failures([f"account:{email}"])
            return SignInResult(user)
        return self._failed(rules, email, client_ip, now, "sign-in")

    def verify_totp(self, email: str, code: str, client_ip: str) -> SignInResult:
        """The user if *code* is the TOTP code of now (give or take a step), not used
        before, and no throttle stands in the way; failures count as for passwords."""
        email = email.strip().lower()
        rules, now, throttled = self._admit(email, client_ip)
        if throttled is not None:
            return throttled
        user = self.accounts.get_user(email)
        step = None
        if user is not None and user.totp_secret and not user.disabled:
            step = _matching_step(user.totp_secret, code.replace(" ", ""), now)
        if user is not None and step is not None and self.accounts.accept_totp_step(email, step):
            self.accounts.clear_failures([f"account:{email}"])
            return SignInResult(user)
        return self._failed(rules, email, client_ip, now, "TOTP code")

    def _admit(self, email: str, client_ip: str
               ) -> tuple[dict[str, ThrottleRule], float, SignInResult | None]:
        """The throttle rules of this attempt, the time, and the refusal when a delay or a
        lockout stands in the way (None: go ahead)."""
        rules = self._rules(email, client_ip)
        now = self.clock()
        wait = self._throttled_until(self.accounts.throttles(list(rules)), now)
        refusal = None if wait is None else SignInResult(None, retry_at=wait[0], locked=wait[1])
        return rules, now, refusal

    def _failed(self, rules: dict[str, ThrottleRule], email: str, client_ip: str,
                now: float, what: str) -> SignInResult:
        state = self.accounts.record_failure(rules, now)
        log.info("webmail %s failed account=%s ip=%s failures=%d", what, email or "-",
                 client_ip, max(t.failures for t in state.values()))
        return SignInResult(None)

    def _ask_imap(self, email: str, password: str) -> ImapVerdict:
        """The verdict of the domain's IMAP server; UNAVAILABLE also when it has none (the
        local verifier decides). check_password logs why a server gave no answer."""
        local, _, domain = email.rpartition("@")
        server = self.settings.imap.get(domain)
        if server is None or not local:
            return ImapVerdict.UNAVAILABLE
        return self.imap_check(server, email, password, self.settings.imap_timeout)

    def _local_user(self, email: str, password: str) -> User | None:
        """The user if *password* matches the stored hash (upgraded if stale)."""
        user = self.accounts.get_user(email) if email else None
        if not self._verify(user, password) or user is None:
            return None
        self._upgrade_hash(user, password)
        return user

    def _keep_verifier(self, email: str, password: str, now: float) -> User | None:
        """Store a hash of the IMAP-accepted *password* (creating the account if the domain
        accepts the local part); the user, or None when no account may exist."""
        log.info("webmail sign-in account=%s: password accepted by IMAP", email)
        local, _, domain = email.rpartition("@")
        user = self.accounts.get_user(email)
        if user is None:
            allowed = self.settings.imap_local_parts.get(domain)
            if allowed is not None and local.lower() not in allowed:
                return None
            digest = self.hasher.hash(password)
            try:
                self.accounts.add_user(email, digest, now)
            except AccountExists:
                pass  # created by a concurrent sign-in: keep this password's hash below
            else:
                self.accounts.store_verifier(email, digest, now, changed=False)
                return self.accounts.get_user(email)
            user = self.accounts.get_user(email)
            if user is None:
                return None
        same = self._verify(user, password)
        if not same or self._stale(user.password_hash):
            self.accounts.store_verifier(email, self.hasher.hash(password), now,
                                         changed=not same)
        else:
            self.accounts.store_verifier(email, user.password_hash, now, changed=False)
        return self.accounts.get_user(email)

    def _rules(self, email: str, client_ip: str) -> dict[str, ThrottleRule]:
        s = self.settings
        return {
            f"account:{email}": ThrottleRule(s.account_lock_after, s.lockout_seconds,
                                             s.throttle_forget_after),
            f"ip:{client_ip}": ThrottleRule(s.ip_lock_after, s.lockout_seconds,
                                            s.throttle_forget_after),
        }

    def _throttled_until(self, throttles: dict[str, Throttle],
                         now: float) -> tuple[float, bool] | None:
        """(when the next attempt may come, whether it is a lockout), or None: go ahead."""
        waits = []
        for throttle in throttles.values():
            if throttle.locked_until is not None and throttle.locked_until > now:
                waits.append((throttle.locked_until, True))
            elif throttle.locked_until is None:
                ready = throttle.last_failure_at + self.delay_after(throttle.failures)
                if ready > now and now - throttle.last_failure_at < self.settings.throttle_forget_after:
                    waits.append((ready, False))
        return max(waits) if waits else None

    def delay_after(self, failures: int) -> float:
        """Seconds the next attempt must wait after *failures* in a row (0 at first)."""
        s = self.settings
        over = failures - s.throttle_free_failures
        if over <= 0:
            return 0.0
        return min(s.throttle_delay * math.pow(2, min(over - 1, 30)), s.throttle_max_delay)

    def _verify(self, user: User | None, password: str) -> bool:
        try:
            return self.hasher.verify(user.password_hash if user else self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _stale(self, password_hash: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def _upgrade_hash(self, user: User, password: str) -> None:
        try:
            stale = self.hasher.check_needs_rehash(user.password_hash)
        except InvalidHashError:
            return
        if stale:
            self.accounts.rehash(user.email, user.password_hash, self.hasher.hash(password))


def _matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step within the window whose code is *code* (the latest if several)."""
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, interval=TOTP_STEP)
    current = int(now // TOTP_STEP)
    found = None
    for step in range(current - TOTP_WINDOW, current + TOTP_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found
