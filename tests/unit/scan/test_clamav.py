"""spoolgate/scan/clamav.py: clamd replies and addresses, without a daemon."""

from __future__ import annotations

import asyncio

import pytest

from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.scan.base import ScanRequest
from spoolgate.scan.clamav import ClamavScanner, ClamdReply, parse_address, parse_instream_reply

ENVELOPE = Envelope("a@remote.test", (Recipient("b@example.test"),), ClientInfo("192.0.2.1", "h"))


@pytest.mark.parametrize(("raw", "reply"), [
    (b"stream: OK\0", ClamdReply()),
    (b"stream: OK", ClamdReply()),
    (b"stream: Win.Test.EICAR_HDB-1 FOUND\0", ClamdReply(virus="Win.Test.EICAR_HDB-1")),
    (b"stream:   Spoolgate.Test.EICAR.UNOFFICIAL  FOUND \0",
     ClamdReply(virus="Spoolgate.Test.EICAR.UNOFFICIAL")),
    (b"stream: Heuristics.Limits.Exceeded.MaxRecursion FOUND\0",
     ClamdReply(unscannable="clamd: Heuristics.Limits.Exceeded.MaxRecursion")),
    (b"stream: Heuristics.Limits.Exceeded.MaxScanSize FOUND\0",
     ClamdReply(unscannable="clamd: Heuristics.Limits.Exceeded.MaxScanSize")),
    (b"stream: Heuristics.Encrypted.Zip FOUND\0",
     ClamdReply(unscannable="clamd: Heuristics.Encrypted.Zip")),
    (b"INSTREAM size limit exceeded. ERROR\0",
     ClamdReply(unscannable="clamd: INSTREAM size limit exceeded. ERROR")),
    (b"stream: Can't allocate memory ERROR\0",
     ClamdReply(unscannable="clamd: stream: Can't allocate memory ERROR")),
])
def test_instream_replies_are_classified(raw: bytes, reply: ClamdReply) -> None:
    assert parse_instream_reply(raw) == reply


@pytest.mark.parametrize("raw", [b"", b"\0", b"UNKNOWN COMMAND\0", b"stream:  FOUND\0",
                                 b"COMMAND READ TIMED OUT\0"])
def test_empty_or_unknown_replies_are_errors_never_clean(raw: bytes) -> None:
    reply = parse_instream_reply(raw)
    assert reply.error is not None and reply.virus is None and reply.unscannable is None


@pytest.mark.parametrize(("address", "target"), [
    ("tcp:127.0.0.1:3310", ("tcp", "127.0.0.1", 3310)),
    ("tcp:[::1]:3310", ("tcp", "::1", 3310)),
    ("unix:/run/clamav/clamd.ctl", ("unix", "/run/clamav/clamd.ctl", 0)),
])
def test_addresses_are_parsed(address: str, target: tuple[str, str, int]) -> None:
    assert parse_address(address) == target


@pytest.mark.parametrize("address", ["127.0.0.1:3310", "tcp:127.0.0.1", "tcp:host:0",
                                     "tcp:host:99999", "unix:", "udp:1.2.3.4:5"])
def test_bad_addresses_are_refused_at_construction(address: str) -> None:
    with pytest.raises(ValueError, match="clamd address"):
        ClamavScanner(address)


def test_a_message_over_stream_max_is_unscannable_without_connecting() -> None:
    # The socket does not exist: trying to connect would give an error, not this.
    scanner = ClamavScanner("unix:/nonexistent/clamd.sock", stream_max=10)
    findings = asyncio.run(scanner.scan(ScanRequest(b"x" * 11, ENVELOPE), 1.0))
    assert findings.unscannable == "larger than StreamMaxLength" and findings.error is None


def test_a_missing_unix_socket_is_an_error() -> None:
    scanner = ClamavScanner("unix:/nonexistent/clamd.sock")
    findings = asyncio.run(scanner.scan(ScanRequest(b"x", ENVELOPE), 1.0))
    assert findings.error is not None and findings.viruses == ()
