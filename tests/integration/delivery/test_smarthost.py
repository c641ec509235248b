"""Mail for domains we do not serve through a smarthost that wants AUTH, against real SASL.

The smarthost is Postfix with ``smtpd_sasl_type = dovecot``, checking passwords with a
real Dovecot auth service over TCP; it is the final destination of remote.test (so a DSN
to sender@remote.test lands in its Maildir) and takes no mail at all from a client that
has not authenticated, loopback included. The company's Postfix knows only alice, so
mail to bob fails with ``550 5.1.1`` and the gateway owes the sender a DSN: that DSN is
what goes, or must not go, through the smarthost.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import re
import smtplib
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.downstream import PostfixDownstream, Smarthost, wait_until
from tests.gateway_process import GatewayProcess
from tests.integration.delivery.gateway import (
    message,
    queue_json,
    send,
    show,
    start_delivering,
)

pytestmark = pytest.mark.integration

USER, PASSWORD = "relayuser", "secret"
SENDER = "sender@remote.test"
TIMEOUT = 30.0


def start_gateway(gateway_factory: Callable[..., GatewayProcess], store_url: str,
                  company: PostfixDownstream, outbound: dict[str, Any]) -> GatewayProcess:
    return start_delivering(gateway_factory, store_url, {"example.test": company.route},
                            extra={"outbound": outbound})


def notice_recipient(gateway: GatewayProcess, done: Callable[[dict], bool], what: str,
                     timeout: float = TIMEOUT) -> dict:
    """Poll the queue until the DSN's (null sender) one recipient satisfies *done*."""
    deadline = time.monotonic() + timeout
    rcpt: dict | None = None
    while time.monotonic() < deadline:
        notices = [e for e in queue_json(gateway) if e["sender"] == ""]
        if notices:
            (entry,) = notices
            (rcpt,) = entry["recipients"]
            if done(rcpt):
                return rcpt
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout}s: {rcpt}\n{gateway.log[-3000:]}")


def original_state(gateway: GatewayProcess) -> str:
    (entry,) = [e for e in queue_json(gateway) if e["sender"] == SENDER]
    (rcpt,) = entry["recipients"]
    return rcpt["state"]


def session_summaries(log: str) -> list[str]:
    """The command counts Postfix's smtpd logs as each session ends (``ehlo=2 auth=1 …``)."""
    return re.findall(r"disconnect from \S+ (.*)$", log, re.MULTILINE)


def test_the_smarthost_takes_no_mail_without_auth_and_offers_auth_only_after_starttls(
        smarthost_factory: Callable[..., Smarthost]) -> None:
    # What makes the tests below meaningful: loopback alone gets nothing through.
    smarthost = smarthost_factory(tls=True, users={USER: PASSWORD})
    with smtplib.SMTP("127.0.0.1", smarthost.postfix.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert client.has_extn("starttls") and not client.has_extn("auth")
        client.mail("")
        code, text = client.rcpt(SENDER)
        assert (code, text[:5]) == (554, b"5.7.1"), text
        client.rset()
        client.starttls()
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]


@pytest.mark.parametrize("tls", ["opportunistic", "required"])
def test_a_failure_notice_goes_through_the_smarthost_after_auth_plain_over_tls(
        gateway_factory, sqlite_url, postfix_downstream_factory, smarthost_factory,
        tls: str) -> None:
    company = postfix_downstream_factory(recipients={"example.test": ["alice"]})
    smarthost = smarthost_factory(tls=True, users={USER: PASSWORD})
    # With a password to send, even opportunistic TLS verifies the certificate: here
    # against the smarthost's own test CA.
    outbound = {"route": smarthost.route, "tls": tls, "tls_ca": str(smarthost.postfix.ca_file),
                "username": USER, "password": PASSWORD}
    gateway = start_gateway(gateway_factory, sqlite_url, company, outbound)
    original = message(1)
    send(gateway, original, recipients=["bob@example.test"])

    (notice,) = smarthost.postfix.wait_for(1, timeout=TIMEOUT)

    dsn = email.message_from_bytes(notice.as_bytes(), policy=email.policy.default)
    assert dsn["To"] == SENDER and dsn["Delivered-To"] == SENDER
    status = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    block = status.get_payload()[1]
    assert block["Final-Recipient"].endswith("bob@example.test")
    assert block["Action"] == "failed" and block["Status"] == "5.1.1"
    assert original["Message-ID"] in notice.as_string()
    assert notice_recipient(gateway, lambda r: r["state"] == "delivered", "DSN delivered")
    assert original_state(gateway) == "failed"
    log = smarthost.postfix.log_text()
    # Postfix logs this only after Dovecot said the password is right.
    assert f"sasl_method=PLAIN, sasl_username={USER}" in log
    assert "authentication failed" not in log
    # The session that carried the DSN did STARTTLS, then one AUTH, then the mail. The
    # line comes when the gateway closes its idle connection (about 2 s later).
    wait_until(lambda: any(s.startswith("ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 data=1")
                           for s in session_summaries(smarthost.postfix.log_text())),
               TIMEOUT, "the authenticated session's summary line")


