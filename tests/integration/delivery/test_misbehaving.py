"""A company server that misbehaves: each reply or silence becomes the state it should.

smtp-sink plays the server that answers 4xx or 5xx, hangs or hangs up; Postfix plays
the one with and without STARTTLS. Every outcome is read back through the CLI, where
an operator would look: the state, ``last_reply`` and the event that records it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from email.message import EmailMessage

import pytest

from tests.downstream import SmtpSink
from tests.gateway_process import GatewayProcess
from tests.integration.delivery.gateway import (
    delivery_report,
    message,
    queue_json,
    send,
    show,
    start_delivering,
    wait_states,
)

pytestmark = pytest.mark.integration

SINK_TEMPFAIL = "450 4.3.0 Error: command failed"
SINK_REJECT = "500 5.3.0 Error: command failed"
SLOW_RETRY = {"min_backoff": 5.0, "max_backoff": 5.0}  # a deferred row stays deferred a while


def the_queue_id(gateway: GatewayProcess, sender: str = "sender@remote.test") -> str:
    (entry,) = [e for e in queue_json(gateway) if e["sender"] == sender]
    return entry["queue_id"]


def wait_recipient(gateway: GatewayProcess, queue_id: str, done: Callable[[dict], bool],
                   what: str, timeout: float = 30.0) -> dict:
    """Poll ``queue show`` until *done* holds for the message's one recipient; the detail."""
    deadline = time.monotonic() + timeout
    while True:
        detail = show(gateway, queue_id)
        (rcpt,) = detail["entry"]["recipients"]
        if done(rcpt):
            return detail
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s: {rcpt}\n{gateway.log[-3000:]}")
        time.sleep(0.2)


def event_details(detail: dict, kind: str) -> list[str]:
    return [event["detail"] for event in detail["events"] if event["kind"] == kind]


def gateway_routes(gateway: GatewayProcess) -> list[dict]:
    result = gateway.cli("routes", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)



def test_4xx_at_rcpt_defers_keeps_the_reply_and_retries_without_taking_the_route_down(
        gateway_factory, store_url, smtp_sink_factory) -> None:
    sink = smtp_sink_factory(SmtpSink.SOFT_REJECT_RCPT)
    gateway = start_delivering(gateway_factory, store_url, {"example.test": sink.route},
                               delivery={"min_backoff": 0.3, "max_backoff": 0.3})
    send(gateway, message(1))
    queue_id = the_queue_id(gateway)

    detail = wait_recipient(gateway, queue_id,
                            lambda r: r["state"] == "deferred" and r["attempts"] >= 3,
                            "three attempts, still deferred")

    rcpt = detail["entry"]["recipients"][0]
    assert rcpt["last_reply"] == SINK_TEMPFAIL
    deferrals = event_details(detail, "deferred")
    assert len(deferrals) >= 3
    assert all(f"route={sink.route}" in d and f"reply={SINK_TEMPFAIL}" in d for d in deferrals)
    assert sink.count() == 0  # refused at RCPT: no message was sent
    # A 4xx is an answer, not a broken connection: the route stays up.
    (route,) = [r for r in gateway_routes(gateway) if r["name"] == sink.route]
    assert route["state"] == "up" and route["failures"] == 0
    assert not [e for e in queue_json(gateway) if e["sender"] == ""]  # no DSN yet


@pytest.mark.parametrize(("options", "expected"), [
    (SmtpSink.TEMPFAIL_AFTER_DATA, SINK_TEMPFAIL),
    (SmtpSink.SHUTDOWN_AFTER_DOT, "421 4.0.0 Server closing connection"),
], ids=["450", "421"])
def test_4xx_after_the_dot_defers(gateway_factory, sqlite_url, smtp_sink_factory,
                                  options: tuple[str, ...], expected: str) -> None:
    sink = smtp_sink_factory(options)
    gateway = start_delivering(gateway_factory, sqlite_url, {"example.test": sink.route},
                               delivery=SLOW_RETRY)
    send(gateway, message(1))
    queue_id = the_queue_id(gateway)

    detail = wait_recipient(gateway, queue_id, lambda r: r["state"] == "deferred", "deferred")

    assert sink.count() == 1  # the whole message went over, then the server said 4xx
    assert detail["entry"]["recipients"][0]["last_reply"] == expected
    assert detail["entry"]["recipients"][0]["attempts"] == 1
    assert any(f"reply={expected}" in d for d in event_details(detail, "deferred"))


