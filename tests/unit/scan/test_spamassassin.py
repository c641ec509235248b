"""spoolgate/scan/spamassassin.py: spamd replies, the request, and a stand-in spamd."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mail.verdict import Findings, Symbol
from spoolgate.scan.base import ScanRequest
from spoolgate.scan.spamassassin import (
    TRUNCATED,
    SpamAssassinScanner,
    SpamdReply,
    envelope_prefix,
    parse_symbols_reply,
    truncate,
)
from tests.gateway_process import free_port

ENVELOPE = Envelope("a@remote.test", (Recipient("b@example.test"),),
                    ClientInfo("192.0.2.1", "mail.remote.test"))
MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"

# Captured from spamd 4.0.1 (Debian 12) for a GTUBE message and a ham message.
GTUBE_REPLY = (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 55\r\nSpam: True ; 1000.0 / 5.0\r\n\r\n"
               b"GTUBE,MSGID_SHORT,NO_RECEIVED,NO_RELAYS,TVD_SPACE_RATIO")
HAM_REPLY = (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 48\r\nSpam: False ; 0.0 / 5.0\r\n\r\n"
             b"HEADER_FROM_DIFFERENT_DOMAINS,MAILING_LIST_MULTI")


def test_a_gtube_reply_gives_the_total_score_and_the_rule_names() -> None:
    assert parse_symbols_reply(GTUBE_REPLY) == SpamdReply(
        score=1000.0, symbols=("GTUBE", "MSGID_SHORT", "NO_RECEIVED", "NO_RELAYS",
                               "TVD_SPACE_RATIO"))


def test_a_ham_reply_and_a_negative_score_without_rules() -> None:
    assert parse_symbols_reply(HAM_REPLY).score == 0.0
    assert parse_symbols_reply(b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; -1.9 / 5.0\r\n"
                               b"Content-length: 0\r\n\r\n") == SpamdReply(score=-1.9)


@pytest.mark.parametrize(("raw", "error"), [
    (b"", "spamd closed the connection without a reply"),
    (b"SPAMD/1.0 76 Bad header line: Content-lenth: 5\r\n",
     "spamd: 76 Bad header line: Content-lenth: 5"),
    (b"SPAMD/1.0 69 Service Unavailable: Server busy\r\n",
     "spamd: 69 Service Unavailable: Server busy"),
    (b"HTTP/1.1 200 OK\r\n\r\n", "unexpected spamd reply: 'HTTP/1.1 200 OK'"),
    (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\n\r\nGTUBE",
     "spamd reply without a readable Spam: header"),
    (b"SPAMD/1.1 0 EX_OK\r\nSpam: maybe ; x / 5.0\r\n\r\n",
     "spamd reply without a readable Spam: header"),
    (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 9.0 / 5.0\r\n",  # cut before the blank line
     "spamd reply without a readable Spam: header"),
    (GTUBE_REPLY[:-10], "spamd reply body is 45 bytes, announced '55'"),
])
def test_failed_or_malformed_replies_are_errors_never_clean(raw: bytes, error: str) -> None:
    assert parse_symbols_reply(raw) == SpamdReply(error=error)


def test_the_prefix_tells_spamd_the_envelope_as_intake_would_store_it() -> None:
    prefix = envelope_prefix(ENVELOPE, "Q1", "mx.example.test", 0.0)
    assert prefix == (b"Return-Path: <a@remote.test>\r\n"
                      b"Received: from mail.remote.test ([192.0.2.1])\r\n"
                      b"\tby mx.example.test (Spoolgate) with ESMTP\r\n"
                      b"\tid Q1\r\n\tfor <b@example.test>; Thu, 01 Jan 1970 00:00:00 GMT\r\n")


def test_the_prefix_for_a_bounce_to_two_recipients_from_a_hostile_helo() -> None:
    envelope = Envelope("", (Recipient("b@example.test"), Recipient("c@example.test")),
                        ClientInfo("192.0.2.1", "x)\r\nX-Spam: no"))
    prefix = envelope_prefix(envelope, "Q1", "mx", 0.0)
    assert prefix.startswith(b"Return-Path: <>\r\nReceived: from x???X-Spam:?no ([192.0.2.1])")
    assert b"for <" not in prefix and prefix.count(b"\r\n") == 4


@pytest.mark.parametrize(("data", "limit", "cut"), [
    (b"a\nbb\nccc\n", 100, b"a\nbb\nccc\n"),
    (b"a\nbb\nccc\n", 6, b"a\nbb\n"),
    (b"a\nbb\nccc\n", 5, b"a\nbb\n"),
    (b"abcdefgh", 3, b"abc"),
])
def test_truncate_cuts_at_a_line_end_within_the_limit(data: bytes, limit: int, cut: bytes) -> None:
    assert truncate(data, limit) == cut


@pytest.mark.parametrize("address", ["127.0.0.1:783", "tcp:127.0.0.1", "unix:", "udp:h:783"])
def test_bad_addresses_are_refused_at_construction(address: str) -> None:
    with pytest.raises(ValueError, match="spamd address"):
        SpamAssassinScanner(address)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_spamc_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head + await reader.readexactly(length)


def answering(reply: bytes, requests: list[bytes]) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await read_spamc_request(reader))
        writer.write(reply)
        await writer.drain()
        writer.close()
    return handle


def scan_against(handler: Handler, budget: float = 5.0, data: bytes = MESSAGE,
                 **options: int) -> tuple[Findings, float]:
    async def run() -> tuple[Findings, float]:
        port = free_port()
        server = await asyncio.start_server(handler, "127.0.0.1", port)
        async with server:
            began = time.monotonic()
            scanner = SpamAssassinScanner(f"tcp:127.0.0.1:{port}", hostname="mx", **options)
            findings = await scanner.scan(ScanRequest(data, ENVELOPE, "Q1"), budget)
            return findings, time.monotonic() - began
    return asyncio.run(run())


def test_a_scan_sends_symbols_with_length_user_and_envelope_and_maps_the_reply() -> None:
    requests: list[bytes] = []
    findings, _ = scan_against(answering(GTUBE_REPLY, requests))
    assert findings.error is None and findings.score == 1000.0
    assert findings.symbols[0] == Symbol("GTUBE", 0.0, "") and len(findings.symbols) == 5
    assert findings.scanner == "spamassassin" and findings.seconds > 0
    (request,) = requests
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [b"SYMBOLS SPAMC/1.5", b"Content-length: %d" % len(body),
                                   b"User: spoolgate"]
    assert body.startswith(b"Return-Path: <a@remote.test>\r\nReceived: from mail.remote.test")
    assert body.endswith(b"\r\n" + MESSAGE)


def test_a_message_over_max_size_is_scored_on_its_first_lines_and_says_so() -> None:
    requests: list[bytes] = []
    data = b"Subject: big\r\n\r\n" + b"line of text\r\n" * 1000  # 14,016 bytes
    findings, _ = scan_against(answering(HAM_REPLY, requests), data=data, max_size=1000)
    sent = requests[0].partition(b"\r\n\r\n")[2]
    message = sent[sent.index(b"Subject: big"):]
    assert len(message) <= 1000 and data.startswith(message) and message.endswith(b"\r\n")
    assert findings.error is None and findings.unscannable is None and findings.score == 0.0
    assert findings.symbols[-1] == Symbol(TRUNCATED, 0.0,
                                          f"scored the first {len(message)} of {len(data)} bytes")


def test_a_spamd_that_never_answers_is_an_error_within_the_budget() -> None:
    received: list[bytes] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await read_spamc_request(reader))
        await asyncio.sleep(30)

    findings, elapsed = scan_against(swallow, budget=0.5)
    assert received and received[0].endswith(MESSAGE)
    assert 0.4 <= elapsed < 2.0
    assert findings.error == "spamd did not answer within 0.5s" and findings.symbols == ()


def test_a_spamd_that_closes_without_replying_is_an_error() -> None:
    findings, _ = scan_against(answering(b"", []))
    assert findings.error == "spamd closed the connection without a reply"


def test_a_closed_port_and_a_missing_socket_are_unreachable_errors() -> None:
    for address in (f"tcp:127.0.0.1:{free_port()}", "unix:/nonexistent/spamd.sock"):
        findings = asyncio.run(SpamAssassinScanner(address).scan(
            ScanRequest(MESSAGE, ENVELOPE, "Q1"), 2.0))
        assert findings.error is not None
        assert findings.error.startswith(f"spamd unreachable at {address}")
        assert findings.score == 0.0 and findings.symbols == ()


def test_ping_is_false_when_nothing_listens() -> None:
    assert asyncio.run(SpamAssassinScanner(f"tcp:127.0.0.1:{free_port()}").ping(0.5)) is False
