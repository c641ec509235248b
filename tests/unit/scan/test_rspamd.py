"""spoolgate/scan/rspamd.py: /checkv2 replies, the request, and a stand-in HTTP server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mail.verdict import Findings, Symbol
from spoolgate.scan.base import ScanRequest
from spoolgate.scan.rspamd import (
    RspamdReply,
    RspamdScanner,
    build_request,
    envelope_headers,
    parse_checkv2_reply,
)
from tests.gateway_process import free_port

ENVELOPE = Envelope("a@remote.test", (Recipient("b@example.test"), Recipient("c@example.test")),
                    ClientInfo("192.0.2.1", "mail.remote.test"))
MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"

# Captured from Rspamd 3.4 (Debian 12) for a GTUBE message and a small plain message.
GTUBE_REPLY = (b'{"is_skipped":true,"score":15.0,"required_score":15.0,"action":"reject",'
               b'"symbols":{"GTUBE":{"name":"GTUBE","score":0.0,"metric_score":0.0}},'
               b'"messages":{"smtp_message":"Gtube pattern"},"message-id":"x@example.org",'
               b'"time_real":0.000296}')
HAM_REPLY = (b'{"is_skipped":false,"score":-0.100000,"required_score":15.0,"action":"no action",'
             b'"symbols":{"ARC_NA":{"name":"ARC_NA","score":0.0,"metric_score":0.0,'
             b'"description":"ARC signature absent"},"MIME_GOOD":{"name":"MIME_GOOD",'
             b'"score":-0.100000,"metric_score":-0.100000,"description":"Known content-type",'
             b'"options":["text/plain"]},"RCPT_COUNT_ONE":{"name":"RCPT_COUNT_ONE","score":0.0,'
             b'"metric_score":0.0,"description":"One recipient","options":["1"]},'
             b'"HFILTER_HELO_BAREIP":{"name":"HFILTER_HELO_BAREIP","score":3.0,'
             b'"metric_score":3.0,"description":"Helo host is bare ip"}},"messages":{},'
             b'"message-id":"x@example.org","time_real":0.053040,'
             b'"milter":{"remove_headers":{"X-Spam":0}}}')


def http(status: str, body: bytes, *, length: bool = True, extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nConnection: close\r\nServer: rspamd/3.4\r\n{extra}"
    if length:
        head += f"Content-Length: {len(body)}\r\n"
    return (head + "Content-Type: application/json\r\n\r\n").encode() + body


def test_a_gtube_reply_gives_rspamds_total_even_though_the_symbol_scores_zero() -> None:
    assert parse_checkv2_reply(200, GTUBE_REPLY) == RspamdReply(
        score=15.0, symbols=(Symbol("GTUBE", 0.0, ""),))


def test_symbols_carry_their_scores_and_options_or_description_highest_first() -> None:
    reply = parse_checkv2_reply(200, HAM_REPLY)
    assert reply.error is None and reply.score == pytest.approx(-0.1)
    assert reply.symbols == (Symbol("HFILTER_HELO_BAREIP", 3.0, "Helo host is bare ip"),
                             Symbol("ARC_NA", 0.0, "ARC signature absent"),
                             Symbol("RCPT_COUNT_ONE", 0.0, "1"),
                             Symbol("MIME_GOOD", -0.1, "text/plain"))


def test_a_soft_reject_is_an_error_because_its_score_is_no_result() -> None:
    # Captured: Rspamd's greylist module answering a message it had seen before.
    greylisted = (b'{"is_skipped": false, "score": 0.0, "required_score": 15.0, '
                  b'"action": "soft reject", "messages": {"smtp_message": "Try again later"}, '
                  b'"symbols": {"GREYLIST": {"name": "GREYLIST", "score": 0.0, '
                  b'"metric_score": 0.0, "options": ["greylisted", "Sun, 29 Nov 2026 06:26:39 '
                  b'GMT", "new record"]}}, "message-id": "13258.1030015585@munnari.OZ.AU"}')
    assert parse_checkv2_reply(200, greylisted) == RspamdReply(
        error="rspamd soft reject: Try again later")
    assert parse_checkv2_reply(200, b'{"score": 2, "action": "soft reject"}').error == (
        "rspamd soft reject: try again later")


def test_a_non_200_reply_is_an_error_with_rspamds_reason() -> None:
    reply = parse_checkv2_reply(400, b'{"error":"message has invalid content"}')
    assert reply == RspamdReply(error="rspamd answered HTTP 400: message has invalid content")
    assert parse_checkv2_reply(503, b"<html>busy</html>").error == "rspamd answered HTTP 503"


@pytest.mark.parametrize("body", [
    b"", b"not json", b"\xff\xfe", b"[1, 2]", b'"text"', b"{}", b'{"score": "15"}',
    b'{"score": true}', b'{"score": NaN}', b'{"score": 1, "symbols": []}',
    b'{"score": 1, "symbols": {"A": 3}}', b'{"score": 1, "symbols": {"A": {"score": "x"}}}',
    b'{"error": "bad request", "score": 0}',
])
def test_malformed_or_error_replies_are_errors_never_clean(body: bytes) -> None:
    reply = parse_checkv2_reply(200, body)
    assert reply.error is not None and reply.score == 0.0 and reply.symbols == ()


def test_envelope_headers_name_client_helo_sender_each_recipient_and_queue_id() -> None:
    assert envelope_headers(ENVELOPE, "Q1") == [
        ("IP", "192.0.2.1"), ("Helo", "mail.remote.test"), ("From", "a@remote.test"),
        ("Rcpt", "b@example.test"), ("Rcpt", "c@example.test"), ("Queue-Id", "Q1")]


def test_the_null_sender_is_sent_as_angle_brackets_and_empty_values_are_left_out() -> None:
    bounce = Envelope("", (Recipient("b@example.test"),), ClientInfo("192.0.2.1", ""))
    assert envelope_headers(bounce, "") == [("IP", "192.0.2.1"), ("From", "<>"),
                                            ("Rcpt", "b@example.test")]


def test_no_client_given_word_can_add_a_header_line() -> None:
    sneaky = Envelope("a@x.test", (Recipient("b@example.test"),),
                      ClientInfo("192.0.2.1", "evil\r\nPass: all\r\n"))
    request = build_request("h", "/checkv2", envelope_headers(sneaky, "Q"), b"")
    assert b"\r\nPass:" not in request and b"Helo: evilPass: all\r\n" in request


def test_the_request_is_one_http_11_post_with_content_length() -> None:
    assert build_request("127.0.0.1:11333", "/checkv2", [("IP", "192.0.2.1")], b"body") == (
        b"POST /checkv2 HTTP/1.1\r\nHost: 127.0.0.1:11333\r\nContent-Length: 4\r\n"
        b"Connection: close\r\nIP: 192.0.2.1\r\n\r\nbody")


@pytest.mark.parametrize("url", ["https://127.0.0.1:11333", "127.0.0.1:11333", "http://",
                                 "http://h:1/?q=1", "unix:/run/rspamd.sock"])
def test_bad_urls_are_refused_at_construction(url: str) -> None:
    with pytest.raises(ValueError, match="rspamd url"):
        RspamdScanner(url)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_http_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head + await reader.readexactly(length)


def scan_against(handler: Handler, budget: float = 5.0, path: str = "",
                 data: bytes = MESSAGE) -> tuple[Findings, float]:
    """Scan with RspamdScanner against an asyncio server running *handler*."""
    async def run() -> tuple[Findings, float]:
        port = free_port()
        server = await asyncio.start_server(handler, "127.0.0.1", port)
        async with server:
            began = time.monotonic()
            findings = await RspamdScanner(f"http://127.0.0.1:{port}{path}").scan(
                ScanRequest(data, ENVELOPE, "Q1"), budget)
            return findings, time.monotonic() - began
    return asyncio.run(run())


def answering(reply: bytes, requests: list[bytes] | None = None) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_http_request(reader)
        if requests is not None:
            requests.append(request)
        writer.write(reply)
        await writer.drain()
        writer.close()
    return handle


def test_a_scan_sends_the_envelope_and_message_and_maps_the_reply() -> None:
    requests: list[bytes] = []
    findings, _ = scan_against(answering(http("200 OK", HAM_REPLY), requests), path="/rspamd/")
    assert findings.error is None and findings.score == pytest.approx(-0.1)
    assert findings.scanner == "rspamd" and findings.seconds > 0
    assert [s.name for s in findings.symbols][0] == "HFILTER_HELO_BAREIP"
    (request,) = requests
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /rspamd/checkv2 HTTP/1.1" and body == MESSAGE
    for line in (b"IP: 192.0.2.1", b"Helo: mail.remote.test", b"From: a@remote.test",
                 b"Rcpt: b@example.test", b"Rcpt: c@example.test", b"Queue-Id: Q1",
                 b"Content-Length: %d" % len(MESSAGE)):
        assert line in lines


def test_a_reply_without_content_length_is_read_until_rspamd_closes() -> None:
    findings, _ = scan_against(answering(http("200 OK", GTUBE_REPLY, length=False)))
    assert findings.error is None and findings.score == 15.0


@pytest.mark.parametrize(("reply", "error"), [
    (http("200 OK", GTUBE_REPLY, length=False, extra="Transfer-Encoding: chunked\r\n"),
     "bad reply from rspamd: chunked replies are not supported"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"score\": 1}", "bad reply from rspamd"),
    (b"SPAMD/1.1 0 EX_OK\r\n\r\n", "bad reply from rspamd: bad status line"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "bad reply from rspamd: bad header line"),
    (b"", "bad reply from rspamd"),
    (http("500 Internal Server Error", b'{"error":"oops"}'), "rspamd answered HTTP 500: oops"),
])
def test_broken_http_replies_are_errors(reply: bytes, error: str) -> None:
    findings, _ = scan_against(answering(reply))
    assert findings.error is not None and findings.error.startswith(error)
    assert findings.score == 0.0 and findings.symbols == ()


def test_an_rspamd_that_never_answers_is_an_error_within_the_budget() -> None:
    received: list[bytes] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await read_http_request(reader))
        await asyncio.sleep(30)

    findings, elapsed = scan_against(swallow, budget=0.5)
    assert received and received[0].endswith(MESSAGE)  # the request did arrive
    assert 0.4 <= elapsed < 2.0
    assert findings.error == "rspamd did not answer within 0.5s" and findings.score == 0.0


def test_a_closed_port_is_an_unreachable_error() -> None:
    port = free_port()
    findings = asyncio.run(RspamdScanner(f"http://127.0.0.1:{port}").scan(
        ScanRequest(MESSAGE, ENVELOPE, "Q1"), 2.0))
    assert findings.error is not None
    assert findings.error.startswith(f"rspamd unreachable at http://127.0.0.1:{port}")


def ping_against(reply: bytes, path: str = "") -> tuple[bool, list[bytes]]:
    """Ping an asyncio server that answers *reply* to one GET; the requests it got."""
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(reply)
        await writer.drain()
        writer.close()

    async def run() -> bool:
        port = free_port()
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            return await RspamdScanner(f"http://127.0.0.1:{port}{path}").ping(2.0)
    return asyncio.run(run()), requests


def test_a_ping_is_a_get_of_ping_answered_pong() -> None:
    answered, (request,) = ping_against(http("200 OK", b"pong\r\n"), path="/rspamd/")
    assert answered and request.startswith(b"GET /rspamd/ping HTTP/1.1\r\n")
    assert not ping_against(http("404 Not Found", b"no"))[0]
    assert not ping_against(b"garbage\r\n\r\n")[0]
