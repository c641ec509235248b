"""The Rspamd scanner: one HTTP ``POST /checkv2`` per message to Rspamd's normal worker.

It owns a small HTTP/1.1 client on asyncio streams (one request with ``Content-Length``,
``Connection: close``; a reply read by ``Content-Length`` or to the end of the stream), the
envelope headers Rspamd reads (``IP``, ``Helo``, ``From``, one ``Rcpt`` per recipient,
``Queue-Id``) and the mapping of Rspamd's JSON reply to
:class:`~spoolgate.mail.verdict.Findings`.

What it reports: Rspamd's total ``score`` is :attr:`Findings.score`, the only number the
policy adds up. Every symbol becomes a :class:`Symbol` with Rspamd's own score for it and,
as detail, its options (or else its description); these are for the log and the
``X-Spam-Status`` header and need not add up to the total (group score limits cap it, and
pre-results such as ``GTUBE`` set the total while the symbol itself scores 0). Rspamd's
``action`` is otherwise left out on purpose: it comes from Rspamd's thresholds
(``actions.conf``), which are not ours; the policy decides from the score (DESIGN.md:
scanners report). The one exception is ``soft reject``: greylisting and rate limits stop
the scan early and answer it with score 0 (seen here: a repeated message comes back
``GREYLIST`` only), so that score is no result and the reply is an ``error``, which the
policy answers with 451 as greylisting wants. Behind Spoolgate, Rspamd's ``greylist`` and
``ratelimit`` modules are better turned off.

How it fails: connection refused, no complete reply within the budget, an HTTP status other
than 200, a reply that is not the JSON object of ``/checkv2`` (or carries ``error``), or a
reply over :data:`REPLY_MAX` give findings with ``error`` set, never a clean result.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from spoolgate.mail.envelope import Envelope
from spoolgate.mail.verdict import Findings, Symbol
from spoolgate.scan.base import ScanRequest

REPLY_MAX = 8 * 1024 * 1024  # a /checkv2 reply is a few KiB; URL-heavy mail adds options
HEADER_LINE_MAX = 16 * 1024
HEADERS_MAX = 100


class RspamdHttpError(Exception):
    """The reply is not well-formed HTTP/1.1 (or uses what this client does not speak)."""


@dataclass(frozen=True, slots=True)
class RspamdReply:
    """One ``/checkv2`` reply, interpreted: either a score with symbols, or an error."""

    score: float = 0.0
    symbols: tuple[Symbol, ...] = ()
    error: str | None = None


def parse_checkv2_reply(status: int, body: bytes) -> RspamdReply:
    """Interpret the HTTP status and JSON body Rspamd answered to ``POST /checkv2``."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        document = None
    if status != 200:
        reason = document.get("error") if isinstance(document, dict) else None
        return RspamdReply(error=f"rspamd answered HTTP {status}" + (f": {reason}" if reason else ""))
    if not isinstance(document, dict):
        return RspamdReply(error="rspamd reply is not a JSON object")
    if "error" in document:
        return RspamdReply(error=f"rspamd: {document['error']}")
    score = document.get("score")
    if not _is_number(score):
        return RspamdReply(error="rspamd reply has no numeric score")
    if document.get("action") == "soft reject":
        return RspamdReply(error=f"rspamd soft reject: {_smtp_message(document)}")
    symbols = _symbols(document.get("symbols", {}))
    if symbols is None:
        return RspamdReply(error="rspamd reply has malformed symbols")
    return RspamdReply(score=float(score), symbols=symbols)


def _smtp_message(document: dict[str, object]) -> str:
    messages = document.get("messages")
    text = messages.get("smtp_message") if isinstance(messages, dict) else None
    return text if isinstance(text, str) and text else "try again later"


def _symbols(raw: object) -> tuple[Symbol, ...] | None:
    """Symbols sorted by score (highest first) then name, or None if *raw* is malformed."""
    if not isinstance(raw, dict):
        return None
    symbols = []
    for key, entry in raw.items():
        if not isinstance(entry, dict) or not _is_number(entry.get("score", 0.0)):
            return None
        symbols.append(Symbol(str(entry.get("name", key)), float(entry.get("score", 0.0)),
                              _detail(entry)))
    return tuple(sorted(symbols, key=lambda s: (-s.score, s.name)))