def test_5xx_after_the_dot_fails_and_returns_the_message_to_the_sender(
        gateway_factory, store_url, smtp_sink_factory, postfix_downstream_factory) -> None:
    sink = smtp_sink_factory(SmtpSink.REJECT_AFTER_DATA)
    senders = postfix_downstream_factory(domains=("remote.test",))
    gateway = start_delivering(gateway_factory, store_url, {"example.test": sink.route},
                               outbound=senders.route)
    original = message(1)
    send(gateway, original)
    queue_id = the_queue_id(gateway)

    (notice,) = senders.wait_for(1, timeout=30)

    detail = wait_recipient(gateway, queue_id, lambda r: r["state"] == "failed", "failed")
    assert detail["entry"]["recipients"][0]["last_reply"] == SINK_REJECT
    assert any(f"reply={SINK_REJECT}" in d for d in event_details(detail, "failed"))
    assert sink.count() == 1
    assert notice["Return-Path"] == "<>"
    assert notice["Delivered-To"] == "sender@remote.test"
    assert notice.get_content_type() == "multipart/report"
    per_message, (block,) = delivery_report(notice)
    assert queue_id in per_message["X-Spoolgate-Queue-ID"]
    assert block["Final-Recipient"] == "rfc822; alice@example.test"
    assert block["Action"] == "failed"
    assert block["Status"] == "5.3.0"
    assert block["Diagnostic-Code"] == f"smtp; {SINK_REJECT}"
    returned = next(p for p in notice.walk() if p.get_content_type() == "message/rfc822")
    assert returned.get_payload(0)["Message-ID"] == original["Message-ID"]
    # The DSN itself is a message of ours, from the null sender, delivered like any other.
    (dsn_entry,) = [e for e in queue_json(gateway) if e["sender"] == ""]
    assert [r["state"] for r in dsn_entry["recipients"]] == ["delivered"]


def test_a_server_that_hangs_after_the_dot_times_out_and_nothing_is_lost(
        gateway_factory, sqlite_url, smtp_sink_factory, postfix_downstream) -> None:
    sink = smtp_sink_factory(SmtpSink.HANG_AFTER_DOT)
    timeouts = {"data_timeout": 1.5, "command_timeout": 30.0, **SLOW_RETRY}
    gateway = start_delivering(gateway_factory, sqlite_url, {"example.test": sink.route},
                               delivery=timeouts)
    original = message(1)
    send(gateway, original)
    queue_id = the_queue_id(gateway)

    detail = wait_recipient(gateway, queue_id, lambda r: r["state"] == "deferred", "deferred",
                            timeout=20)

    # The end-of-data timer ran out, not the 30 s command timer.
    reply = detail["entry"]["recipients"][0]["last_reply"]
    assert reply.startswith("451 4.4.2") and "did not answer within 1.5s" in reply, reply
    assert any(f"reply={reply}" in d for d in event_details(detail, "deferred"))
    assert sink.count() == 1
    gateway.stop()

    # The company replaces its server; the gateway restarts with the new route.
    replaced = start_delivering(gateway_factory, sqlite_url,
                                {"example.test": postfix_downstream.route})
    assert replaced.cli("queue", "flush").returncode == 0
    (arrived,) = postfix_downstream.wait_for(1, timeout=30)
    assert arrived["Message-ID"] == original["Message-ID"]
    wait_states(replaced, {"delivered": 1})


def test_a_server_that_never_answers_data_times_out_on_the_command_timer(
        gateway_factory, sqlite_url, smtp_sink_factory) -> None:
    sink = smtp_sink_factory(SmtpSink.HANG_BEFORE_354)
    timeouts = {"command_timeout": 1.5, "data_timeout": 30.0, **SLOW_RETRY}
    gateway = start_delivering(gateway_factory, sqlite_url, {"example.test": sink.route},
                               delivery=timeouts)
    send(gateway, message(1))
    queue_id = the_queue_id(gateway)

    detail = wait_recipient(gateway, queue_id, lambda r: r["state"] == "deferred", "deferred",
                            timeout=20)

    reply = detail["entry"]["recipients"][0]["last_reply"]
    assert reply.startswith("451 4.4.2") and "did not answer within 1.5s" in reply, reply
    assert any(f"reply={reply}" in d for d in event_details(detail, "deferred"))
    assert sink.count() == 0


def test_a_server_without_esmtp_gets_the_message_after_helo(
        gateway_factory, sqlite_url, smtp_sink_factory) -> None:
    sink = smtp_sink_factory(SmtpSink.NO_ESMTP)
    gateway = start_delivering(gateway_factory, sqlite_url, {"example.test": sink.route})
    send(gateway, message(1))

    wait_states(gateway, {"delivered": 1})

    assert sink.count() == 1
    detail = show(gateway, the_queue_id(gateway))
    assert detail["entry"]["recipients"][0]["last_reply"].startswith("250 ")


def test_a_server_that_hangs_up_instead_of_its_final_reply_defers(
        gateway_factory, sqlite_url, smtp_sink_factory) -> None:
    sink = smtp_sink_factory(SmtpSink.DISCONNECT_AFTER_DOT)
    gateway = start_delivering(gateway_factory, sqlite_url, {"example.test": sink.route},
                               delivery=SLOW_RETRY)
    send(gateway, message(1))
    queue_id = the_queue_id(gateway)

    detail = wait_recipient(gateway, queue_id, lambda r: r["state"] == "deferred", "deferred")

    # The outcome is unknown (the server read the dot), so the message waits for a retry.
    rcpt = detail["entry"]["recipients"][0]
    assert rcpt["last_reply"] == "451 4.4.2 connection to 127.0.0.1 lost", rcpt
    assert rcpt["attempts"] == 1
    assert any(f"reply={rcpt['last_reply']}" in d for d in event_details(detail, "deferred"))
    assert sink.count() == 1
    assert not [e for e in queue_json(gateway) if e["sender"] == ""]  # no DSN


