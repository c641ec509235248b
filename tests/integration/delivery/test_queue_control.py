"""The operator's verbs on a live queue, and the two clocks: delay warning and expiry.

The company's Postfix is stopped while mail arrives (connection refused, so every
message waits as deferred), the verb is run through the CLI, then Postfix starts
again and what arrives, and what does not, shows that the verb took effect. A
second Postfix plays the senders' side and receives the DSNs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.downstream import PostfixDownstream, SmtpSink
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

SENDER = "sender@remote.test"
# Nothing is retried by itself during a test: only the verbs make mail due.
NO_RETRY = {"min_backoff": 300.0, "max_backoff": 300.0}
QUICK_RETRY = {"min_backoff": 0.3, "max_backoff": 0.3}


@pytest.fixture
def company(postfix_downstream_factory: Callable[..., PostfixDownstream]) -> PostfixDownstream:
    """The company's Postfix for example.test, down (stopped) until the test starts it."""
    server = postfix_downstream_factory()
    server.stop()
    return server


@pytest.fixture
def senders(postfix_downstream_factory: Callable[..., PostfixDownstream]) -> PostfixDownstream:
    """The senders' server (remote.test), where DSNs arrive."""
    return postfix_downstream_factory(domains=("remote.test",))


def queue_ids(gateway: GatewayProcess, sender: str = SENDER) -> list[str]:
    """Queue IDs of *sender*'s messages, in arrival order."""
    return [e["queue_id"] for e in queue_json(gateway) if e["sender"] == sender]


def recipient(gateway: GatewayProcess, queue_id: str) -> dict:
    (rcpt,) = show(gateway, queue_id)["entry"]["recipients"]
    return rcpt


def event_kinds(gateway: GatewayProcess, queue_id: str) -> list[str]:
    return [event["kind"] for event in show(gateway, queue_id)["events"]]


def cli_ok(gateway: GatewayProcess, *args: str) -> str:
    result = gateway.cli(*args)
    assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
    return result.stdout


