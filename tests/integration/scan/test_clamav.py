"""spoolgate/scan/clamav.py against a real clamd with the offline EICAR test signature."""

from __future__ import annotations

import asyncio
import dataclasses
import email.policy
import io
import json
import smtplib
import time
import zipfile
from collections.abc import Callable
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from spoolgate.intake.rescan import Rescanner
from spoolgate.intake.scanning import Scanning
from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mail.verdict import Findings
from spoolgate.scan.base import ScanRequest
from spoolgate.scan.clamav import ClamavScanner
from spoolgate.scan.pipeline import ScanPipeline
from spoolgate.scan.policy import ScanPolicy
from spoolgate.store.queue import Queue
from spoolgate.store.store import open_store
from tests.clamd import CLAMD_ONLY, DETECTED_AS, EICAR, Clamd
from tests.downstream import SmtpSink
from tests.gateway_process import GatewayProcess, free_port
from tests.integration.delivery.gateway import show, start_delivering, states, wait_states
from tests.integration.store.messages import incoming

pytestmark = pytest.mark.integration

ENVELOPE = Envelope("a@remote.test", (Recipient("b@example.test"),), ClientInfo("192.0.2.1", "h"))


def scan(address: str, data: bytes, budget: float = 10.0, **options: int) -> Findings:
    return asyncio.run(ClamavScanner(address, **options).scan(
        ScanRequest(data, ENVELOPE, "Q1"), budget))


def message_with(payload: bytes, filename: str, subtype: str = "octet-stream") -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@remote.test", "b@example.test", "hi"
    message.set_content("see attachment\n")
    message.add_attachment(payload, maintype="application", subtype=subtype, filename=filename)
    return message.as_bytes()


def zipped(name: str, payload: bytes) -> bytes:
    # Deflated, so the EICAR bytes are not visible in the raw stream: clamd must unzip.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, payload)
    return buffer.getvalue()


def test_eicar_in_a_base64_attachment_is_found(clamd: Clamd) -> None:
    data = message_with(EICAR, "eicar.com")
    assert EICAR not in data  # base64-encoded: clamd has to decode the MIME part
    findings = scan(clamd.address, data)
    assert findings.viruses == (DETECTED_AS,)
    assert findings.error is None and findings.unscannable is None
    assert findings.scanner == "clamav" and findings.seconds > 0


def test_eicar_in_a_zip_attachment_is_found(clamd: Clamd) -> None:
    findings = scan(clamd.address, message_with(zipped("eicar.txt", EICAR), "a.zip", "zip"))
    assert findings.viruses == (DETECTED_AS,) and findings.error is None


def test_eicar_in_a_nested_multipart_is_found(clamd: Clamd) -> None:
    inner = MIMEMultipart("mixed")
    inner.attach(MIMEText("inner text\n"))
    inner.attach(MIMEApplication(EICAR, Name="eicar.bin"))
    alternative = MIMEMultipart("alternative")
    alternative.attach(MIMEText("plain\n"))
    alternative.attach(inner)
    outer = MIMEMultipart("mixed")
    outer["Subject"] = "nested"
    outer.attach(alternative)
    outer.attach(MIMEText("footer\n"))
    findings = scan(clamd.address, outer.as_bytes())
    assert findings.viruses == (DETECTED_AS,) and findings.error is None


def test_a_clean_message_is_clean(clamd: Clamd) -> None:
    findings = scan(clamd.address, message_with(zipped("notes.txt", b"nothing here\n" * 100),
                                                "notes.zip", "zip"))
    assert findings.viruses == () and findings.error is None and findings.unscannable is None


def test_a_message_over_stream_max_is_not_sent_and_is_unscannable(clamd: Clamd) -> None:
    data = message_with(b"x" * 2_000_000, "big.bin")
    findings = scan(clamd.address, data, stream_max=1024 * 1024)
    assert findings.unscannable == "larger than StreamMaxLength"
    assert findings.viruses == () and findings.error is None


