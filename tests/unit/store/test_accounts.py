"""spoolgate/store/accounts.py on SQLite and PostgreSQL: users, sessions, throttle counters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from spoolgate.store.accounts import AccountExists, Accounts, ThrottleRule, WebSession
from spoolgate.store.store import open_store


@pytest.fixture
def accounts(store_url: str) -> Iterator[Accounts]:
    store = open_store(store_url)
    yield Accounts(store)
    store.close()


def _session(sid: str, email: str = "alice@example.test", at: float = 100.0) -> WebSession:
    return WebSession(sid, email, "csrf-" + sid, at, at, "192.0.2.1")


def test_users_are_stored_lower_case_once(accounts: Accounts) -> None:
    accounts.add_user("Alice@Example.TEST", "$argon2id$x", now=10.0)
    with pytest.raises(AccountExists):
        accounts.add_user("alice@example.test", "$argon2id$y", now=11.0)
    user = accounts.get_user("ALICE@example.test")
    assert user is not None and user.email == "alice@example.test"
    assert user.password_hash == "$argon2id$x" and not user.disabled
    assert "argon2" not in repr(user)
    assert [u.email for u in accounts.list_users()] == ["alice@example.test"]


def test_a_session_ends_with_a_password_change_or_disabling(accounts: Accounts) -> None:
    accounts.add_user("alice@example.test", "h1", now=10.0)
    accounts.create_session(_session("s1"))
    assert accounts.get_session("s1") == _session("s1")
    assert accounts.set_password("alice@example.test", "h2", now=200.0)
    assert accounts.get_session("s1") is None
    accounts.create_session(_session("s2", at=300.0))
    assert accounts.set_disabled("alice@example.test", True)
    assert accounts.get_session("s2") is None
    assert not accounts.set_password("nobody@example.test", "h", now=1.0)


def test_creating_a_session_rotates_the_one_it_replaces(accounts: Accounts) -> None:
    accounts.add_user("alice@example.test", "h", now=10.0)
    accounts.create_session(_session("old"))
    accounts.create_session(_session("new"), replaces="old")
    assert accounts.get_session("old") is None
    assert accounts.get_session("new") is not None
    accounts.touch_session("new", 500.0)
    assert accounts.get_session("new").last_seen_at == 500.0
    assert accounts.expire_sessions(idle_before=400.0, created_before=0.0) == 0
    assert accounts.expire_sessions(idle_before=600.0, created_before=0.0) == 1
    assert accounts.get_session("new") is None


def test_failures_lock_a_key_and_restart_after_the_lockout(accounts: Accounts) -> None:
    rule = ThrottleRule(lock_after=3, lock_for=60.0, forget_after=3600.0)
    keys = {"account:alice@example.test": rule, "ip:192.0.2.1": rule}
    for at in (1.0, 2.0):
        state = accounts.record_failure(keys, now=at)
        assert state["ip:192.0.2.1"].locked_until is None
    state = accounts.record_failure(keys, now=3.0)
    assert state["account:alice@example.test"].failures == 3
    assert state["account:alice@example.test"].locked_until == 63.0
    assert accounts.throttles(list(keys))["ip:192.0.2.1"].locked_until == 63.0
    assert accounts.record_failure(keys, now=64.0)["ip:192.0.2.1"].failures == 1
    accounts.clear_failures(["account:alice@example.test"])
    assert list(accounts.throttles(list(keys))) == ["ip:192.0.2.1"]


def test_failures_are_forgotten_after_a_quiet_time(accounts: Accounts) -> None:
    rule = ThrottleRule(lock_after=5, lock_for=60.0, forget_after=100.0)
    accounts.record_failure({"ip:a": rule}, now=0.0)
    assert accounts.record_failure({"ip:a": rule}, now=50.0)["ip:a"].failures == 2
    assert accounts.record_failure({"ip:a": rule}, now=150.0)["ip:a"].failures == 1


def test_a_totp_step_is_accepted_once_and_only_forward(accounts: Accounts) -> None:
    accounts.add_user("alice@example.test", "h", now=10.0)
    assert not accounts.accept_totp_step("alice@example.test", 5)  # no secret yet
    assert accounts.set_totp("Alice@example.test", "JBSWY3DPEHPK3PXP")
    assert accounts.accept_totp_step("alice@example.test", 100)
    assert not accounts.accept_totp_step("alice@example.test", 100)
    assert not accounts.accept_totp_step("alice@example.test", 99)
    assert accounts.accept_totp_step("alice@example.test", 101)
    assert accounts.get_user("alice@example.test").totp_last_step == 101
    assert "JBSW" not in repr(accounts.get_user("alice@example.test"))
    accounts.create_session(_session("s1", at=200.0))
    assert accounts.set_totp("alice@example.test", None)  # a new secret ends every session
    user = accounts.get_user("alice@example.test")
    assert user.totp_secret is None and user.totp_last_step is None
    assert accounts.get_session("s1") is None
    assert not accounts.set_totp("nobody@example.test", "JBSWY3DPEHPK3PXP")


def test_completing_a_pending_session_replaces_it_once(accounts: Accounts) -> None:
    accounts.add_user("alice@example.test", "h", now=10.0)
    pending = WebSession("p", "alice@example.test", "csrf-p", 100.0, 100.0, "192.0.2.1",
                         pending="totp")
    accounts.create_session(pending)
    assert accounts.get_session("p").pending == "totp"
    assert accounts.complete_session("p", _session("done", at=120.0))
    assert accounts.get_session("p") is None
    assert accounts.get_session("done").pending is None
    assert not accounts.complete_session("p", _session("again", at=130.0))
    assert not accounts.complete_session("done", _session("again", at=130.0))  # not pending
    assert accounts.get_session("again") is None


def test_an_imap_verifier_is_kept_and_a_change_ends_sessions(accounts: Accounts) -> None:
    accounts.add_user("alice@example.test", "h1", now=10.0)
    accounts.create_session(_session("s1", at=100.0))
    assert accounts.store_verifier("alice@example.test", "h1", now=150.0, changed=False)
    user = accounts.get_user("alice@example.test")
    assert user.imap_verified_at == 150.0 and user.password_changed_at == 10.0
    assert accounts.get_session("s1") is not None
    assert accounts.store_verifier("alice@example.test", "h2", now=200.0, changed=True)
    user = accounts.get_user("alice@example.test")
    assert (user.password_hash, user.imap_verified_at, user.password_changed_at) == (
        "h2", 200.0, 200.0)
    assert accounts.get_session("s1") is None
    assert not accounts.store_verifier("nobody@example.test", "h", now=1.0, changed=False)
