"""Every message of the shared corpus, sent over SMTP to one gateway.

About 6,000 real messages (spam, ham, MIME torture, malformed headers, NUL
bytes, 3 MB nesting bombs) go through a few long-lived sessions, with line
endings turned into CRLF as a real MTA would. Each must get a 250 or a
refusal with an enhanced status code, the one an independent reading of the
file predicts; the sessions never break, the gateway survives, and the store
holds exactly the accepted messages, byte for byte behind our Received header.
A few files sent raw, with their bare LFs, must be refused with 550 5.5.2.
"""

from __future__ import annotations

import queue
import re
import smtplib
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from spoolgate.store.store import open_store
from tests.gateway_process import GatewayProcess

pytestmark = pytest.mark.integration

SESSIONS = 8
MAX_ERRORS = 20
MAX_LINE = 1000  # with its CRLF (RFC 5321 4.5.3.1.6), the gateway's default
SENDER = "<corpus@src.test>"
RECIPIENT = "<user@example.test>"
QUEUED = re.compile(r"^2\.0\.0 Ok: queued as ([0-9A-Z]{14})$")
ENHANCED = re.compile(r"^([45])\.\d{1,3}\.\d{1,3} ")
BARE_CR = re.compile(rb"\r(?!\n)")
RECEIVED = re.compile(rb"^received[ \t]*:", re.IGNORECASE | re.MULTILINE)

# Files in the corpus that are not messages (SOURCES.md): lists, labels, licences,
# TNEF blobs and their attachment lists, DNS records and verdicts of the DKIM cases,
# expected canonicalisations and notes, public keys and the HTML/text of the rendering tests.
NOT_MESSAGE_SUFFIXES = {".md", ".csv", ".json", ".tnef", ".list", ".dns", ".result", ".error",
                        ".readme", ".pub", ".html"}
NOT_MESSAGE_PATTERNS = ("LICENSE", "*/LICENSE", "flanker/*.txt", "xss/payloads.txt",
                        "csdmc2010/README-corpus.txt", "mimekit/text/*",
                        "flanker/messages/dkim/*.expected.*", "flanker/messages/dkim/purpose.*",
                        "flanker/messages/dkim/README")


def is_message(path: Path, corpus: Path) -> bool:
    relative = path.relative_to(corpus)
    if path.suffix in NOT_MESSAGE_SUFFIXES:
        return False
    if any(relative.match(pattern) for pattern in NOT_MESSAGE_PATTERNS):
        return False
    return path.stat().st_size > 0  # flanker's dkim/email.01 is an empty file, not a message


def message_files(corpus: Path) -> list[Path]:
    return [path for path in sorted(corpus.rglob("*"))
            if path.is_file() and is_message(path, corpus)]


def without_mbox_line(data: bytes) -> bytes:
    """Drop the mbox ``From `` envelope line the SpamAssassin and mbox files begin with."""
    return data.split(b"\n", 1)[1] if data.startswith(b"From ") and b"\n" in data else data


def as_sent(data: bytes) -> bytes:
    """What an MTA sends: CRLF line endings, ending with CRLF (smtplib then dot-stuffs)."""
    data = re.sub(rb"\r?\n", b"\r\n", without_mbox_line(data))
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def expected_reply(sent: bytes) -> str:
    """The reply the gateway's rules call for, worked out from the bytes alone."""
    if BARE_CR.search(sent):
        return "550 5.5.2"
    if max(map(len, sent.split(b"\r\n"))) + 2 > MAX_LINE:
        return "500 5.5.2"
    headers = sent.split(b"\r\n\r\n", 1)[0] if not sent.startswith(b"\r\n") else b""
    if len(RECEIVED.findall(headers)) > 50:
        return "554 5.4.6"
    return "250 2.0.0"


@dataclass
class Result:
    path: Path
    code: int
    text: str
    sent: bytes

    @property
    def queue_id(self) -> str | None:
        match = QUEUED.match(self.text) if self.code == 250 else None
        return match.group(1) if match else None


