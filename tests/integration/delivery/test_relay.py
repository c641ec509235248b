"""Delivery to the company's server for real: Postfix over SMTP, Dovecot over LMTP."""

from __future__ import annotations

import email
import email.policy

import pytest

from tests.integration.delivery.gateway import message, queue_json, send, show, start_delivering

pytestmark = pytest.mark.integration


def test_messages_reach_postfix_once_and_are_kept_as_delivered(
        gateway_factory, store_url, postfix_downstream) -> None:
    gateway = start_delivering(gateway_factory, store_url,
                               {"example.test": postfix_downstream.route})
    sent = [message(n) for n in range(5)]
    for msg in sent:
        send(gateway, msg)

    arrived = postfix_downstream.wait_for(5, timeout=30)

    assert sorted(m["Message-ID"] for m in arrived) == sorted(m["Message-ID"] for m in sent)
    for msg in arrived:  # our Received header went along, the body is intact
        assert any("by mx.test.example" in r for r in msg.get_all("Received"))
        assert msg.get_content().strip() == "Hello."
    entries = queue_json(gateway, "--state", "delivered")
    assert len(entries) == 5
    detail = show(gateway, entries[0]["queue_id"])
    kinds = [event["kind"] for event in detail["events"]]
    assert kinds[0] == "accepted" and kinds[-1] == "delivered"
    delivered = detail["events"][-1]
    assert f"route={postfix_downstream.route}" in delivered["detail"]
    assert "reply=250 2.0.0" in delivered["detail"]
    assert detail["entry"]["recipients"][0]["attempts"] == 1


def test_several_recipients_of_one_message_go_in_one_transaction(
        gateway_factory, sqlite_url, postfix_downstream) -> None:
    gateway = start_delivering(gateway_factory, sqlite_url,
                               {"example.test": postfix_downstream.route})
    rcpts = ["alice@example.test", "bob@example.test", "carol@example.test"]
    send(gateway, message(1), recipients=rcpts)

    arrived = postfix_downstream.wait_for(3, timeout=30)

    assert sorted(m["Delivered-To"] for m in arrived) == rcpts
    # One transaction: Postfix gave the three copies one queue ID.
    queue_ids = {r.split(" id ")[1].split(";")[0].split()[0]
                 for m in arrived for r in m.get_all("Received") if "downstream.test" in r}
    assert len(queue_ids) == 1, queue_ids


def test_lmtp_replies_per_recipient_and_one_dsn_for_the_one_that_failed(
        gateway_factory, store_url, dovecot_lmtp_factory) -> None:
    dovecot = dovecot_lmtp_factory(
        users=("alice@example.test", "bob@example.test", "carol@example.test",
               "sender@example.test"),
        over_quota=("carol@example.test",))
    gateway = start_delivering(gateway_factory, store_url, {"example.test": dovecot.route})
    original = message(7, sender="sender@example.test", body="x" * 4000 + "\n")
    send(gateway, original, sender="sender@example.test",
         recipients=["alice@example.test", "bob@example.test", "carol@example.test"])

    assert [m["Message-ID"] for m in dovecot.wait_for("alice@example.test", 1)] == \
        [original["Message-ID"]]
    assert [m["Message-ID"] for m in dovecot.wait_for("bob@example.test", 1)] == \
        [original["Message-ID"]]
    notices = dovecot.wait_for("sender@example.test", 1, timeout=30)

    assert dovecot.messages("carol@example.test") == []
    assert len(notices) == 1
    dsn = email.message_from_bytes(notices[0].as_bytes(), policy=email.policy.default)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    status = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    blocks = status.get_payload()
    recipients = [b for b in blocks[1:] if b.get("Final-Recipient")]
    assert len(recipients) == 1
    assert recipients[0]["Final-Recipient"].endswith("carol@example.test")
    assert recipients[0]["Action"] == "failed"
    assert recipients[0]["Status"].startswith("5.")
    assert "Diagnostic-Code" in recipients[0]
    entry = queue_json(gateway, "--state", "failed")
    assert [r["address"] for r in entry[0]["recipients"] if r["state"] == "failed"] == \
        ["carol@example.test"]
