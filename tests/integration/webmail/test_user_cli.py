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
])
def test_refusals_say_what_is_wrong(gateway_factory, args, stdin, problem) -> None:
    gateway = gateway_factory(start=False)
    extra = ("--password-stdin",) if stdin is not None else ()
    result = gateway.cli("user", *args, *extra, input=stdin)
    assert result.returncode == 1 and problem in result.stderr, result.stderr
