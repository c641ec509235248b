"""Quarantine end to end: held back from the company's server, released after a rescan."""

from __future__ import annotations

import json

import pytest

from tests.integration.delivery.gateway import (
    message,
    queue_json,
    send,
    show,
    start_delivering,
    wait_states,
)

pytestmark = pytest.mark.integration


def test_quarantined_mail_waits_until_released_then_is_rescanned_and_delivered(
        gateway_factory, store_url, postfix_downstream_factory) -> None:
    postfix_downstream = postfix_downstream_factory(domains=("example.test", "open.test"))
    gateway = start_delivering(
        gateway_factory, store_url,
        {"example.test": postfix_downstream.route, "open.test": postfix_downstream.route},
        domain_extra={"example.test": {"spam_tag": -2.0, "spam_quarantine": -1.0}})
    held = message(1)
    send(gateway, held)
    control = message(2, to="bob@open.test")
    send(gateway, control, recipients=["bob@open.test"])

    # The control message goes through; the quarantined one stays behind.
    postfix_downstream.wait_for(1)
    wait_states(gateway, {"delivered": 1, "quarantined": 1})
    assert postfix_downstream.message_ids() == [control["Message-ID"]]
    listed = json.loads(gateway.cli("quarantine", "list", "--json").stdout)
    assert [e["recipients"][0]["address"] for e in listed] == ["alice@example.test"]
    queue_id = listed[0]["queue_id"]

    released = gateway.cli("quarantine", "release", queue_id)

    assert released.returncode == 0, released.stderr
    assert "after a rescan: action=quarantine" in released.stdout
    postfix_downstream.wait_for(2)
    assert sorted(postfix_downstream.message_ids()) == sorted([control["Message-ID"],
                                                               held["Message-ID"]])
    kinds = [e["kind"] for e in show(gateway, queue_id)["events"]]
    assert kinds[:2] == ["accepted", "scanned"] and "released" in kinds
    assert kinds[-1] == "delivered"
    again = gateway.cli("quarantine", "release", queue_id)
    assert again.returncode == 1 and "not in quarantine" in again.stderr


def test_quarantine_retention_deletes_what_nobody_released(
        gateway_factory, sqlite_url, postfix_downstream) -> None:
    gateway = start_delivering(
        gateway_factory, sqlite_url, {"example.test": postfix_downstream.route},
        domain_extra={"example.test": {"spam_tag": -2.0, "spam_quarantine": -1.0}},
        extra={"scan": {"quarantine_days": 1.0 / 86400}})  # one second
    send(gateway, message(1))

    wait_states(gateway, {"deleted": 1}, timeout=30)

    (entry,) = queue_json(gateway)
    kinds = [e["kind"] for e in show(gateway, entry["queue_id"])["events"]]
    assert kinds[-1] == "expired" and postfix_downstream.count() == 0
