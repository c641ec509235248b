"""Who gets a DSN and what it says back (RFC 3461 parameters, RFC 3464 fields).

The company's Postfix knows only alice@example.test (others get ``550 5.1.1`` at
RCPT) and also serves the senders' domain remote.test, which is the gateway's
outbound route: every DSN the gateway sends lands in that Maildir. Each test that
proves a DSN is *not* sent first waits for a positive signal from the same message
or a neighbour, then checks the queue and the Maildir.
"""

from __future__ import annotations

import email.policy
import smtplib
import time
from collections.abc import Mapping, Sequence
from email.message import EmailMessage

import pytest

from tests.downstream import PostfixDownstream
from tests.gateway_process import GatewayProcess
from tests.integration.delivery.gateway import (
    delivery_report,
    message,
    queue_json,
    send,
    start_delivering,
    wait_states,
)

pytestmark = pytest.mark.integration

SENDER = "sender@remote.test"
OUR_MTA = "dns; mx.test.example"


@pytest.fixture
def company(postfix_downstream_factory) -> PostfixDownstream:
    return postfix_downstream_factory(domains=("example.test", "remote.test"),
                                      recipients={"example.test": ["alice"]})


@pytest.fixture
def mx(gateway_factory, sqlite_url, company) -> GatewayProcess:
    """A gateway relaying example.test to the company, its DSNs to remote.test there too."""
    return start_delivering(gateway_factory, sqlite_url, {"example.test": company.route},
                            outbound=company.route)


def send_each(gateway: GatewayProcess, msg: EmailMessage, sender: str,
              recipients: Mapping[str, Sequence[str]], mail_options: Sequence[str] = ()) -> None:
    """One transaction with RCPT parameters of each recipient's own."""
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as client:
        client.ehlo()
        assert client.mail(sender, list(mail_options))[0] == 250
        for address, options in recipients.items():
            assert client.rcpt(address, list(options))[0] == 250
        assert client.data(msg.as_bytes(policy=email.policy.SMTP))[0] == 250


def notices(company: PostfixDownstream) -> list[EmailMessage]:
    return [m for m in company.maildir_messages() if m["Delivered-To"] == SENDER]


def wait_notices(company: PostfixDownstream, count: int, timeout: float = 30.0
                 ) -> list[EmailMessage]:
    deadline = time.monotonic() + timeout
    while len(found := notices(company)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(found)} of {count} DSN(s) within {timeout}s\n"
                                 f"{company.log_text()[-3000:]}")
        time.sleep(0.1)
    return found



def dsns_queued(gateway: GatewayProcess) -> list[dict]:
    """The gateway's own DSNs: messages from <> to the sender."""
    return [e for e in queue_json(gateway)
            if e["sender"] == "" and [r["address"] for r in e["recipients"]] == [SENDER]]


def test_notify_never_gets_no_dsn_while_the_default_neighbour_gets_one(
        mx, company) -> None:
    send_each(mx, message(1), SENDER, {"bob@example.test": ["NOTIFY=NEVER"],
                                            "carol@example.test": []})

    (notice,) = wait_notices(company, 1)
    wait_states(mx, {"failed": 2})

    _, blocks = delivery_report(notice)
    assert [b["Final-Recipient"] for b in blocks] == ["rfc822; carol@example.test"]
    assert blocks[0]["Action"] == "failed" and blocks[0]["Status"] == "5.1.1"
    time.sleep(1.0)  # the one DSN is in; a second would be right behind it
    assert len(notices(company)) == 1
    assert len(dsns_queued(mx)) == 1


def test_the_null_sender_never_gets_a_dsn(mx, company) -> None:
    send(mx, message(1), sender="", recipients=["bob@example.test"])
    send(mx, message(2), recipients=["bob@example.test"])  # the positive control

    (notice,) = wait_notices(company, 1)
    wait_states(mx, {"failed": 2})

    null_entry, sender_entry = [e for e in queue_json(mx)
                                if e["recipients"][0]["address"] == "bob@example.test"]
    assert null_entry["sender"] == "" and sender_entry["sender"] == SENDER
    per_message, _ = delivery_report(notice)
    assert per_message["X-Spoolgate-Queue-ID"] == sender_entry["queue_id"]
    time.sleep(1.0)
    assert len(notices(company)) == 1
    assert len(dsns_queued(mx)) == 1


