"""Recipient policy: configured domains only, no routing tricks, recipient lists enforced."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoolgate.ingress.addresses import parse_mailbox
from spoolgate.ingress.recipients import RecipientPolicy
from spoolgate.mail.reply import SmtpError

POLICY = RecipientPolicy({"Example.TEST": None, "users.test": frozenset({"alice", "bob.smith"})})


def refusal(address: str, utf8: bool = False) -> tuple[int, str]:
    with pytest.raises(SmtpError) as caught:
        POLICY.check(parse_mailbox(address, utf8))
    return caught.value.reply.code, caught.value.reply.enhanced


@pytest.mark.parametrize("address", [
    "user@example.test",
    "User.Name+tag@EXAMPLE.Test",
    '"john doe"@example.test',
    "@relay.test:user@example.test",
    "alice@users.test",
    "ALICE@Users.Test",
    "Bob.Smith@users.test",
])
def test_configured_domains_are_accepted(address: str) -> None:
    POLICY.check(parse_mailbox(address))


@pytest.mark.parametrize("address", [
    "user@evil.test",
    "user@example.test.evil",
    "user@evil-example.test",
    "user@sub.example.test",
    "user@exampletest",
    "user@example.tes",
    "user@xample.test",
    "user@example.test.users.test",
    "postmaster@[127.0.0.1]",
    "user@[192.0.2.1]",
    "user@[IPv6:::1]",
    "user@[example.test]",
    "user%evil.test@example.test",
    "user%evil.test%example.test@example.test",
    "evil.test!user@example.test",
    '"user@evil.test"@example.test',
    '"user%evil.test"@example.test',
    '"evil.test!user"@example.test',
    "@example.test:user@evil.test",          # a source route through us is still foreign
    "alice%evil.test@users.test",            # routing is refused before the user list is asked
    '"alice@evil.test"@users.test',
])
def test_anything_else_is_relay_access_denied(address: str) -> None:
    assert refusal(address) == (550, "5.7.1")


def test_unicode_lookalike_domain_is_foreign() -> None:
    # "exаmple.test" with a Cyrillic 'а' is an A-label of its own.
    assert refusal("user@ex\u0430mple.test", utf8=True) == (550, "5.7.1")


@pytest.mark.parametrize("address", ["carol@users.test", "alice.x@users.test", "bob@users.test",
                                     '"alice "@users.test', "postmaster.x@users.test"])
def test_domain_with_a_recipient_list_refuses_unknown_users(address: str) -> None:
    assert refusal(address) == (550, "5.1.1")


@pytest.mark.parametrize("address", ["postmaster@users.test", "PostMaster@users.test",
                                     "postmaster@example.test"])
def test_postmaster_is_accepted_for_every_domain_even_off_the_list(address: str) -> None:
    # RFC 5321 4.5.1: every domain must accept the reserved mailbox, case-insensitively.
    assert POLICY.check(parse_mailbox(address)) is None


def test_a_bare_postmaster_means_the_first_domains_postmaster() -> None:
    assert POLICY.postmaster == "postmaster@example.test"
    assert RecipientPolicy({}).postmaster is None


def test_refusals_carry_the_replies_clients_see() -> None:
    with pytest.raises(SmtpError) as caught:
        POLICY.check(parse_mailbox("user@evil.test"))
    assert str(caught.value.reply) == "550 5.7.1 Relay access denied"
    with pytest.raises(SmtpError) as caught:
        POLICY.check(parse_mailbox("carol@users.test"))
    assert str(caught.value.reply).startswith("550 5.1.1 ")


def test_no_domains_means_nothing_is_accepted() -> None:
    with pytest.raises(SmtpError) as caught:
        RecipientPolicy({}).check(parse_mailbox("user@example.test"))
    assert caught.value.reply.code == 550


_LOCAL = st.text(st.sampled_from('ab.%!@"\\ +-é'), min_size=1, max_size=12)
_DOMAIN = st.one_of(
    st.sampled_from(["example.test", "EXAMPLE.TEST", "example.test.evil", "evil.test",
                     "sub.example.test", "[127.0.0.1]", "users.test"]),
    st.text(st.sampled_from("abexmplt.-[]1"), min_size=1, max_size=20))


@settings(max_examples=400, deadline=None, database=None)
@given(_LOCAL, _DOMAIN)
def test_never_an_open_relay(local: str, domain: str) -> None:
    """Whatever parses, only plain local parts at configured domains get through."""
    for text in (f"{local}@{domain}", '"' + local.replace("\\", "\\\\").replace('"', '\\"')
                 + f'"@{domain}'):
        try:
            mailbox = parse_mailbox(text, utf8=True)
        except ValueError:
            continue
        try:
            POLICY.check(mailbox)
        except SmtpError as error:
            assert error.reply.code == 550
            continue
        assert mailbox.domain in ("example.test", "users.test")
        assert not any(c in mailbox.local for c in "%!@")
        if mailbox.domain == "users.test":
            assert mailbox.local.lower() in ("alice", "bob.smith")
