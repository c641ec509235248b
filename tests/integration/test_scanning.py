"""Scanning before the 250, on a real gateway: reject, tag and quarantine by domain policy."""

from __future__ import annotations

import base64
import io
import json
import smtplib
import sqlite3
import zipfile

import pytest

from spoolgate.scan.builtin import GTUBE
from spoolgate.scan.signatures import EICAR
from spoolgate.store.store import open_store

pytestmark = pytest.mark.integration

HEADERS = (b"From: a@remote.test\r\nTo: b@example.test\r\nMessage-ID: <1@remote.test>\r\n"
           b"Date: Sun, 29 Nov 2026 06:00:00 +0000\r\n")
CLEAN = HEADERS + b"Subject: hello\r\n\r\nHello.\r\n"
SPAM = HEADERS + b"Subject: offer\r\n\r\n" + GTUBE + b"\r\n"


def _send(gateway, data: bytes, rcpts=("b@example.test",),
          sender: str = "a@remote.test") -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        smtp.mail(sender)
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


def _stored(gateway, queue_id: str) -> bytes:
    store = open_store(gateway.store_url)
    try:
        data = store.message_data(queue_id)
    finally:
        store.close()
    assert data is not None
    return data


def test_spf_dmarc_results_are_written_and_forged_results_removed(gateway_factory,
                                                                  loopback_dns) -> None:
    host, port = loopback_dns.address
    loopback_dns.add('remote.test. 60 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"\n'
                     'good.test. 60 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"\n'
                     '_dmarc.remote.test. 60 IN TXT "v=DMARC1; p=reject"\n')
    gateway = gateway_factory(extra={"scan": {"authentication": True},
                                     "dns": {"nameservers": [f"{host}:{port}"], "timeout": 2}})
    forged = (b"Authentication-Results: MX.test.example; spf=pass smtp.mailfrom=remote.test\r\n"
              b"Authentication-Results: other.example; dkim=pass header.d=remote.test\r\n")
    # 127.0.0.1 is not in remote.test's SPF record and its DMARC policy is reject: refused.
    assert _send(gateway, forged + CLEAN) == (550, b"5.7.1 Message rejected by content policy")
    # good.test authorises this client: stored with our results, the forged one removed.
    good = CLEAN.replace(b"a@remote.test", b"a@good.test")
    assert _send(gateway, forged + good, sender="a@good.test")[0] == 250
    (entry,) = _queue(gateway)
    stored = _stored(gateway, entry["queue_id"])
    head = stored.split(b"\r\n\r\n")[0]
    ours = [h for h in head.split(b"\r\nAuthentication-Results:")[1:] if b"mx.test.example" in h]
    assert len(ours) == 1 and b"spf=pass smtp.mailfrom=good.test" in ours[0]
    assert b"MX.test.example; spf=pass" not in stored
    assert b"Authentication-Results: other.example; dkim=pass" in stored
    questions = {name.lower().rstrip(".") for name, _ in loopback_dns.queries}
    assert {"remote.test", "_dmarc.remote.test", "good.test"} <= questions


def test_block_and_allow_lists_and_the_subject_tag(gateway_factory) -> None:
    gateway = gateway_factory(domains=[{
        "name": "example.test", "route": "smtp://127.0.0.1:2526", "spam_tag": 0.5,
        "spam_subject_prefix": "[SPAM]", "block_senders": ["spammer.test"],
        "allow_senders": ["partner.test"]}])
    no_date = CLEAN.replace(b"Date: Sun, 29 Nov 2026 06:00:00 +0000\r\n", b"")  # scores 1
    assert _send(gateway, no_date, sender="x@mail.spammer.test")[0] == 550
    assert _send(gateway, no_date, sender="x@partner.test")[0] == 250
    assert _send(gateway, no_date)[0] == 250
    allowed, tagged = (_stored(gateway, e["queue_id"]) for e in _queue(gateway))
    assert b"Subject: hello\r\n" in allowed and b"X-Spam" not in allowed
    assert b"Subject: [SPAM] hello\r\n" in tagged and b"tests=MISSING_DATE" in tagged
    assert "sender on the block list (spammer.test)" in gateway.log


def test_dangerous_attachments_and_oversized_structures(gateway_factory) -> None:
    gateway = gateway_factory()
    exe = (HEADERS + b"Subject: invoice\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
           b"Content-Type: application/pdf\r\n"
           b"Content-Disposition: attachment; filename=\"invoice.pdf.exe\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n")
    assert _send(gateway, exe) == (550, b"5.7.1 Message rejected by content policy")
    # More parts than the parser inspects: not clean, so quarantined (the default).
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(1_200))
    many = HEADERS + (b"Subject: parts\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
                      + parts + b"--b--\r\n")
    assert _send(gateway, many)[0] == 250
    (entry,) = _queue(gateway)
    assert [r["state"] for r in entry["recipients"]] == ["quarantined"]
    events = json.loads(gateway.cli("queue", "show", entry["queue_id"], "--json").stdout)
    (scanned,) = [e["detail"] for e in events["events"] if e["kind"] == "scanned"]
    assert "action=quarantine" in scanned and "exceeds what is inspected" in scanned


