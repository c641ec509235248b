"""The SpamAssassin scanner: one spamd ``SYMBOLS`` conversation per message, TCP or Unix socket.

It owns the client side of the SPAMC/1.5 protocol (request line, ``Content-length`` and
``User`` headers, the message; a ``SPAMD/1.x 0 EX_OK`` reply with a ``Spam: True ; 7.5 /
5.0`` header and the comma-separated rule names as body) and the mapping of that reply to
:class:`~spoolgate.mail.verdict.Findings`.

What it sends: the message with a ``Return-Path`` and a ``Received`` header for our own hop
in front (client IP, HELO, queue ID, the recipient when there is one; the same shape as the
header intake stores), because spamd takes the envelope from nowhere else: its relay rules
(HELO checks, RBLs when not run with ``--local``) read that header. We know no reverse DNS
of the client, so SpamAssassin sees none and ``RDNS_NONE`` fires for outside clients.

What it reports: spamd's total score is :attr:`Findings.score`, the only number the policy
adds up. The rules that hit become :class:`Symbol` values with score 0: ``SYMBOLS`` names them
without their scores, and the per-rule scores of ``REPORT`` come in a text table the site
can redefine (``report`` templates), so they cannot be parsed reliably. Nothing is counted
twice.

Big messages: spamd has no size limit of its own but slows with size, and spamc by default
does not send messages over 500 KB at all, which makes them look clean. Here a message
over ``max_size`` is cut at a line end and its first ``max_size`` bytes are scored, with a
``SPAMD_TRUNCATED`` symbol (score 0) saying so. We chose that over ``unscannable``: spam is
scored from headers and text near the top, SpamAssassin itself only looks at the first
part of every body part (``body_part_scan_size``), and amavisd-new truncates the same way;
``unscannable`` would quarantine every large message whenever SpamAssassin is enabled.
Viruses in large attachments are ClamAV's job, which does see everything.

How it fails: a spamd that refuses, resets, closes early, does not answer within the
budget, answers with a code other than ``0 EX_OK``, without a readable ``Spam:`` header or
with a shorter body than announced gives findings with ``error`` set, never clean.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from dataclasses import dataclass

from spoolgate.mail.envelope import Envelope
from spoolgate.mail.verdict import Findings, Symbol
from spoolgate.scan.base import ScanRequest
from spoolgate.scan.clamav import parse_address

REPLY_MAX = 1024 * 1024
DEFAULT_MAX_SIZE = 500 * 1024
TRUNCATED = "SPAMD_TRUNCATED"
_STATUS = re.compile(r"SPAMD/(\d+\.\d+) +(\d+) +(.*)")
_SPAM = re.compile(r"(True|False|Yes|No) *; *(-?\d+(?:\.\d+)?) */ *(-?\d+(?:\.\d+)?)",
                   re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SpamdReply:
    """One spamd ``SYMBOLS`` reply, interpreted: a score with rule names, or an error."""

    score: float = 0.0
    symbols: tuple[str, ...] = ()
    error: str | None = None


def parse_symbols_reply(raw: bytes) -> SpamdReply:
    """Interpret the whole reply spamd sent to ``SYMBOLS`` (it closes the connection after)."""
    head, separator, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = _STATUS.fullmatch(lines[0].strip())
    if status is None:
        return SpamdReply(error=f"unexpected spamd reply: {lines[0][:80]!r}" if raw
                          else "spamd closed the connection without a reply")
    if status.group(2) != "0":
        return SpamdReply(error=f"spamd: {status.group(2)} {status.group(3)}")
    headers = _headers(lines[1:])
    spam = _SPAM.fullmatch(headers.get("spam", ""))
    if not separator or spam is None:
        return SpamdReply(error="spamd reply without a readable Spam: header")
    length = headers.get("content-length", str(len(body)))
    if not length.isdigit() or int(length) != len(body):
        return SpamdReply(error=f"spamd reply body is {len(body)} bytes, announced {length!r}")
    names = body.decode("utf-8", "replace").split(",")
    return SpamdReply(score=float(spam.group(2)),
                      symbols=tuple(name.strip() for name in names if name.strip()))


def _headers(lines: list[str]) -> dict[str, str]:
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def envelope_prefix(envelope: Envelope, queue_id: str, hostname: str, now: float) -> bytes:
    """``Return-Path`` and a ``Received`` header for our hop, as intake writes it."""
    client = envelope.client
    recipients = envelope.recipients
    recipient = f"\r\n\tfor <{_clean(recipients[0].address)}>" if len(recipients) == 1 else ""
    date = email.utils.formatdate(now, usegmt=True)
    text = (f"Return-Path: <{_clean(envelope.sender)}>\r\n"
            f"Received: from {_clean(client.helo) or 'unknown'} ([{_clean(client.ip)}])\r\n"
            f"\tby {_clean(hostname)} (Spoolgate) with ESMTP\r\n"
            f"\tid {_clean(queue_id) or 'unknown'}{recipient}; {date}\r\n")
    return text.encode("ascii")


def _clean(text: str) -> str:
    """Client-given words fit for a header: printable ASCII without parens or brackets."""
    return "".join(c if 32 < ord(c) < 127 and c not in "()[]<>;\\" else "?" for c in text)[:255]


def truncate(data: bytes, max_size: int) -> bytes:
    """*data* cut after its last line end within *max_size* bytes (or at *max_size*)."""
    if len(data) <= max_size:
        return data
    end = data.rfind(b"\n", 0, max_size)
    return data[:end + 1] if end > 0 else data[:max_size]


class SpamAssassinScanner:
    """A :class:`~spoolgate.scan.base.Scanner` backed by a spamd daemon."""

    def __init__(self, address: str = "tcp:127.0.0.1:783", max_size: int = DEFAULT_MAX_SIZE,
                 user: str = "spoolgate", hostname: str = "localhost",
                 name: str = "spamassassin") -> None:
        try:
            self._target = parse_address(address)
        except ValueError:
            raise ValueError(
                f"spamd address must be tcp:HOST:PORT or unix:PATH, not {address!r}") from None
        self.address = address
        self.max_size = max_size
        self.user = user
        self.hostname = hostname
        self.name = name

    async def scan(self, request: ScanRequest, budget: float) -> Findings:
        """Findings for *request* from spamd, within *budget* seconds."""
        started = time.monotonic()
        data = truncate(request.data, self.max_size)
        message = envelope_prefix(request.envelope, request.queue_id, self.hostname,
                                  time.time()) + data
        try:
            async with asyncio.timeout(budget):
                raw = await self._exchange(self._request_head("SYMBOLS", len(message)) + message)
        except TimeoutError:
            return self._findings(started, SpamdReply(
                error=f"spamd did not answer within {budget:g}s"))
        except OSError as error:
            return self._findings(started, SpamdReply(
                error=f"spamd unreachable at {self.address}: {error}"))
        reply = parse_symbols_reply(raw)
        extra = ()
        if len(data) < len(request.data) and reply.error is None:
            extra = (Symbol(TRUNCATED, 0.0, f"scored the first {len(data)} of "
                                            f"{len(request.data)} bytes"),)
        return self._findings(started, reply, extra)

    async def ping(self, budget: float = 2.0) -> bool:
        """True if spamd answers ``PING`` with ``PONG`` within *budget* seconds."""
        try:
            async with asyncio.timeout(budget):
                raw = await self._exchange(b"PING SPAMC/1.5\r\n\r\n")
        except (TimeoutError, OSError):
            return False
        return raw.startswith(b"SPAMD/") and raw.rstrip().endswith(b" 0 PONG")

    def _request_head(self, command: str, length: int) -> bytes:
        user = f"User: {_clean(self.user)}\r\n" if self.user else ""
        return f"{command} SPAMC/1.5\r\nContent-length: {length}\r\n{user}\r\n".encode("ascii")

    async def _exchange(self, payload: bytes) -> bytes:
        """Send *payload* and read spamd's reply until it closes the connection."""
        reader, writer = await self._connect()
        try:
            writer.write(payload)
            await writer.drain()
            return await _read_to_end(reader)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        kind, where, port = self._target
        if kind == "unix":
            return await asyncio.open_unix_connection(where)
        return await asyncio.open_connection(where, port)

    def _findings(self, started: float, reply: SpamdReply,
                  extra: tuple[Symbol, ...] = ()) -> Findings:
        symbols = tuple(Symbol(name) for name in reply.symbols) + extra
        return Findings(self.name, score=reply.score, symbols=symbols, error=reply.error,
                        seconds=time.monotonic() - started)


async def _read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything until spamd closes (at most :data:`REPLY_MAX`; a reset ends it early)."""
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= REPLY_MAX and (chunk := await reader.read(65536)):
            chunks.append(chunk)
            size += len(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)