def test_clamds_own_size_limit_reply_is_unscannable_never_clean(clamd: Clamd) -> None:
    # The adapter's stream_max (default 25M) is above this clamd's StreamMaxLength (1M).
    findings = scan(clamd.address, message_with(b"x" * 2_000_000, "big.bin"))
    assert findings.viruses == () and findings.error is None
    # clamd answers and closes; whether its reply or the reset of the unread rest reaches
    # us first is a race the machine's load decides. Both mean: not fully scanned.
    assert findings.unscannable in ("clamd: INSTREAM size limit exceeded. ERROR",
                                    "clamd closed the connection before the end of the "
                                    "message (StreamMaxLength?)")


def test_nesting_beyond_max_recursion_is_unscannable_with_alert_exceeds_max(
        start_clamd: Callable[..., Clamd]) -> None:
    daemon = start_clamd(max_recursion=3, max_files=5, alert_exceeds_max=True)
    payload = EICAR
    for depth in range(4):
        payload = zipped(f"level{depth}.zip", payload)
    findings = scan(daemon.address, message_with(payload, "deep.zip", "zip"))
    assert findings.unscannable == "clamd: Heuristics.Limits.Exceeded.MaxRecursion"
    assert findings.viruses == () and findings.error is None

    many = io.BytesIO()
    with zipfile.ZipFile(many, "w", zipfile.ZIP_DEFLATED) as archive:
        for number in range(10):
            archive.writestr(f"file{number}.txt", f"harmless {number}\n")
    findings = scan(daemon.address, message_with(many.getvalue(), "many.zip", "zip"))
    assert findings.unscannable == "clamd: Heuristics.Limits.Exceeded.MaxFiles"


def test_a_stopped_clamd_is_an_error_within_the_budget(
        start_clamd: Callable[..., Clamd]) -> None:
    daemon = start_clamd()
    daemon.stop()
    assert not daemon.ping()
    began = time.monotonic()
    findings = scan(daemon.address, message_with(EICAR, "eicar.com"), budget=2.0)
    assert time.monotonic() - began < 2.0
    assert findings.error is not None and "unreachable" in findings.error
    assert findings.viruses == () and findings.unscannable is None


def test_a_daemon_that_never_answers_is_an_error_within_the_budget() -> None:
    # Stands for a hung clamd: accepts and reads everything but never replies. No real
    # clamd can be made to hang on demand, so a plain asyncio server plays the part.
    async def run() -> tuple[float, Findings, int]:
        received = 0

        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal received
            while chunk := await reader.read(65536):
                received += len(chunk)
            writer.close()

        port = free_port()
        server = await asyncio.start_server(swallow, "127.0.0.1", port)
        async with server:
            began = time.monotonic()
            findings = await ClamavScanner(f"tcp:127.0.0.1:{port}").scan(
                ScanRequest(message_with(EICAR, "eicar.com"), ENVELOPE, "Q1"), 0.5)
            return time.monotonic() - began, findings, received

    elapsed, findings, received = asyncio.run(run())
    assert received > 0  # the request did reach the stand-in daemon
    assert 0.4 <= elapsed < 2.0
    assert findings.error is not None and "did not answer" in findings.error
    assert findings.viruses == () and findings.unscannable is None


def test_ping_answers_for_a_running_clamd(clamd: Clamd) -> None:
    assert asyncio.run(ClamavScanner(clamd.address).ping()) is True
    assert asyncio.run(ClamavScanner(f"tcp:127.0.0.1:{free_port()}").ping(0.5)) is False


def test_without_alert_exceeds_max_clamd_calls_the_hidden_eicar_clean(
        start_clamd: Callable[..., Clamd]) -> None:
    # Why deployments must set AlertExceedsMax: the same deep zip that hides EICAR
    # below MaxRecursion comes back "stream: OK" without it.
    daemon = start_clamd(max_recursion=3, alert_exceeds_max=False)
    payload = EICAR
    for depth in range(4):
        payload = zipped(f"level{depth}.zip", payload)
    findings = scan(daemon.address, message_with(payload, "deep.zip", "zip"))
    assert findings.viruses == () and findings.unscannable is None and findings.error is None


