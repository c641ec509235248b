"""Password sign-in: argon2id hashes, constant-time refusal and throttling.

Owns the decision whether a sign-in attempt succeeds. Hashes are argon2id with
RFC 9106's low-memory profile (t=3, 64 MiB, p=4); an unknown or disabled user costs the
same verification as a known one, against a dummy hash, so timing does not tell whether an
account exists. Failures are counted per account and per client IP in the store (shared by
every node): after a few, each next attempt must wait a doubling delay, and after many the
key is locked until the lockout expires. A throttled attempt is refused without checking
the password, so it teaches an attacker nothing. Passwords are never logged. Store failures
propagate as :class:`~spoolgate.store.store.StoreError`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from spoolgate.store.accounts import Accounts, Throttle, ThrottleRule, User
from spoolgate.webmail.settings import WebmailSettings

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
    """Checks passwords with throttling; *clock* gives the time (tests move it)."""

    def __init__(self, accounts: Accounts, settings: WebmailSettings,
                 hasher: PasswordHasher, clock: Callable[[], float]) -> None:
        self.accounts = accounts
        self.settings = settings
        self.hasher = hasher
        self.clock = clock
        self._dummy = hasher.hash("spoolgate: no such user")

    def hash_password(self, password: str) -> str:
        return self.hasher.hash(password)

    def sign_in(self, email: str, password: str, client_ip: str) -> SignInResult:
        """The user if *password* is theirs and no throttle stands in the way."""
        email = email.strip().lower()
        rules = self._rules(email, client_ip)
        now = self.clock()
        wait = self._throttled_until(self.accounts.throttles(list(rules)), now)
        if wait is not None:
            return SignInResult(None, retry_at=wait[0], locked=wait[1])
        user = self.accounts.get_user(email) if email else None
        if self._verify(user, password) and user is not None and not user.disabled:
            self.accounts.clear_failures([f"account:{email}"])
            self._upgrade_hash(user, password)
            return SignInResult(user)
        state = self.accounts.record_failure(rules, now)
        log.info("webmail sign-in failed account=%s ip=%s failures=%d", email or "-",
                 client_ip, max(t.failures for t in state.values()))
        return SignInResult(None)

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

    def _upgrade_hash(self, user: User, password: str) -> None:
        try:
            stale = self.hasher.check_needs_rehash(user.password_hash)
        except InvalidHashError:
            return
        if stale:
            self.accounts.rehash(user.email, user.password_hash, self.hasher.hash(password))
