"""``spoolgate queue list|show`` against a running gateway's store, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import smtplib
from collections.abc import Callable

import pytest

from spoolgate.mail.queueid import is_queue_id, new_queue_id
from tests.gateway_process import GatewayProcess

pytestmark = pytest.mark.integration

DOMAINS = [{"name": "example.test", "route": "smtp://127.0.0.1:2526"},
           {"name": "other.test", "route": "smtp://127.0.0.1:2527"}]
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def _send(port: int, sender: str, recipients: list[tuple[str, list[str]]], body: bytes,
          mail_options: list[str] | None = None) -> str:
    """One SMTP transaction; return the queue ID from the 250 reply."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.src.test", timeout=30) as smtp:
        smtp.ehlo()
        assert smtp.mail(sender, mail_options or [])[0] == 250
        for address, options in recipients:
            assert smtp.rcpt(address, options)[0] == 250
        code, reply = smtp.data(body)
    assert code == 250, reply
    queue_id = re.fullmatch(rb"2\.0\.0 Ok: queued as (\S+)", reply).group(1).decode()
    assert is_queue_id(queue_id)
    return queue_id


def _ok(gateway: GatewayProcess, *args: str) -> str:
    done = gateway.cli(*args)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def test_queue_list_and_show(gateway_factory: Callable[..., GatewayProcess], store_url: str) -> None:
    gateway = gateway_factory(store_url, domains=DOMAINS)
    assert _ok(gateway, "queue", "list") == "Mail queue is empty\n"
    assert json.loads(_ok(gateway, "queue", "list", "--json")) == []

    first = _send(gateway.port, "alice@src.test",
                  [("u1@example.test", ["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;u1@example.test"]),
                   ("u2@Other.Test", [])],  # stored as u2@other.test
                  b"Subject: one\r\n\r\nfirst\r\n", ["RET=HDRS", "ENVID=env-1"])
    second = _send(gateway.port, "", [("u3@example.test", [])], b"Subject: two\r\n\r\nsecond\r\n")

    # Text, as postqueue -p prints it: header, one block per message, oldest first.
    text = _ok(gateway, "queue", "list")
    lines = text.splitlines()
    assert lines[0].startswith("-Queue ID-") and "-Sender/Recipient-" in lines[0]
    assert re.search(rf"^{first} +\d+ {TIME} +alice@src\.test$", text, re.M)
    assert re.search(rf"^{second} +\d+ {TIME} +<>$", text, re.M)
    assert text.index(first) < text.index(second)
    assert re.search(r"^ +u1@example\.test \[queued\]$", text, re.M)
    assert re.search(r"^ +u2@other\.test \[queued\]$", text, re.M)
    assert re.search(r"^ +u3@example\.test \[queued\]$", text, re.M)
    assert lines[-1] == "-- 2 message(s)"

    listed = json.loads(_ok(gateway, "queue", "list", "--json"))
    assert [e["queue_id"] for e in listed] == [first, second]
    head = listed[0]
    assert set(head) == {"queue_id", "received_at", "sender", "size", "recipients"}
    assert re.fullmatch(TIME, head["received_at"])
    assert head["sender"] == "alice@src.test"
    assert head["size"] > len(b"Subject: one\r\n\r\nfirst\r\n")  # plus our Received: header
    assert [{k: r[k] for k in ("address", "state", "attempts", "last_reply", "notify", "orcpt")}
            for r in head["recipients"]] == [
        {"address": "u1@example.test", "state": "queued", "attempts": 0, "last_reply": None,
         "notify": "DELAY,FAILURE", "orcpt": "rfc822;u1@example.test"},
        {"address": "u2@other.test", "state": "queued", "attempts": 0, "last_reply": None,
         "notify": None, "orcpt": None}]
    assert listed[1]["sender"] == ""
    assert [r["address"] for r in listed[1]["recipients"]] == ["u3@example.test"]

    assert [e["queue_id"] for e in json.loads(
        _ok(gateway, "queue", "list", "--json", "--state", "queued"))] == [first, second]
    assert _ok(gateway, "queue", "list", "--state", "deferred") == "Mail queue is empty\n"
    by_domain = json.loads(_ok(gateway, "queue", "list", "--json", "--domain", "OTHER.test"))
    assert [e["queue_id"] for e in by_domain] == [first]
    assert len(by_domain[0]["recipients"]) == 2
    assert second not in _ok(gateway, "queue", "list", "--domain", "other.test")
    assert _ok(gateway, "queue", "list", "--domain", "nowhere.test") == "Mail queue is empty\n"
    limited = _ok(gateway, "queue", "list", "--limit", "1")
    assert first in limited and second not in limited and "(limit 1)" in limited

    shown = _ok(gateway, "queue", "show", first)
    assert f"Queue ID:   {first}\n" in shown
    assert re.search(rf"^Arrived:    {TIME} on test$", shown, re.M)
    assert "Client:     [127.0.0.1] helo=client.src.test\n" in shown
    assert "Sender:     <alice@src.test>\n" in shown
    assert "DSN:        ret=HDRS envid=env-1\n" in shown
    assert ("  u1@example.test  state=queued attempts=0 notify=DELAY,FAILURE "
            "orcpt=rfc822;u1@example.test\n") in shown
    assert "  u2@other.test  state=queued attempts=0 notify=- orcpt=-\n" in shown
    assert re.search(rf"^Events:\n  {TIME} test accepted: from=<alice@src\.test> .*nrcpt=2",
                     shown, re.M)

    detail = json.loads(_ok(gateway, "queue", "show", second, "--json"))
    assert detail["entry"]["queue_id"] == second
    assert detail["entry"]["sender"] == ""
    assert [(r["address"], r["state"], r["attempts"]) for r in detail["entry"]["recipients"]] == [
        ("u3@example.test", "queued", 0)]
    assert (detail["client_ip"], detail["helo"], detail["node"]) == (
        "127.0.0.1", "client.src.test", "test")
    assert (detail["ret"], detail["envid"], detail["smtputf8"]) == (None, None, False)
    # Accepted, and scanned before the 250 by the default built-in scanner.
    assert [e["kind"] for e in detail["events"]] == ["accepted", "scanned"]
    assert "from=<>" in detail["events"][0]["detail"]
    assert detail["events"][1]["detail"].startswith("action=pass score=1.5 ")  # no Date, no ID
    assert detail["events"][0]["at"] == detail["entry"]["received_at"]


def test_queue_show_of_an_unknown_or_malformed_id_fails(
        gateway_factory: Callable[..., GatewayProcess], store_url: str) -> None:
    gateway = gateway_factory(store_url, domains=DOMAINS)
    _send(gateway.port, "alice@src.test", [("u1@example.test", [])], b"Subject: x\r\n\r\nx\r\n")

    unknown = new_queue_id()
    missing = gateway.cli("queue", "show", unknown)
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr == f"spoolgate: no message {unknown} in the store\n"

    for bad in ("not-a-queue-id", unknown.lower(), unknown + "X"):
        malformed = gateway.cli("queue", "show", bad, "--json")
        assert malformed.returncode == 1
        assert malformed.stdout == ""
        assert malformed.stderr == f"spoolgate: {bad!r} is not a queue ID\n"