def _eicar_mail() -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@remote.test", "b@example.test", "invoice"
    msg.set_content("See the attachment.")
    msg.add_attachment(EICAR, maintype="application", subtype="octet-stream",
                       filename="invoice.exe")
    return msg.as_bytes(policy=email.policy.SMTP)


def test_a_gateway_with_clamav_refuses_a_virus_in_session_and_tempfails_without_clamd(
        gateway_factory, start_clamd) -> None:
    daemon = start_clamd(alert_exceeds_max=True)
    gateway = gateway_factory(extra={"scan": {"scanners": ["builtin", "clamav"],
                                              "clamav": f"tcp:127.0.0.1:{daemon.port}",
                                              "budget": 5.0}})

    def send(data: bytes) -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as smtp:
            smtp.ehlo("client.test")
            smtp.mail("a@remote.test")
            smtp.rcpt("b@example.test")
            return smtp.data(data)

    assert send(_eicar_mail()) == (550, b"5.7.1 Message rejected by content policy")
    assert "Spoolgate.Test.EICAR" in gateway.log  # the reason is logged, not sent
    assert send(b"Subject: fine\r\n\r\nclean\r\n")[0] == 250
    daemon.stop()
    assert send(b"Subject: fine\r\n\r\nclean\r\n") == (
        451, b"4.7.1 Message could not be scanned now, try again later")


def test_a_scanner_allowed_to_fail_lets_mail_through_marked_for_rescan(
        gateway_factory, start_clamd) -> None:
    daemon = start_clamd()
    gateway = gateway_factory(extra={"scan": {"scanners": ["builtin", "clamav"],
                                              "clamav": f"tcp:127.0.0.1:{daemon.port}",
                                              "rescan_on_error": ["clamav"], "budget": 5.0}})
    daemon.stop()
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("a@remote.test")
        smtp.rcpt("b@example.test")
        assert smtp.data(b"Subject: fine\r\n\r\nclean\r\n")[0] == 250
    (entry,) = json.loads(gateway.cli("queue", "list", "--json").stdout)
    events = json.loads(gateway.cli("queue", "show", entry["queue_id"], "--json").stdout)
    marks = [e["detail"] for e in events["events"] if e["kind"] == "rescan-needed"]
    assert len(marks) == 1 and marks[0].startswith("clamav: ")


def _rescanning_gateway(gateway_factory, sqlite_url: str, daemon: Clamd, sink: SmtpSink,
                        **scan: object) -> GatewayProcess:
    return start_delivering(gateway_factory, sqlite_url, {"example.test": sink.route},
                            extra={"scan": {"scanners": ["builtin", "clamav"],
                                            "clamav": f"tcp:127.0.0.1:{daemon.port}",
                                            "rescan_on_error": ["clamav"], "budget": 5.0,
                                            "rescan_interval": 0.2, **scan}})


def _accepted(gateway: GatewayProcess, data: bytes) -> str:
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("a@remote.test")
        smtp.rcpt("b@example.test")
        code, reply = smtp.data(data)
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[-1]


def _rescanned(gateway: GatewayProcess, queue_id: str) -> list[str]:
    return [e["detail"] for e in show(gateway, queue_id)["events"] if e["kind"] == "rescanned"]


def test_mail_held_while_clamd_is_down_is_rescanned_once_it_is_back(
        gateway_factory, sqlite_url, start_clamd, folder) -> None:
    daemon = start_clamd()
    with SmtpSink(free_port(), folder) as sink:
        gateway = _rescanning_gateway(gateway_factory, sqlite_url, daemon, sink)
        daemon.stop()
        clean = _accepted(gateway, b"Subject: fine\r\n\r\nclean\r\n")
        # Only clamd knows this one: the built-in scanner, which does scan at receipt,
        # would refuse the whole EICAR string at once.
        infected = _accepted(gateway, message_with(CLAMD_ONLY, "readme.txt")
                             .replace(b"\n", b"\r\n"))
        # Nothing to await while clamd is down: the rescanner tries every 0.2 s, and both
        # messages must still be held after several of its rounds.
        time.sleep(1.5)
        assert states(gateway) == {"held": 2}
        assert sink.count() == 0

        daemon.start()

        wait_states(gateway, {"delivered": 1, "quarantined": 1})
        assert sink.count() == 1
        (delivered,) = _rescanned(gateway, clean)
        assert delivered.startswith("delivered after a rescan: action=pass")
        (quarantined,) = _rescanned(gateway, infected)
        assert quarantined.startswith("quarantined after a rescan:")
        assert DETECTED_AS in quarantined


