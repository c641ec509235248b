"""spoolgate/scan/signatures.py: the EICAR test file is a virus in every wrapping, through
the built-in scanner, and a message that only talks about it is not."""

from __future__ import annotations

import asyncio
import base64
import bz2
import gzip
import lzma
import quopri
from collections.abc import Callable
from email.message import EmailMessage

import pytest

from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mail.verdict import Action, Findings
from spoolgate.mime.parse import parse_message
from spoolgate.scan.attachments import AttachmentRules
from spoolgate.scan.base import ScanRequest
from spoolgate.scan.builtin import BuiltinScanner
from spoolgate.scan.policy import ScanPolicy, decide
from spoolgate.scan.signatures import EICAR, message_hits, signatures_in, virus_findings
from tests.archives import tar_of, zip_of
from tests.clamd import EICAR as CLAMD_EICAR

ENVELOPE = Envelope("a@remote.test", (Recipient("b@example.test"),),
                    ClientInfo("192.0.2.1", "mail.remote.test"))
HEADERS = (b"From: a@remote.test\r\nTo: b@example.test\r\nMessage-ID: <1@remote.test>\r\n"
           b"Date: Sun, 29 Nov 2026 06:00:00 +0000\r\nSubject: test file\r\n")
# The EICAR file as eicar.org ships it may be followed by whitespace, up to 128 bytes.
EICAR_FILE = EICAR + b" " * 40 + b"\r\n"


def scan(data: bytes, rules: AttachmentRules | None = None) -> Findings:
    return asyncio.run(BuiltinScanner(attachments=rules).scan(ScanRequest(data, ENVELOPE), 5.0))


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def with_body(headers: bytes, body: bytes) -> bytes:
    return HEADERS + headers + b"\r\n" + body


def attached(data: bytes, filename: str | None = "eicar.com",
             content_type: str = "application/octet-stream",
             disposition: str = "attachment") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@remote.test", "b@example.test", "files"
    msg["Date"], msg["Message-ID"] = "Sun, 29 Nov 2026 06:00:00 +0000", "<2@remote.test>"
    msg.set_content("see attached")
    maintype, subtype = content_type.split("/")
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename,
                       disposition=disposition)
    return crlf(msg.as_bytes())


def nested_message(inner: bytes) -> bytes:
    return with_body(b"Content-Type: multipart/mixed; boundary=outer\r\n",
                     b"--outer\r\nContent-Type: text/plain\r\n\r\nforwarded below\r\n"
                     b"--outer\r\nContent-Type: message/rfc822\r\n\r\n" + inner
                     + b"\r\n--outer--\r\n")


def deep_multipart(levels: int, leaf: bytes) -> bytes:
    body = leaf
    for level in range(levels, 0, -1):
        body = (f"Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n"
                .encode() + body + f"\r\n--b{level}--\r\n".encode())
    return HEADERS + body


QP_LEAF = (b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
           + quopri.encodestring(EICAR[:30]) + b"=\r\n" + quopri.encodestring(EICAR[30:]))
BASE64_BODY = base64.encodebytes(EICAR_FILE).replace(b"\n", b"\r\n")

WRAPPINGS: dict[str, Callable[[], bytes]] = {
    "plain body": lambda: with_body(b"", EICAR_FILE),
    "plain body after text": lambda: with_body(b"", b"Attached inline: " + EICAR + b" done\r\n"),
    "base64 body": lambda: with_body(b"Content-Transfer-Encoding: base64\r\n", BASE64_BODY),
    "quoted-printable, split by a soft line break": lambda: HEADERS + QP_LEAF,
    "8bit text/html": lambda: with_body(b"Content-Type: text/html; charset=utf-8\r\n"
                                        b"Content-Transfer-Encoding: 8bit\r\n",
                                        b"<p>\xc3\xa9 " + EICAR + b"</p>\r\n"),
    "base64 attachment": lambda: attached(EICAR_FILE),
    "unnamed attachment": lambda: attached(EICAR_FILE, filename=None),
    "inline image part": lambda: attached(EICAR, "pixel.gif", "image/gif", "inline"),
    "text attachment": lambda: attached(EICAR, "notes.txt", "text/plain"),
    "message/rfc822": lambda: nested_message(with_body(
        b"Content-Transfer-Encoding: base64\r\n", BASE64_BODY)),
    "message/rfc822 in message/rfc822": lambda: nested_message(nested_message(
        attached(EICAR_FILE))),
    "multipart 20 deep": lambda: deep_multipart(20, b"Content-Type: application/x-msdos-program"
                                                    b"\r\nContent-Transfer-Encoding: base64"
                                                    b"\r\n\r\n" + BASE64_BODY),
    "zip": lambda: attached(zip_of({"eicar.com": EICAR_FILE}), "files.zip", "application/zip"),
    "zip after other members": lambda: attached(zip_of({"a.txt": b"hello", "b/eicar.txt": EICAR}),
                                                "files.zip", "application/zip"),
    "zip in zip": lambda: attached(zip_of({"inner.zip": zip_of({"eicar.com": EICAR})}),
                                   "outer.zip", "application/zip"),
    "tar": lambda: attached(tar_of({"eicar.com": EICAR_FILE}), "files.tar"),
    "tar.gz": lambda: attached(tar_of({"readme": b"hi", "eicar.com": EICAR}, "w:gz"),
                               "files.tar.gz", "application/gzip"),
    "gz": lambda: attached(gzip.compress(EICAR_FILE), "eicar.com.gz", "application/gzip"),
    "bz2": lambda: attached(bz2.compress(EICAR_FILE), "eicar.com.bz2"),
    "xz": lambda: attached(lzma.compress(EICAR_FILE), "eicar.com.xz"),
    "tar.xz": lambda: attached(tar_of({"eicar.com": EICAR}, "w:xz"), "files.txz"),
    "zip in tar.bz2": lambda: attached(tar_of({"in.zip": zip_of({"eicar.com": EICAR})}, "w:bz2"),
                                       "files.tar.bz2"),
}


