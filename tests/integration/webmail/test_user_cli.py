"""`spoolgate user ...`: webmail accounts from the command line, with clear refusals."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_add_list_passwd_disable_enable(gateway_factory) -> None:
    gateway = gateway_factory(start=False)

    added = gateway.cli("user", "add", "Alice@Example.test", "--password-stdin",
                        input="a long enough secret\n")
    again = gateway.cli("user", "add", "alice@example.test", "--password-stdin",
                        input="a long enough secret\n")
    passwd = gateway.cli("user", "passwd", "alice@example.test", "--password-stdin",
                         input="another long secret\n")
    disabled = gateway.cli("user", "disable", "alice@example.test")
    listed = gateway.cli("user", "list")
    enabled = gateway.cli("user", "enable", "alice@example.test")
    relisted = gateway.cli("user", "list")

    assert added.returncode == 0 and "alice@example.test: account created" in added.stdout
    assert again.returncode == 1 and "already has an account" in again.stderr
    assert passwd.returncode == 0 and "signed out everywhere" in passwd.stdout
    assert disabled.returncode == 0
    assert listed.stdout.split()[:2] == ["alice@example.test", "disabled"]
    assert enabled.returncode == 0 and relisted.stdout.split()[:2] == ["alice@example.test",
                                                                       "active"]


@pytest.mark.parametrize(("args", "stdin", "problem"), [
    (("add", "bob@elsewhere.test"), "a long enough secret\n", "elsewhere.test"),
    (("add", "bob@example.test"), "short\n", "10 characters"),
    (("passwd", "nobody@example.test"), "a long enough secret\n", "has no account"),
    (("disable", "nobody@example.test"), None, "has no account"),
    (("add", "bob@example.test", "--role", "domain-admin"), "a long enough secret\n",
     "needs at least one --domain"),
    (("add", "bob@example.test", "--role", "domain-admin", "--domain", "other.test"),
     "a long enough secret\n", "other.test: not among this gateway's domains"),
    (("add", "bob@example.test", "--role", "admin", "--domain", "example.test"),
     "a long enough secret\n", "--domain is for a domain-admin"),
])
def test_refusals_say_what_is_wrong(gateway_factory, args, stdin, problem) -> None:
    gateway = gateway_factory(start=False)
    extra = ("--password-stdin",) if stdin is not None else ()
    result = gateway.cli("user", *args, *extra, input=stdin)
    assert result.returncode == 1 and problem in result.stderr, result.stderr


def test_roles_are_set_listed_and_audited(gateway_factory) -> None:
    from spoolgate.store.audit import AuditLog
    from spoolgate.store.store import open_store

    gateway = gateway_factory(start=False)
    added = gateway.cli("user", "add", "root@example.test", "--role", "admin",
                        "--password-stdin", input="a long enough secret\n")
    plain = gateway.cli("user", "add", "ann@example.test", "--password-stdin",
                        input="a long enough secret\n")
    promoted = gateway.cli("user", "role", "ann@example.test", "domain-admin",
                           "--domain", "Example.test")
    unknown = gateway.cli("user", "role", "nobody@example.test", "admin")
    listed = gateway.cli("user", "list").stdout.splitlines()

    assert added.returncode == 0 and "(admin)" in added.stdout
    assert plain.returncode == 0 and "(user)" in plain.stdout
    assert promoted.returncode == 0 and "role domain-admin" in promoted.stdout
    assert unknown.returncode == 1 and "has no account" in unknown.stderr
    assert [line.split()[:3] for line in listed] == [
        ["ann@example.test", "active", "domain-admin"], ["root@example.test", "active", "admin"]]
    assert "(example.test)" in listed[0]
    store = open_store(gateway.store_url)
    try:
        entries = [(e.action, e.target, e.detail) for e in AuditLog(store).recent()]
        actors = {e.actor for e in AuditLog(store).recent()}
    finally:
        store.close()
    assert entries == [("user.role", "ann@example.test", "domain-admin Example.test"),
                       ("user.add", "ann@example.test", "role=user"),
                       ("user.add", "root@example.test", "role=admin")]
    assert len(actors) == 1 and actors.pop().startswith("cli:")