def test_mail_still_unscanned_when_its_hold_is_over_is_delivered_as_scanned_at_receipt(
        gateway_factory, sqlite_url, start_clamd, folder) -> None:
    daemon = start_clamd()
    with SmtpSink(free_port(), folder) as sink:
        gateway = _rescanning_gateway(gateway_factory, sqlite_url, daemon, sink,
                                      rescan_hold_minutes=0.02)  # 1.2 s
        daemon.stop()
        # Three: after the first still fails, a round delivers the others whose hold is
        # over without scanning them again.
        queue_ids = [_accepted(gateway, b"Subject: fine\r\n\r\nclean\r\n") for _ in range(3)]

        wait_states(gateway, {"delivered": 3})

        assert sink.count() == 3
        for queue_id in queue_ids:
            (note,) = _rescanned(gateway, queue_id)
            assert note.startswith("not fully rescanned within 0.02 min (clamav: ")
            assert note.endswith("delivered as scanned at receipt")


def test_a_rescan_round_stops_at_the_first_message_a_hung_clamd_cannot_scan(
        tmp_path) -> None:
    # The hung clamd is the asyncio stand-in of the test above (no real clamd hangs on
    # demand); the store is real. Three held messages, none past its hold: one scan
    # waits out the budget, then the round stops instead of waiting once per message.
    store = open_store(f"sqlite:///{tmp_path / 'spoolgate.db'}")
    marked = (("accepted", "from=<a@remote.test>"), ("rescan-needed", "clamav: down"))
    for _ in range(3):
        store.commit_incoming([dataclasses.replace(
            incoming(["b@example.test"], events=marked), held=True)])

    async def run() -> tuple[float, list]:
        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await reader.read(65536):
                pass
            writer.close()

        port = free_port()
        server = await asyncio.start_server(swallow, "127.0.0.1", port)
        async with server:
            scanning = Scanning(ScanPipeline([ClamavScanner(f"tcp:127.0.0.1:{port}")], 0.5),
                                {"example.test": ScanPolicy(rescan_on_error=frozenset({"clamav"}))})
            rescanner = Rescanner(Queue(store, "node-a"), scanning, hold=600, interval=1)
            began = time.monotonic()
            outcomes = await rescanner.rescan_due()
            return time.monotonic() - began, outcomes

    try:
        elapsed, outcomes = asyncio.run(run())
        assert len(outcomes) == 1 and outcomes[0].state is None
        assert outcomes[0].failing == "clamav: no answer within 0.5s"
        assert elapsed < 1.4  # one budget of 0.5 s, not three
        assert len(Queue(store, "node-a").awaiting_rescan()) == 3  # all still held
    finally:
        store.close()


def test_the_demo_turns_clamav_on_where_clamd_answers(start_clamd, tmp_path) -> None:
    from spoolgate.config import load_settings
    from spoolgate.demo import find_clamd, scan_notices, write_demo_config
    from spoolgate.scan.engines import antivirus_warning

    daemon = start_clamd()
    missing = f"unix:{tmp_path / 'absent.ctl'}"
    assert find_clamd((missing, daemon.address)) == daemon.address
    settings = load_settings(write_demo_config(tmp_path / "demo", daemon.address))
    assert settings.scan.scanners == ("builtin", "clamav")
    assert antivirus_warning(settings) is None
    assert scan_notices(settings, daemon.address) == [
        f"virus scanning: ClamAV (clamd at {daemon.address})"]