def test_the_signature_is_the_one_the_clamd_harness_uses() -> None:
    assert EICAR == CLAMD_EICAR and len(EICAR) == 68 and len(EICAR_FILE) <= 128


@pytest.mark.parametrize("wrapping", WRAPPINGS)
def test_eicar_is_a_virus_in_every_wrapping(wrapping: str) -> None:
    data = WRAPPINGS[wrapping]()
    found = scan(data)
    assert found.viruses == ("Eicar-Test-Signature",), found
    (symbol,) = [s for s in found.symbols if s.name == "EICAR_TEST_FILE"]
    assert symbol.score == 0 and "Eicar-Test-Signature" in symbol.detail
    assert decide(ScanPolicy(), [found]).action == Action.REJECT


@pytest.mark.parametrize("wrapping", ["base64 body", "base64 attachment", "zip", "tar.gz",
                                      "xz", "message/rfc822",
                                      "quoted-printable, split by a soft line break"])
def test_the_encoded_wrappings_hide_the_string_from_a_raw_search(wrapping: str) -> None:
    assert EICAR not in WRAPPINGS[wrapping]()  # so only the decoding found it


def test_the_finding_names_where_the_file_was() -> None:
    found = scan(attached(zip_of({"inner.zip": zip_of({"eicar.com": EICAR})}), "outer.zip",
                          "application/zip"))
    (symbol,) = [s for s in found.symbols if s.name == "EICAR_TEST_FILE"]
    assert "'eicar.com' in 'inner.zip' in 'outer.zip'" in symbol.detail


def test_the_domain_decides_reject_or_quarantine_whatever_the_score_and_lists() -> None:
    found = scan(attached(EICAR_FILE, "eicar.txt", "text/plain"))
    assert found.score < ScanPolicy().tag_score, found.symbols
    quarantine = ScanPolicy(virus_action=Action.QUARANTINE, allow=frozenset({"remote.test"}))
    verdict = decide(quarantine, [found], senders=("a@remote.test",))
    assert verdict.action == Action.QUARANTINE and verdict.reason == "virus Eicar-Test-Signature"
    lenient = ScanPolicy(reject_score=1000, quarantine_score=1000, tag_score=1000,
                         allow=frozenset({"remote.test"}))
    assert decide(lenient, [found], senders=("a@remote.test",)).action == Action.REJECT


CLEAN: dict[str, bytes] = {
    "ordinary mail": with_body(b"", b"See you at noon.\r\n"),
    "a sentence about EICAR": with_body(b"", b"Send the EICAR-STANDARD-ANTIVIRUS-TEST-FILE "
                                             b"to check the scanner (see eicar.org).\r\n"),
    "the first half of the string": with_body(b"", EICAR[:34] + b"\r\n"),
    "the second half of the string": with_body(b"", EICAR[34:] + b"\r\n"),
    "the string with one byte changed": with_body(b"", EICAR.replace(b"$H+H*", b"$H+H!")),
    "the string split by a line break": with_body(b"", EICAR[:40] + b"\r\n" + EICAR[40:]),
    "half the string in a zip": attached(zip_of({"half.txt": EICAR[:40]}), "a.zip",
                                         "application/zip"),
}


@pytest.mark.parametrize("name", CLEAN)
def test_mail_that_only_mentions_or_quotes_part_of_it_is_not_flagged(name: str) -> None:
    found = scan(CLEAN[name])
    assert found.viruses == () and "EICAR_TEST_FILE" not in {s.name for s in found.symbols}
    assert decide(ScanPolicy(), [found]).action == Action.PASS


def test_a_file_found_in_a_part_is_not_reported_again_for_the_raw_message() -> None:
    data = with_body(b"", EICAR_FILE)
    hits = message_hits(data, parse_message(data))
    assert [where for _, where in hits] == ["part 1 (text/plain)"]
    viruses, symbols = virus_findings(hits + hits)
    assert viruses == ("Eicar-Test-Signature",) and len(symbols) == 1


def test_the_raw_message_counts_when_a_parse_limit_cut_the_part_off() -> None:
    parsed = parse_message(HEADERS + b"\r\nhello\r\n")
    hits = message_hits(with_body(b"", EICAR), parsed)
    assert [where for _, where in hits] == ["raw message"]


def test_nothing_is_found_in_nothing() -> None:
    assert signatures_in(b"") == () and virus_findings([]) == ((), ())


def test_members_past_the_archive_depth_are_unscannable_not_clean() -> None:
    deep = zip_of({"eicar.com": EICAR})
    for level in range(4):
        deep = zip_of({f"level{level}.zip": deep})
    found = scan(attached(deep, "deep.zip", "application/zip"),
                 AttachmentRules(max_archive_depth=3))
    assert found.viruses == () and found.unscannable is not None
    assert decide(ScanPolicy(), [found]).action == Action.QUARANTINE