class Session:
    """One client connection that sends many messages and reconnects before the error budget."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._smtp: smtplib.SMTP | None = None
        self._errors = 0

    def send(self, data: bytes) -> tuple[int, str]:
        if self._smtp is None or self._errors >= MAX_ERRORS - 1:
            self.close()
            self._smtp = smtplib.SMTP("127.0.0.1", self._port, local_hostname="corpus.test",
                                      timeout=60)
            self._smtp.ehlo()
            self._errors = 0
        options = ["BODY=8BITMIME"] if any(b > 127 for b in data) else []
        for command in (lambda: self._smtp.mail(SENDER, options),
                        lambda: self._smtp.rcpt(RECIPIENT)):
            code, text = command()
            if code != 250:
                raise AssertionError(f"envelope refused: {code} {text!r}")
        code, text = self._smtp.data(data)
        if code >= 400:
            self._errors += 1
        return code, text.decode("utf-8", "replace")

    def close(self) -> None:
        if self._smtp is not None:
            self._smtp.quit()
            self._smtp = None


def send_all(port: int, work: queue.Queue[Path], results: list[Result], errors: list[str]) -> None:
    session = Session(port)
    try:
        while True:
            try:
                path = work.get_nowait()
            except queue.Empty:
                break
            sent = as_sent(path.read_bytes())
            code, text = session.send(sent)
            results.append(Result(path, code, text, sent))
        session.close()
    except Exception as error:  # the test asserts that there were none
        errors.append(f"session broke: {error!r}")


def send_raw(port: int, files: list[Path]) -> list[tuple[Path, int, str]]:
    """Send *files* with their bare LFs, as a broken client would; then check the session lives."""
    replies = []
    with smtplib.SMTP("127.0.0.1", port, local_hostname="raw.corpus.test", timeout=60) as smtp:
        smtp.ehlo()
        for path in files:
            assert smtp.mail(SENDER, ["BODY=8BITMIME"])[0] == 250
            assert smtp.rcpt(RECIPIENT)[0] == 250
            code, text = smtp.data(without_mbox_line(path.read_bytes()))
            replies.append((path, code, text.decode("utf-8", "replace")))
        assert smtp.noop()[0] == 250
    return replies


def test_every_corpus_message_is_stored_or_properly_refused(
        corpus: Path, gateway_factory: Callable[..., GatewayProcess]) -> None:
    # Content verdicts are not predictable from an independent reading of the file, so this
    # SMTP test runs without scanners; tests/integration/scan/test_corpus_scan.py scans them.
    gateway = gateway_factory(smtp={"max_errors": MAX_ERRORS}, extra={"scan": {"scanners": []}})
    files = message_files(corpus)
    assert len(files) > 5_000, f"only {len(files)} messages found in {corpus}"
    work: queue.Queue[Path] = queue.Queue()
    for path in files:
        work.put(path)
    results: list[Result] = []
    errors: list[str] = []
    threads = [threading.Thread(target=send_all, args=(gateway.port, work, results, errors))
               for _ in range(SESSIONS)]
    for thread in threads:
        thread.start()
    raw_files = [path for path in files if b"\r\n" not in path.read_bytes()][::700][:8]
    raw = send_raw(gateway.port, raw_files)
    for thread in threads:
        thread.join(300)

    accepted = {r.queue_id: r for r in results if r.queue_id}
    outcomes = Counter(f"{r.code} {r.text[:9]}" for r in results)
    print(f"\ncorpus: {len(files)} messages, {sum(len(r.sent) for r in results)} bytes: "
          f"{dict(outcomes)}; raw: {Counter(code for _, code, _ in raw)}")
    assert errors == []
    assert len(results) == len(files)
    assert gateway.proc.poll() is None, "the gateway died"
    improper = [(r.path.name, r.code, r.text) for r in results
                if r.code != 250 and not (400 <= r.code < 600 and (m := ENHANCED.match(r.text))
                                          and m.group(1) == str(r.code)[0])]
    assert improper == []
    assert [r for r in results if r.code == 250 and not r.queue_id] == []
    unexpected = [(str(r.path.relative_to(corpus)), f"{r.code} {r.text}", expected_reply(r.sent))
                  for r in results if f"{r.code} {r.text}"[:9] != expected_reply(r.sent)]
    assert unexpected == []
    assert [(p.name, code, text) for p, code, text in raw
            if (code, text[:6]) != (550, "5.5.2 ")] == []

    store = open_store(gateway.store_url)
    try:
        assert store.count_messages() == len(accepted)
        for queue_id, result in accepted.items():
            stored = store.message_data(queue_id)
            assert stored is not None, f"{queue_id} ({result.path}): 250 but not stored"
            head = stored[:len(stored) - len(result.sent)]
            assert stored.endswith(result.sent), f"{queue_id} ({result.path}): bytes differ"
            assert head.startswith(b"Received: ") and f"id {queue_id}".encode() in head
    finally:
        store.close()
