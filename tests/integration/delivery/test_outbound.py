"""Mail for domains we do not serve (DSNs to senders): direct MX delivery and retention."""

from __future__ import annotations

import email
import email.policy
import time

import pytest

from tests.integration.delivery.gateway import (
    message,
    queue_json,
    send,
    start_delivering,
    wait_states,
)

pytestmark = pytest.mark.integration


def test_a_failure_notice_goes_to_the_senders_mx_found_through_the_configured_resolver(
        gateway_factory, sqlite_url, postfix_downstream_factory, loopback_dns) -> None:
    company = postfix_downstream_factory(recipients={"example.test": ["alice"]})
    senders_mx = postfix_downstream_factory(domains=("remote.test",))
    loopback_dns.add("remote.test. 300 IN MX 10 mx.remote.test.\n"
                     "mx.remote.test. 300 IN A 127.0.0.1\n")
    gateway = start_delivering(
        gateway_factory, sqlite_url, {"example.test": company.route},
        extra={"outbound": {"route": "mx", "mx_port": senders_mx.port, "tls": "none",
                            "allow_private_mx": True},  # the test MX is on loopback
               "dns": {"nameservers": [f"127.0.0.1:{loopback_dns.port}"], "timeout": 2.0}})
    # The company's Postfix knows only alice: bob gets 550 5.1.1 at RCPT.
    send(gateway, message(1), recipients=["bob@example.test"])

    notices = senders_mx.wait_for(1, timeout=30)

    dsn = email.message_from_bytes(notices[0].as_bytes(), policy=email.policy.default)
    assert dsn["To"] == "sender@remote.test"
    status = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    block = status.get_payload()[1]
    assert block["Final-Recipient"].endswith("bob@example.test")
    assert block["Action"] == "failed" and block["Status"] == "5.1.1"
    assert ("remote.test.", "MX") in loopback_dns.queries
    # The notice itself went from the null sender and is now delivered.
    notice = [e for e in queue_json(gateway) if e["sender"] == ""]
    assert notice and notice[0]["recipients"][0]["state"] == "delivered"


def test_by_default_a_notice_is_never_sent_to_an_mx_on_a_private_address(
        gateway_factory, sqlite_url, postfix_downstream_factory, loopback_dns) -> None:
    company = postfix_downstream_factory(recipients={"example.test": ["alice"]})
    internal = postfix_downstream_factory(domains=("remote.test",))
    # The sender's domain points its MX at an address inside our network.
    loopback_dns.add("remote.test. 300 IN MX 10 mx.remote.test.\n"
                     "mx.remote.test. 300 IN A 127.0.0.1\n")
    gateway = start_delivering(
        gateway_factory, sqlite_url, {"example.test": company.route},
        extra={"outbound": {"route": "mx", "mx_port": internal.port, "tls": "none"},
               "dns": {"nameservers": [f"127.0.0.1:{loopback_dns.port}"], "timeout": 2.0}})
    send(gateway, message(1), recipients=["bob@example.test"])

    wait_states(gateway, {"failed": 2})  # bob, then the notice itself

    (notice,) = [e for e in queue_json(gateway) if e["sender"] == ""]
    assert notice["recipients"][0]["last_reply"].startswith("554 5.4.4")
    assert internal.count() == 0
    assert ("remote.test.", "MX") in loopback_dns.queries


def test_delivered_mail_is_kept_for_the_retention_window_then_purged(
        gateway_factory, store_url, postfix_downstream) -> None:
    retention_seconds = 2.0
    gateway = start_delivering(gateway_factory, store_url,
                               {"example.test": postfix_downstream.route},
                               delivery={"retention_days": retention_seconds / 86400,
                                         "purge_interval": 0.3})
    send(gateway, message(1))
    postfix_downstream.wait_for(1)
    wait_states(gateway, {"delivered": 1})
    delivered_at = time.monotonic()
    # Still readable right after delivery...
    assert [r["state"] for e in queue_json(gateway) for r in e["recipients"]] == ["delivered"]
    # ...and gone once the window is over.
    deadline = delivered_at + retention_seconds + 15
    while queue_json(gateway) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert queue_json(gateway) == []
    assert time.monotonic() - delivered_at >= retention_seconds * 0.9