def test_a_550_sent_in_the_middle_of_the_data_is_the_servers_verdict(
        gateway_factory, sqlite_url, smtp_sink_factory) -> None:
    """smtp-sink -A: 354, then at once 550 and close, to stop the client before its dot.

    Postfix's own client reads such a premature 5XX after losing the connection inside
    DATA and bounces (smtp_proto.c); the gateway must honour it the same way, every time.
    """
    sink = smtp_sink_factory(SmtpSink.CLOSE_MID_DATA)
    notices = smtp_sink_factory()
    gateway = start_delivering(gateway_factory, sqlite_url, {"example.test": sink.route},
                               delivery=SLOW_RETRY, outbound=notices.route)
    send(gateway, message(1))
    queue_id = the_queue_id(gateway)

    detail = wait_recipient(gateway, queue_id,
                            lambda r: r["state"] in ("deferred", "failed"), "an outcome")

    rcpt = detail["entry"]["recipients"][0]
    assert (rcpt["state"], rcpt["last_reply"]) == ("failed", "550 This violates SMTP"), rcpt
    assert any("reply=550 This violates SMTP" in d for d in event_details(detail, "failed"))
    assert sink.count() == 0  # it never read the message
    assert notices.wait_for(1) == 1  # the failure DSN went out


def test_required_tls_without_starttls_defers_and_sends_nothing(
        gateway_factory, sqlite_url, postfix_downstream) -> None:
    gateway = start_delivering(gateway_factory, sqlite_url,
                               {"example.test": postfix_downstream.route}, delivery=SLOW_RETRY,
                               domain_extra={"example.test": {"tls": "required"}})
    send(gateway, message(1))
    queue_id = the_queue_id(gateway)

    detail = wait_recipient(gateway, queue_id, lambda r: r["state"] == "deferred", "deferred")

    reply = detail["entry"]["recipients"][0]["last_reply"]
    assert reply.startswith("451 4.7.10") and "STARTTLS" in reply, reply
    assert any(f"reply={reply}" in d for d in event_details(detail, "deferred"))
    time.sleep(0.5)  # deferred already; a plaintext copy would have arrived by now
    assert postfix_downstream.count() == 0


def test_required_tls_with_a_certificate_our_ca_did_not_sign_defers(
        gateway_factory, sqlite_url, postfix_downstream_factory) -> None:
    company = postfix_downstream_factory(tls=True)
    stranger = postfix_downstream_factory(tls=True, domains=("elsewhere.test",))
    gateway = start_delivering(
        gateway_factory, sqlite_url, {"example.test": company.route}, delivery=SLOW_RETRY,
        domain_extra={"example.test": {"tls": "required", "tls_ca": str(stranger.ca_file)}})
    send(gateway, message(1))
    queue_id = the_queue_id(gateway)

    detail = wait_recipient(gateway, queue_id, lambda r: r["state"] == "deferred", "deferred")

    reply = detail["entry"]["recipients"][0]["last_reply"]
    assert reply.startswith("451 4.7.5") and "CERTIFICATE_VERIFY_FAILED" in reply, reply
    assert any(f"reply={reply}" in d for d in event_details(detail, "deferred"))
    time.sleep(0.5)  # deferred already; a copy sent anyway would have arrived by now
    assert company.count() == 0


def test_required_tls_with_the_servers_ca_delivers_over_tls(
        gateway_factory, sqlite_url, postfix_downstream_factory) -> None:
    company = postfix_downstream_factory(tls=True)
    gateway = start_delivering(
        gateway_factory, sqlite_url, {"example.test": company.route},
        domain_extra={"example.test": {"tls": "required", "tls_ca": str(company.ca_file)}})
    original = message(1)
    send(gateway, original)

    (arrived,) = company.wait_for(1, timeout=30)

    assert arrived["Message-ID"] == original["Message-ID"]
    received = postfix_received(arrived)
    assert "with ESMTPS" in received, received  # the S: it came over STARTTLS
    assert "TLS connection established from" in company.log_text()
    wait_states(gateway, {"delivered": 1})
    detail = show(gateway, the_queue_id(gateway))
    rcpt = detail["entry"]["recipients"][0]
    assert rcpt["last_reply"].startswith("250 2.0.0")
    assert any(f"reply={rcpt['last_reply']}" in d for d in event_details(detail, "delivered"))


def postfix_received(msg: EmailMessage) -> str:
    """The Received header the downstream Postfix added (the topmost), on one line."""
    return " ".join(str(msg.get_all("Received")[0]).split())