def test_a_wrong_password_keeps_the_notice_deferred_and_nothing_reaches_the_smarthost(
        gateway_factory, sqlite_url, postfix_downstream_factory, smarthost_factory) -> None:
    company = postfix_downstream_factory(recipients={"example.test": ["alice"]})
    smarthost = smarthost_factory(tls=True, users={USER: PASSWORD})
    wrong = "not-the-password"
    gateway = start_gateway(gateway_factory, sqlite_url, company, {
        "route": smarthost.route, "tls": "opportunistic", "username": USER, "password": wrong,
        "tls_ca": str(smarthost.postfix.ca_file)})
    send(gateway, message(1), recipients=["bob@example.test"])

    rcpt = notice_recipient(gateway, lambda r: r["state"] == "deferred" and r["attempts"] >= 2,
                            "DSN deferred after two attempts")

    assert rcpt["address"] == SENDER
    assert rcpt["last_reply"].startswith(
        "451 4.7.0 127.0.0.1 refused our credentials: 535 5.7.8"), rcpt
    assert original_state(gateway) == "failed"
    assert smarthost.postfix.count() == 0
    # Each attempt said AUTH over TLS, failed once and sent no MAIL.
    wait_until(lambda: any("auth=0/1" in s
                           for s in session_summaries(smarthost.postfix.log_text())),
               TIMEOUT, "a failed session's summary line")
    log = smarthost.postfix.log_text()
    assert f"SASL PLAIN authentication failed: (reason unavailable), sasl_username={USER}" in log
    assert "sasl_method=" not in log  # no session ever authenticated
    assert "Password mismatch" in smarthost.auth.log_text()  # Dovecot judged it, not a stub
    failed = [s for s in session_summaries(log) if "auth=0/1" in s]
    assert failed and all(s.startswith("ehlo=2 starttls=1 auth=0/1") for s in failed)
    assert all("mail=" not in s for s in session_summaries(log))
    # The operator sees why, but never the password, plain or as the AUTH PLAIN token.
    token = base64.b64encode(f"\0{USER}\0{wrong}".encode()).decode()
    notice_id = next(e["queue_id"] for e in queue_json(gateway) if e["sender"] == "")
    for text in (gateway.log, json.dumps(show(gateway, notice_id))):
        assert wrong not in text and token not in text


def test_a_password_never_goes_to_a_smarthost_whose_certificate_is_not_verified(
        gateway_factory, sqlite_url, postfix_downstream_factory, smarthost_factory) -> None:
    company = postfix_downstream_factory(recipients={"example.test": ["alice"]})
    smarthost = smarthost_factory(tls=True, users={USER: PASSWORD})
    # Opportunistic TLS, but no CA for the smarthost's test certificate: an impostor.
    gateway = start_gateway(gateway_factory, sqlite_url, company, {
        "route": smarthost.route, "tls": "opportunistic",
        "username": USER, "password": PASSWORD})
    send(gateway, message(1), recipients=["bob@example.test"])

    rcpt = notice_recipient(gateway, lambda r: r["state"] == "deferred", "DSN deferred")

    assert "4.7.5" in rcpt["last_reply"] and "CERTIFICATE_VERIFY_FAILED" in rcpt["last_reply"]
    assert smarthost.postfix.count() == 0
    assert "sasl_" not in smarthost.postfix.log_text()


def test_without_starttls_the_password_is_never_sent_even_where_auth_is_offered(
        gateway_factory, sqlite_url, postfix_downstream_factory, smarthost_factory) -> None:
    company = postfix_downstream_factory(recipients={"example.test": ["alice"]})
    smarthost = smarthost_factory(tls=False, users={USER: PASSWORD})
    with smtplib.SMTP("127.0.0.1", smarthost.postfix.port, timeout=TIMEOUT) as probe:
        probe.ehlo()  # a server that would take the password in clear
        assert not probe.has_extn("starttls") and probe.has_extn("auth")
    gateway = start_gateway(gateway_factory, sqlite_url, company, {
        "route": smarthost.route, "tls": "opportunistic",
        "username": USER, "password": PASSWORD})
    send(gateway, message(1), recipients=["bob@example.test"])

    rcpt = notice_recipient(gateway, lambda r: r["state"] == "deferred", "DSN deferred")

    assert rcpt["last_reply"] == "451 4.7.0 127.0.0.1: no TLS, so the password is not sent"
    assert original_state(gateway) == "failed"
    # The gateway did connect (its session ends after EHLO, cut off rather than QUIT)...
    wait_until(lambda: "ehlo=1 commands=1" in session_summaries(smarthost.postfix.log_text()),
               TIMEOUT, "the gateway's session summary line")
    log = smarthost.postfix.log_text()
    # ...and never said AUTH: no session counted one, no SASL line, Dovecot asked nothing.
    assert not [s for s in session_summaries(log) if "auth=" in s]
    assert "sasl" not in log.lower()
    assert "passwd-file" not in smarthost.auth.log_text()
    assert smarthost.postfix.count() == 0
