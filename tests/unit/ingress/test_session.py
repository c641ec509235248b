"""A guard against aiosmtpd drift.

SmtpSession.__init__ does not call aiosmtpd's SMTP.__init__ (which introspects the class
on every connection) and sets the same attributes by hand. When an aiosmtpd upgrade adds
an attribute or a verb, these tests fail instead of a session at run time.
"""

from __future__ import annotations

import asyncio
import ssl

from aiosmtpd.smtp import SMTP

from spoolgate.ingress.limits import ConnectionLimiter
from spoolgate.ingress.recipients import RecipientPolicy
from spoolgate.ingress.session import SessionSettings, SmtpSession
from spoolgate.mail.envelope import Envelope

SETTINGS = SessionSettings(hostname="mx.example.test", max_message_size=1_000_000,
                           max_recipients=100, max_command_line=512, max_line_length=1000,
                           idle_timeout=300.0, max_errors=20, tls_context=None)


class _Intake:
    async def accept(self, envelope: Envelope, data: bytes, esmtp: bool = True) -> str:
        raise AssertionError("no message is sent in these tests")

    def refused(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("nothing is refused in these tests")


class _Handler:
    """A handler with no hooks, like the session's own."""


async def _aiosmtpd_attributes() -> set[str]:
    """Every instance attribute aiosmtpd's __init__ sets, over the options that change the set."""
    loop = asyncio.get_running_loop()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    names: set[str] = set()
    for options in ({}, {"command_call_limit": 20}, {"command_call_limit": {"NOOP": 5, "*": 10}},
                    {"tls_context": tls, "require_starttls": True, "enable_SMTPUTF8": True,
                     "hostname": "mx.example.test", "ident": "x", "auth_required": True,
                     "proxy_protocol_timeout": 5.0, "authenticator": lambda *args: None}):
        names |= set(vars(SMTP(_Handler(), loop=loop, **options)))
    return names


async def _session() -> SmtpSession:
    loop = asyncio.get_running_loop()
    return SmtpSession(SETTINGS, RecipientPolicy({}), _Intake(), ConnectionLimiter(10, 10), loop)


def test_session_sets_every_attribute_aiosmtpd_init_sets() -> None:
    async def compare() -> None:
        expected = await _aiosmtpd_attributes()
        session = await _session()
        missing = sorted(expected - set(vars(session)))
        assert not missing, f"SmtpSession.__init__ lacks aiosmtpd attributes: {missing}"
        assert len(expected) > 30  # the comparison saw aiosmtpd's attributes, not an empty set

    asyncio.run(compare())


def test_session_answers_every_aiosmtpd_verb_but_auth() -> None:
    async def compare() -> None:
        verbs = {name.removeprefix("smtp_") for name in dir(SMTP) if name.startswith("smtp_")}
        reference = SMTP(_Handler(), loop=asyncio.get_running_loop())
        assert set(reference._smtp_methods) == verbs
        session = await _session()
        assert "AUTH" in verbs and "AUTH" not in session._smtp_methods
        assert verbs - {"AUTH"} <= set(session._smtp_methods), \
            f"verbs aiosmtpd has and SmtpSession lacks: {sorted(verbs - {'AUTH'} - set(session._smtp_methods))}"
        for verb, method in session._smtp_methods.items():
            # Bound to this session, and the session's own (guarded) version of the verb.
            assert method.__self__ is session
            assert method.__func__ is getattr(SmtpSession, "smtp_" + verb)

    asyncio.run(compare())


def test_session_settings_reach_the_attributes_aiosmtpd_reads() -> None:
    async def build() -> SmtpSession:
        return await _session()

    session = asyncio.run(build())
    assert session.hostname == SETTINGS.hostname
    assert session.data_size_limit == SETTINGS.max_message_size
    assert session._timeout_duration == SETTINGS.idle_timeout
    assert session.tls_context is None
    assert session.event_handler is not None
    assert session.command_size_limit == SETTINGS.max_command_line
    # MAIL and RCPT get room for DSN parameters; other commands keep the configured limit.
    assert session.command_size_limits["MAIL"] > SETTINGS.max_command_line
    assert session.command_size_limits["RCPT"] > SETTINGS.max_command_line
    assert session.command_size_limits["NOOP"] == SETTINGS.max_command_line
    assert session._enforce_call_limit is True
    assert session._auth_methods == {}
