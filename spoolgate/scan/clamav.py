"""The ClamAV scanner: one clamd ``INSTREAM`` conversation per message, over TCP or a Unix socket.

It owns the clamd wire protocol (``zINSTREAM``/``zPING``, length-prefixed chunks, NUL-ended
replies) and the mapping of clamd's replies to :class:`~spoolgate.mail.verdict.Findings`.

How it fails: a clamd that refuses, resets, or does not answer within the budget gives
findings with ``error`` set. Anything that means clamd did not see the whole message gives
``unscannable``, never clean: a message over ``stream_max`` (not sent at all, because clamd
would cut it at StreamMaxLength and report the prefix clean), clamd's own size limit reply,
``... ERROR`` replies, a connection clamd closed while the message was still being sent
(what its size limit does when its reply is lost to the reset), and the ``Heuristics.Limits.Exceeded.*`` alerts clamd raises for
MaxScanSize/MaxFileSize/MaxRecursion/MaxFiles when ``AlertExceedsMax yes`` is set. Without
that clamd option those limits silently yield ``stream: OK``, so deployments must set it.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass

from spoolgate.mail.verdict import Findings
from spoolgate.scan.base import ScanRequest

# Heuristic names clamd uses for "I stopped looking", not for "this is malware".
NOT_FULLY_SCANNED_PREFIXES = ("Heuristics.Limits.Exceeded.", "Heuristics.Encrypted.")
REPLY_MAX = 4096


@dataclass(frozen=True, slots=True)
class ClamdReply:
    """One clamd INSTREAM reply, classified: at most one of the three fields is set."""

    virus: str | None = None
    unscannable: str | None = None
    error: str | None = None


def parse_instream_reply(raw: bytes) -> ClamdReply:
    """Classify a NUL-terminated clamd INSTREAM reply (``stream: OK``, ``... FOUND``, ``... ERROR``)."""
    text = raw.rstrip(b"\0").decode("utf-8", "replace").strip()
    if not text:
        return ClamdReply(error="clamd closed the connection without a reply")
    if text.endswith(" ERROR") or text == "ERROR":
        return ClamdReply(unscannable=f"clamd: {text}")
    body = text.removeprefix("stream:").strip()
    if body == "OK":
        return ClamdReply()
    if body.endswith(" FOUND"):
        name = body.removesuffix(" FOUND").strip()
        if not name:
            return ClamdReply(error=f"unexpected clamd reply: {text!r}")
        if name.startswith(NOT_FULLY_SCANNED_PREFIXES):
            return ClamdReply(unscannable=f"clamd: {name}")
        return ClamdReply(virus=name)
    return ClamdReply(error=f"unexpected clamd reply: {text!r}")


def parse_address(address: str) -> tuple[str, str, int]:
    """``("tcp", host, port)`` or ``("unix", path, 0)`` from ``tcp:HOST:PORT`` / ``unix:PATH``."""
    kind, _, rest = address.partition(":")
    if kind == "unix" and rest:
        return ("unix", rest, 0)
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return ("tcp", host.strip("[]"), int(port))
    raise ValueError(f"clamd address must be tcp:HOST:PORT or unix:PATH, not {address!r}")


class ClamavScanner:
    """A :class:`~spoolgate.scan.base.Scanner` backed by a clamd daemon."""

    def __init__(self, address: str, stream_max: int = 25 * 1024 * 1024,
                 chunk: int = 64 * 1024, name: str = "clamav") -> None:
        self.address = address
        self._target = parse_address(address)
        self.stream_max = stream_max
        self.chunk = chunk
        self.name = name

    async def scan(self, request: ScanRequest, budget: float) -> Findings:
        """Findings for *request* from clamd, within *budget* seconds."""
        started = time.monotonic()
        if len(request.data) > self.stream_max:
            return Findings(self.name, unscannable="larger than StreamMaxLength")
        try:
            async with asyncio.timeout(budget):
                raw = await self._instream(request.data)
        except TimeoutError:
            return self._findings(started, error=f"clamd did not answer within {budget:g}s")
        except StreamCut:
            return self._findings(started, unscannable="clamd closed the connection before "
                                                       "the end of the message "
                                                       "(StreamMaxLength?)")
        except OSError as error:
            return self._findings(started, error=f"clamd unreachable at {self.address}: {error}")
        reply = parse_instream_reply(raw)
        return self._findings(started, viruses=(reply.virus,) if reply.virus else (),
                              unscannable=reply.unscannable, error=reply.error)

    async def ping(self, budget: float = 2.0) -> bool:
        """True if clamd answers ``PONG`` within *budget* seconds."""
        try:
            async with asyncio.timeout(budget):
                reader, writer = await self._connect()
                try:
                    writer.write(b"zPING\0")
                    await writer.drain()
                    raw = await _read_reply(reader)
                finally:
                    await _close(writer)
        except (TimeoutError, OSError):
            return False
        return raw.rstrip(b"\0").strip() == b"PONG"

    async def _instream(self, data: bytes) -> bytes:
        reader, writer = await self._connect()
        try:
            try:
                writer.write(b"zINSTREAM\0")
                for start in range(0, len(data), self.chunk):
                    piece = data[start:start + self.chunk]
                    writer.write(struct.pack(">I", len(piece)) + piece)
                    await writer.drain()
                writer.write(struct.pack(">I", 0))
                await writer.drain()
            except (BrokenPipeError, ConnectionResetError):
                # clamd closes early after "INSTREAM size limit exceeded"; its reply may
                # already be waiting, and is worth more than the write error.
                raw = await _read_reply(reader)
                if raw:
                    return raw
                # Its reply can be lost to the reset that closing with unread data causes
                # (a race the load decides). Either way clamd did not see it all.
                raise StreamCut from None
            return await _read_reply(reader)
        finally:
            await _close(writer)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        kind, where, port = self._target
        if kind == "unix":
            return await asyncio.open_unix_connection(where)
        return await asyncio.open_connection(where, port)

    def _findings(self, started: float, *, viruses: tuple[str, ...] = (),
                  unscannable: str | None = None, error: str | None = None) -> Findings:
        return Findings(self.name, viruses=viruses, unscannable=unscannable, error=error,
                        seconds=time.monotonic() - started)


class StreamCut(Exception):
    """clamd closed the connection while the message was still being sent, saying nothing."""


async def _read_reply(reader: asyncio.StreamReader) -> bytes:
    """Bytes up to and including the NUL, or what arrived before clamd closed."""
    try:
        return await reader.readuntil(b"\0")
    except asyncio.IncompleteReadError as error:
        return error.partial
    except asyncio.LimitOverrunError:
        return await reader.read(REPLY_MAX)
    except (ConnectionResetError, BrokenPipeError):  # the transport's error, re-raised
        return b""


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