def test_gtube_hidden_in_base64_is_found_through_the_one_parse(gateway_factory) -> None:
    gateway = gateway_factory()
    encoded = base64.encodebytes(b"Dear friend,\r\n" + GTUBE + b"\r\n").replace(b"\n", b"\r\n")
    data = (HEADERS + b"Subject: b64\r\nContent-Type: text/plain\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded)
    assert GTUBE not in data
    assert _send(gateway, data)[0] == 550


def _zipped_eicar() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("eicar.txt", EICAR)
    encoded = base64.encodebytes(buffer.getvalue()).replace(b"\n", b"\r\n")
    return (HEADERS + b"Subject: test file\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: text/plain\r\n\r\nthe scanner test\r\n--b\r\n"
            b"Content-Type: application/zip\r\n"
            b"Content-Disposition: attachment; filename=\"test.zip\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--b--\r\n")


def test_eicar_is_a_virus_with_no_daemon_rejected_or_quarantined_per_domain(
        gateway_factory) -> None:
    gateway = gateway_factory(domains=[
        {"name": "example.test", "route": "smtp://127.0.0.1:2526"},
        {"name": "keep.test", "route": "smtp://127.0.0.1:2526", "virus": "quarantine",
         "allow_senders": ["remote.test"]}])
    data = _zipped_eicar()
    assert EICAR not in data
    assert _send(gateway, data) == (550, b"5.7.1 Message rejected by content policy")
    assert "virus Eicar-Test-Signature" in gateway.log and "EICAR_TEST_FILE" in gateway.log
    assert _queue(gateway) == []
    # A domain that quarantines viruses keeps it, even from a sender on its allow list.
    assert _send(gateway, data.replace(b"b@example.test", b"b@keep.test"),
                 rcpts=("b@keep.test",))[0] == 250
    (entry,) = _queue(gateway)
    assert [r["state"] for r in entry["recipients"]] == ["quarantined"]
    events = json.loads(gateway.cli("queue", "show", entry["queue_id"], "--json").stdout)
    (scanned,) = [e["detail"] for e in events["events"] if e["kind"] == "scanned"]
    assert "action=quarantine" in scanned and "viruses=Eicar-Test-Signature" in scanned
    # Half of the string, as a sentence quoting it would hold, passes.
    half = HEADERS + b"Subject: about EICAR\r\n\r\nIt starts " + EICAR[:34] + b"\r\n"
    assert _send(gateway, half)[0] == 250


def test_a_store_outage_while_scanning_is_a_452_in_one_log_line(gateway_factory) -> None:
    gateway = gateway_factory()
    database = sqlite3.connect(gateway.store_url.removeprefix("sqlite:///"), timeout=30)
    # The built-in Bayes classifier reads its statistics from the store on every message.
    database.execute("ALTER TABLE bayes_totals RENAME TO bayes_totals_away")
    database.commit()
    try:
        assert _send(gateway, CLEAN) == (452, b"4.3.1 Insufficient system storage, "
                                              b"try again later")
    finally:
        database.execute("ALTER TABLE bayes_totals_away RENAME TO bayes_totals")
        database.commit()
        database.close()
    assert _queue(gateway) == []
    failures = [line for line in gateway.log.splitlines() if "store failure" in line]
    assert len(failures) == 1 and "while scanning, answered 452 4.3.1" in failures[0]
    assert "crashed" not in gateway.log and "Traceback" not in gateway.log
    assert _send(gateway, CLEAN)[0] == 250  # the store is back: so is the mail


def _zip_with_exe() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("invoice.exe", b"MZ" + b"\x00" * 64)
    return buffer.getvalue()


def _alternative_inside_mixed(outer: bytes, inner: bytes) -> bytes:
    """The malware message of issue 14: text and HTML in a multipart/alternative, then a
    zip holding an .exe, all in a multipart/mixed."""
    attachment = base64.encodebytes(_zip_with_exe()).replace(b"\n", b"\r\n")
    return (HEADERS + b"Subject: your invoice\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="' + outer + b'"\r\n\r\n'
            b"--" + outer + b"\r\n"
            b'Content-Type: multipart/alternative; boundary="' + inner + b'"\r\n\r\n'
            b"--" + inner + b"\r\nContent-Type: text/plain\r\n\r\nSee the invoice.\r\n"
            b"--" + inner + b"\r\nContent-Type: text/html\r\n\r\n<p>See the invoice.</p>\r\n"
            b"--" + inner + b"--\r\n"
            b"--" + outer + b"\r\n"
            b'Content-Type: application/zip; name="invoice.zip"\r\n'
            b'Content-Disposition: attachment; filename="invoice.zip"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + attachment +
            b"--" + outer + b"--\r\n")


def test_an_inner_multipart_reusing_the_outer_boundary_is_quarantined_not_passed(
        gateway_factory) -> None:
    gateway = gateway_factory()
    # With its own boundary the zip is seen and the .exe in it refused.
    assert _send(gateway, _alternative_inside_mixed(b"B-outer", b"B-inner"))[0] == 550
    # Reusing the outer boundary hides the zip from Python's parser (Dovecot and mail apps
    # still list it): the structure is ambiguous, so unscannable, so quarantined.
    assert _send(gateway, _alternative_inside_mixed(b"B-outer", b"B-outer"))[0] == 250
    (entry,) = _queue(gateway)
    assert [r["state"] for r in entry["recipients"]] == ["quarantined"]
    events = json.loads(gateway.cli("queue", "show", entry["queue_id"], "--json").stdout)
    (scanned,) = [e["detail"] for e in events["events"] if e["kind"] == "scanned"]
    assert scanned.startswith("action=quarantine") and "boundary-reused" in scanned