def test_notify_success_to_a_server_without_dsn_gets_a_relayed_dsn_from_us(
        gateway_factory, sqlite_url, smtp_sink_factory, company) -> None:
    sink = smtp_sink_factory(("-N",))  # -N: no DSN announced, so it cannot report success
    gateway = start_delivering(gateway_factory, sqlite_url, {"example.test": sink.route},
                               outbound=company.route)
    original = message(1, body="the body stays here\n")
    send(gateway, original, rcpt_options=["NOTIFY=SUCCESS"])

    (notice,) = wait_notices(company, 1)

    assert sink.count() == 1
    assert notice["Return-Path"] == "<>"
    assert notice["Subject"] == "Successful Mail Delivery Report"
    per_message, (block,) = delivery_report(notice)
    assert per_message["Reporting-MTA"] == OUR_MTA
    assert block["Final-Recipient"] == "rfc822; alice@example.test"
    assert block["Action"] == "relayed"
    assert block["Status"].startswith("2.")
    assert block["Remote-MTA"] == "dns; 127.0.0.1"
    # A success report returns the headers only, unless RET=FULL asked for more.
    kinds = [p.get_content_type() for p in notice.walk()]
    assert "text/rfc822-headers" in kinds and "message/rfc822" not in kinds
    assert "the body stays here" not in notice.as_string()


def test_notify_success_to_a_dsn_server_is_passed_on_and_answered_by_it(
        mx, company) -> None:
    original = message(1)
    send(mx, original, mail_options=["ENVID=env-42"],
         rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;alice@example.test"])

    (notice,) = wait_notices(company, 1)
    wait_states(mx, {"delivered": 1})

    # Postfix delivered and reported it, with the parameters we passed on.
    per_message, (block,) = delivery_report(notice)
    assert per_message["Reporting-MTA"] == "dns; downstream.test"
    assert per_message["Original-Envelope-Id"] == "env-42"
    assert block["Action"] == "delivered"
    assert block["Original-Recipient"] == "rfc822;alice@example.test"
    # We relayed to a server that reports for itself: no second success DSN from us. It
    # would have been queued in the same transaction that recorded the delivery.
    assert dsns_queued(mx) == []
    (arrived,) = [m for m in company.maildir_messages() if m["Delivered-To"] != SENDER]
    assert arrived["Message-ID"] == original["Message-ID"]


def test_envid_and_orcpt_come_back_in_the_dsn(mx, company) -> None:
    send(mx, message(1), recipients=["bob@example.test"], mail_options=["ENVID=abc123"],
         rcpt_options=["ORCPT=rfc822;Bob.Original@example.test"])

    (notice,) = wait_notices(company, 1)

    per_message, (block,) = delivery_report(notice)
    assert per_message["Reporting-MTA"] == OUR_MTA
    assert per_message["Original-Envelope-Id"] == "abc123"
    assert block["Original-Recipient"] == "rfc822;Bob.Original@example.test"
    assert block["Final-Recipient"] == "rfc822; bob@example.test"
    assert block["Action"] == "failed"
    assert block["Status"] == "5.1.1"


def test_ret_hdrs_returns_only_the_headers(mx, company) -> None:
    original = message(1, body="a body the sender did not want back\n")
    send(mx, original, recipients=["bob@example.test"], mail_options=["RET=HDRS"])

    (notice,) = wait_notices(company, 1)

    parts = {p.get_content_type(): p for p in notice.walk()}
    assert "message/rfc822" not in parts
    headers = parts["text/rfc822-headers"].get_content()
    assert f"Message-ID: {original['Message-ID']}" in headers
    assert "Subject: message 1" in headers
    assert "a body the sender did not want back" not in notice.as_string()
    _, (block,) = delivery_report(notice)
    assert block["Action"] == "failed"
