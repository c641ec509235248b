"""Scanning before the 250, on a real gateway: reject, tag and quarantine by domain policy."""

from __future__ import annotations

import json
import smtplib

import pytest

from spoolgate.scan.builtin import GTUBE
from spoolgate.store.store import open_store

pytestmark = pytest.mark.integration

CLEAN = b"From: a@remote.test\r\nTo: b@example.test\r\nSubject: hello\r\n\r\nHello.\r\n"
SPAM = b"From: a@remote.test\r\nTo: b@example.test\r\nSubject: offer\r\n\r\n" + GTUBE + b"\r\n"


def _send(gateway, data: bytes, rcpts=("b@example.test",)) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("a@remote.test")
        for rcpt in rcpts:
            assert smtp.rcpt(rcpt)[0] == 250
        return smtp.data(data)


def _queue(gateway) -> list[dict]:
    return json.loads(gateway.cli("queue", "list", "--json").stdout)


def test_gtube_is_refused_in_session_and_never_stored(gateway_factory) -> None:
    gateway = gateway_factory()
    code, text = _send(gateway, SPAM)
    assert (code, text) == (550, b"5.7.1 Message rejected by content policy")
    assert _queue(gateway) == []
    assert "reject: 550 5.7.1" in gateway.log and "GTUBE(1000)" in gateway.log
    # The same session shape with a clean message is stored, with its scan in the events.
    assert _send(gateway, CLEAN)[0] == 250
    (entry,) = _queue(gateway)
    events = json.loads(gateway.cli("queue", "show", entry["queue_id"], "--json").stdout)
    scanned = [e for e in events["events"] if e["kind"] == "scanned"]
    assert len(scanned) == 1 and scanned[0]["detail"].startswith("action=pass score=0")


def test_a_domain_policy_can_tag_or_quarantine_instead(gateway_factory) -> None:
    gateway = gateway_factory(domains=[
        {"name": "example.test", "route": "smtp://127.0.0.1:2526", "spam_tag": 0.0},
        {"name": "strict.test", "route": "smtp://127.0.0.1:2526", "spam_tag": -1.0,
         "spam_quarantine": 0.0}])
    assert _send(gateway, CLEAN)[0] == 250
    assert _send(gateway, CLEAN.replace(b"example.test", b"strict.test"),
                 rcpts=("b@strict.test",))[0] == 250
    # A message to both domains takes the stricter policy: quarantine.
    assert _send(gateway, CLEAN, rcpts=("b@example.test", "c@strict.test"))[0] == 250

    entries = _queue(gateway)
    states = [[r["state"] for r in e["recipients"]] for e in entries]
    assert states == [["queued"], ["quarantined"], ["quarantined", "quarantined"]]
    store = open_store(gateway.store_url)
    try:
        tagged = store.message_data(entries[0]["queue_id"])
        plain = store.message_data(entries[1]["queue_id"])
    finally:
        store.close()
    assert b"\r\nX-Spam-Score: 0\r\nX-Spam-Status: Yes, score=0 tests=none\r\n" in tagged
    assert b"X-Spam-Status: Yes" in plain  # quarantined mail carries its verdict too


def test_scanning_can_be_switched_off(gateway_factory) -> None:
    gateway = gateway_factory(extra={"scan": {"scanners": []}})
    assert _send(gateway, SPAM)[0] == 250
    (entry,) = _queue(gateway)
    detail = json.loads(gateway.cli("queue", "show", entry["queue_id"], "--json").stdout)
    assert [e["kind"] for e in detail["events"]] == ["accepted"]