def wait_recipient(gateway: GatewayProcess, queue_id: str, done: Callable[[dict], bool],
                   what: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        rcpt = recipient(gateway, queue_id)
        if done(rcpt):
            return rcpt
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s: {rcpt}\n{gateway.log[-3000:]}")
        time.sleep(0.2)



def summary_counts(text: str) -> dict[tuple[str, str], int]:
    """``queue summary`` as {(domain, state): total}; the TOTAL line under ("TOTAL", "")."""
    counts = {}
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "TOTAL":
            counts[("TOTAL", "")] = int(fields[1])
        elif len(fields) > 3 and "." in fields[0]:
            counts[(fields[0], fields[1])] = int(fields[2])
    return counts


def test_a_held_message_stays_while_the_others_arrive_until_it_is_released(
        gateway_factory, store_url, company) -> None:
    gateway = start_delivering(gateway_factory, store_url, {"example.test": company.route},
                               delivery=NO_RETRY)
    sent = [message(n) for n in range(3)]
    for msg in sent:
        send(gateway, msg)
    wait_states(gateway, {"deferred": 3})
    first, held, last = queue_ids(gateway)

    assert cli_ok(gateway, "queue", "hold", held).strip() == "1 recipient(s) put on hold"
    assert recipient(gateway, held)["state"] == "held"
    assert summary_counts(cli_ok(gateway, "queue", "summary")) == {
        ("example.test", "deferred"): 2, ("example.test", "held"): 1, ("TOTAL", ""): 3}

    company.start()
    cli_ok(gateway, "queue", "flush")
    company.wait_for(2, timeout=30)
    wait_states(gateway, {"delivered": 2, "held": 1})
    time.sleep(1.0)  # the others are in; the held one would have come with them

    assert sorted(company.message_ids()) == sorted([sent[0]["Message-ID"], sent[2]["Message-ID"]])
    assert recipient(gateway, held)["state"] == "held"
    assert summary_counts(cli_ok(gateway, "queue", "summary")) == {
        ("example.test", "held"): 1, ("TOTAL", ""): 1}

    assert cli_ok(gateway, "queue", "release", held).strip() == "1 recipient(s) released"
    company.wait_for(3, timeout=30)
    wait_states(gateway, {"delivered": 3})
    assert sorted(company.message_ids()) == sorted(m["Message-ID"] for m in sent)
    kinds = event_kinds(gateway, held)
    assert kinds.index("held") < kinds.index("released") < kinds.index("delivered")
    assert "held" not in event_kinds(gateway, first) + event_kinds(gateway, last)


def test_hold_and_release_by_domain(gateway_factory, sqlite_url, postfix_downstream_factory
                                    ) -> None:
    company = postfix_downstream_factory(domains=("example.test", "other.test"))
    company.stop()
    gateway = start_delivering(gateway_factory, sqlite_url,
                               {"example.test": company.route, "other.test": company.route},
                               delivery={**NO_RETRY, "down_after": 10})
    kept, passing = message(1, to="alice@other.test"), message(2)
    send(gateway, kept, recipients=["alice@other.test"])
    send(gateway, passing)
    wait_states(gateway, {"deferred": 2})

    assert cli_ok(gateway, "queue", "hold", "--domain", "other.test").strip() == \
        "1 recipient(s) put on hold"
    company.start()
    cli_ok(gateway, "queue", "flush")
    company.wait_for(1, timeout=30)
    wait_states(gateway, {"delivered": 1, "held": 1})
    time.sleep(1.0)
    assert company.message_ids() == [passing["Message-ID"]]

    assert cli_ok(gateway, "queue", "release", "--domain", "other.test").strip() == \
        "1 recipient(s) released"
    company.wait_for(2, timeout=30)
    assert sorted(company.message_ids()) == sorted([kept["Message-ID"], passing["Message-ID"]])


def test_a_deleted_message_is_never_delivered(gateway_factory, sqlite_url, company) -> None:
    gateway = start_delivering(gateway_factory, sqlite_url, {"example.test": company.route},
                               delivery=NO_RETRY)
    doomed, kept = message(1), message(2)
    send(gateway, doomed)
    send(gateway, kept)
    wait_states(gateway, {"deferred": 2})
    doomed_id, _ = queue_ids(gateway)

    assert cli_ok(gateway, "queue", "delete", doomed_id).strip() == "1 recipient(s) deleted"
    company.start()
    cli_ok(gateway, "queue", "flush")
    company.wait_for(1, timeout=30)
    wait_states(gateway, {"delivered": 1})
    time.sleep(1.0)  # the kept one is in; the deleted one would have come with it

    assert company.message_ids() == [kept["Message-ID"]]
    # The operator can still see what became of it (and who did it), as for a failed one.
    assert recipient(gateway, doomed_id)["state"] == "deleted"
    assert "deleted" in event_kinds(gateway, doomed_id)
    assert gateway.cli("queue", "delete", doomed_id).returncode == 1  # nothing left to delete


def test_bounce_fails_the_message_now_and_tells_the_sender(
        gateway_factory, sqlite_url, company, senders) -> None:
    # The senders' domain as a second [[domains]] entry: DSNs go to its route.
    gateway = start_delivering(gateway_factory, sqlite_url,
                               {"example.test": company.route, "remote.test": senders.route},
                               delivery=NO_RETRY)
    returned, kept = message(1), message(2)
    send(gateway, returned)
    send(gateway, kept)
    wait_states(gateway, {"deferred": 2})
    returned_id, _ = queue_ids(gateway)
    refused = recipient(gateway, returned_id)["last_reply"]
    assert "Connection refused" in refused, refused

    assert cli_ok(gateway, "queue", "bounce", returned_id).strip() == "1 recipient(s) bounced"
    (notice,) = senders.wait_for(1, timeout=30)

    assert notice["Return-Path"] == "<>" and notice["Delivered-To"] == SENDER
    per_message, (block,) = delivery_report(notice)
    assert returned_id in per_message["X-Spoolgate-Queue-ID"]
    assert block["Final-Recipient"] == "rfc822; alice@example.test"
    assert block["Action"] == "failed"
    assert block["Status"] == "5.0.0"
    assert block["Diagnostic-Code"] == f"smtp; {refused}"  # why it could not be delivered
    back = next(p for p in notice.walk() if p.get_content_type() == "message/rfc822")
    assert back.get_payload(0)["Message-ID"] == returned["Message-ID"]
    rcpt = recipient(gateway, returned_id)
    assert rcpt["state"] == "failed"
    assert rcpt["last_reply"] == "550 5.0.0 message returned to the sender by the postmaster"
    assert "bounced" in event_kinds(gateway, returned_id)

    company.start()
    cli_ok(gateway, "queue", "flush")
    company.wait_for(1, timeout=30)
    wait_states(gateway, {"delivered": 2, "failed": 1})  # kept and the DSN; the bounced one
    time.sleep(1.0)
    assert company.message_ids() == [kept["Message-ID"]]
    assert len(senders.maildir_messages()) == 1  # one DSN, not two


def test_flush_retries_at_once_by_queue_id_and_by_domain(
        gateway_factory, sqlite_url, postfix_downstream_factory) -> None:
    company = postfix_downstream_factory(domains=("example.test", "other.test"))
    company.stop()
    # down_after=10: the route stays up, so only the flush can make mail due.
    gateway = start_delivering(gateway_factory, sqlite_url,
                               {"example.test": company.route, "other.test": company.route},
                               delivery={**NO_RETRY, "down_after": 10})
    by_id, by_domain = message(1), message(2, to="bob@other.test")
    send(gateway, by_id)
    send(gateway, by_domain, recipients=["bob@other.test"])
    wait_states(gateway, {"deferred": 2})
    by_id_qid, _ = queue_ids(gateway)
    for entry in queue_json(gateway):
        assert entry["recipients"][0]["next_attempt_at"] > time.time() + 200  # 300 s backoff
    company.start()

    assert cli_ok(gateway, "queue", "flush", "--domain", "other.test").strip() == \
        "1 recipient(s) made due now"
    company.wait_for(1, timeout=15)
    wait_states(gateway, {"delivered": 1, "deferred": 1})
    time.sleep(1.0)  # the flushed domain is in; the other one stays where it was
    assert company.message_ids() == [by_domain["Message-ID"]]
    assert recipient(gateway, by_id_qid)["state"] == "deferred"

    assert cli_ok(gateway, "queue", "flush", by_id_qid).strip() == "1 recipient(s) made due now"
    company.wait_for(2, timeout=15)
    wait_states(gateway, {"delivered": 2})
    assert recipient(gateway, by_id_qid)["attempts"] == 2


def test_expiry_fails_the_message_with_4_4_7_and_the_last_reply(
        gateway_factory, sqlite_url, smtp_sink_factory, senders) -> None:
    sink = smtp_sink_factory(SmtpSink.SOFT_REJECT_RCPT)
    gateway = start_delivering(gateway_factory, sqlite_url, {"example.test": sink.route},
                               delivery={**QUICK_RETRY, "lifetime": 2}, outbound=senders.route)
    original = message(1)
    send(gateway, original)
    (queue_id,) = queue_ids(gateway)

    rcpt = wait_recipient(gateway, queue_id, lambda r: r["state"] == "failed", "expired")
    (notice,) = senders.wait_for(1, timeout=30)

    assert rcpt["attempts"] >= 2  # it was retried until the lifetime ran out
    assert "expired" in rcpt["last_reply"]
    assert "450 4.3.0 Error: command failed" in rcpt["last_reply"]
    assert "expired" in event_kinds(gateway, queue_id)
    assert notice["Subject"] == "Undelivered Mail Returned to Sender"
    _, (block,) = delivery_report(notice)
    assert block["Action"] == "failed"
    assert block["Status"] == "4.4.7"
    assert block["Diagnostic-Code"] == "smtp; 450 4.3.0 Error: command failed"
    assert "Will-Retry-Until" not in block
    back = next(p for p in notice.walk() if p.get_content_type() == "message/rfc822")
    assert back.get_payload(0)["Message-ID"] == original["Message-ID"]
    time.sleep(1.0)  # failed and notified; nothing more may follow
    assert len(senders.maildir_messages()) == 1
    assert sink.count() == 0


def test_one_delay_notice_however_often_the_message_is_retried(
        gateway_factory, sqlite_url, smtp_sink_factory, senders) -> None:
    sink = smtp_sink_factory(SmtpSink.SOFT_REJECT_RCPT)
    gateway = start_delivering(gateway_factory, sqlite_url, {"example.test": sink.route},
                               delivery={**QUICK_RETRY, "delay_warning": 1},
                               outbound=senders.route)
    send(gateway, message(1))
    (queue_id,) = queue_ids(gateway)

    (notice,) = senders.wait_for(1, timeout=30)
    attempts = recipient(gateway, queue_id)["attempts"]
    rcpt = wait_recipient(gateway, queue_id, lambda r: r["attempts"] >= attempts + 4,
                          "four more attempts")

    assert rcpt["state"] in ("deferred", "delivering")
    assert notice["Subject"] == "Delayed Mail (still being retried)"
    _, (block,) = delivery_report(notice)
    assert block["Final-Recipient"] == "rfc822; alice@example.test"
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.3.0"
    assert block["Will-Retry-Until"]
    assert "text/rfc822-headers" in [p.get_content_type() for p in notice.walk()]
    time.sleep(0.5)  # a second notice from those retries would be on its way now
    assert len(senders.maildir_messages()) == 1
    assert len(queue_ids(gateway, sender="")) == 1


def test_every_waiting_message_gets_its_delay_notice_while_the_route_is_down(
        gateway_factory, sqlite_url, connection_counter, senders) -> None:
    # down_after=1: the first refusal takes the route down; from then on one probe a second
    # tries the oldest message and the others wait for it without a connection of their own.
    gateway = start_delivering(
        gateway_factory, sqlite_url, {"example.test": connection_counter.route},
        delivery={"min_backoff": 1.0, "max_backoff": 1.0, "down_after": 1, "delay_warning": 1},
        outbound=senders.route)
    for number in range(3):
        send(gateway, message(number))
    waiting = set(queue_ids(gateway))

    senders.wait_for(1, timeout=30)
    probes = connection_counter.count
    connection_counter.wait_for(probes + 4, timeout=30)  # four more probe periods

    # Each of the three has waited longer than delay_warning through several retry
    # times (probe or postponement): each sender is told, as Postfix's qmgr would.
    told = {delivery_report(n)[0]["X-Spoolgate-Queue-ID"] for n in senders.maildir_messages()}
    assert told == waiting, f"delay notices for {len(told)} of {len(waiting)} messages"
    assert all(recipient(gateway, q)["state"] in ("deferred", "delivering") for q in waiting)