def _detail(entry: dict[str, object]) -> str:
    options = entry.get("options")
    if isinstance(options, list) and options:
        return ", ".join(str(option) for option in options)
    description = entry.get("description")
    return description if isinstance(description, str) else ""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def envelope_headers(envelope: Envelope, queue_id: str) -> list[tuple[str, str]]:
    """The request headers that tell Rspamd the SMTP envelope (empty values left out)."""
    sender = envelope.sender or "<>"  # Rspamd reads "<>" as the null sender
    headers = [("IP", envelope.client.ip), ("Helo", envelope.client.helo), ("From", sender),
               *(("Rcpt", recipient.address) for recipient in envelope.recipients),
               ("Queue-Id", queue_id)]
    cleaned = [(name, _header_value(value)) for name, value in headers]
    return [(name, value) for name, value in cleaned if value]


def _header_value(value: str) -> str:
    """*value* without control characters, so no client-given word can split the request."""
    return "".join(c for c in value if c >= " " and c != "\x7f").strip()


def build_request(host: str, path: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """An HTTP/1.1 POST with a ``Content-Length`` body, asking Rspamd to close afterwards."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}",
             "Connection: close", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status code and body of one HTTP/1.1 response (``Content-Length`` or read to close)."""
    status_line = await _read_line(reader)
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise RspamdHttpError(f"bad status line {status_line[:80]!r}")
    headers = await _read_headers(reader)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise RspamdHttpError("chunked replies are not supported")
    length = headers.get("content-length")
    if length is None:
        return int(parts[1]), await _read_to_end(reader)
    if not length.isdigit() or int(length) > REPLY_MAX:
        raise RspamdHttpError(f"bad or oversized Content-Length {length[:20]!r}")
    return int(parts[1]), await reader.readexactly(int(length))


async def _read_to_end(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await reader.read(65536):
        size += len(chunk)
        if size > REPLY_MAX:
            raise RspamdHttpError("reply larger than REPLY_MAX")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    while line := await _read_line(reader):
        name, colon, value = line.partition(":")
        if not colon or len(headers) >= HEADERS_MAX:
            raise RspamdHttpError(f"bad header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


async def _read_line(reader: asyncio.StreamReader) -> str:
    """One line without its CRLF; an empty string is the blank line ending the headers."""
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as error:
        raise RspamdHttpError("header line too long") from error
    return raw.decode("latin-1").rstrip("\r\n")


class RspamdScanner:
    """A :class:`~spoolgate.scan.base.Scanner` backed by Rspamd's HTTP ``/checkv2``."""

    def __init__(self, url: str = "http://127.0.0.1:11333", name: str = "rspamd") -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"rspamd url must be http://HOST[:PORT][/PATH], not {url!r}")
        self.url = url
        self.name = name
        self._host = parts.hostname
        self._port = parts.port or 80
        self._authority = parts.netloc
        self._path = parts.path.rstrip("/") + "/checkv2"
        self._ping_path = parts.path.rstrip("/") + "/ping"

    async def scan(self, request: ScanRequest, budget: float) -> Findings:
        """Findings for *request* from Rspamd, within *budget* seconds."""
        started = time.monotonic()
        headers = envelope_headers(request.envelope, request.queue_id)
        try:
            async with asyncio.timeout(budget):
                status, body = await self._post(headers, request.data)
        except TimeoutError:
            return self._findings(started, RspamdReply(
                error=f"rspamd did not answer within {budget:g}s"))
        except (RspamdHttpError, asyncio.IncompleteReadError) as error:
            return self._findings(started, RspamdReply(error=f"bad reply from rspamd: {error}"))
        except OSError as error:
            return self._findings(started, RspamdReply(
                error=f"rspamd unreachable at {self.url}: {error}"))
        return self._findings(started, parse_checkv2_reply(status, body))

    async def ping(self, budget: float = 2.0) -> bool:
        """True if Rspamd's ``GET /ping`` answers ``pong`` within *budget* seconds."""
        request = (f"GET {self._ping_path} HTTP/1.1\r\nHost: {self._authority}\r\n"
                   "Connection: close\r\n\r\n").encode()
        try:
            async with asyncio.timeout(budget):
                status, body = await self._exchange(request)
        except (TimeoutError, OSError, RspamdHttpError, asyncio.IncompleteReadError):
            return False
        return status == 200 and body.strip().lower().startswith(b"pong")

    async def _post(self, headers: list[tuple[str, str]], data: bytes) -> tuple[int, bytes]:
        return await self._exchange(build_request(self._authority, self._path, headers, data))

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(self._host, self._port,
                                                       limit=HEADER_LINE_MAX)
        try:
            writer.write(request)
            await writer.drain()
            return await read_response(reader)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    def _findings(self, started: float, reply: RspamdReply) -> Findings:
        return Findings(self.name, score=reply.score, symbols=reply.symbols, error=reply.error,
                        seconds=time.monotonic() - started)
