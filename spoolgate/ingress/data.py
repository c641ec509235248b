"""Reading the DATA section: framing, dot-unstuffing and the checks that stop smuggling.

The message ends only at ``<CRLF>.<CRLF>`` (RFC 5321 §4.1.1.4). A bare CR or a
bare LF anywhere in the data makes the whole message refused with a 5xx once
the real end is seen (as Postfix's ``smtpd_forbid_bare_newline``), so
``<LF>.<LF>`` and its cousins can never end one message and start another,
here or at any server we relay to. Oversized messages and over-long lines are
read to their end, discarded, and refused, which keeps the session in step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from spoolgate.mail.reply import MESSAGE_TOO_BIG, Reply

END = b"\r\n.\r\n"
CHUNK = 65536
BARE_NEWLINE = Reply(550, "5.5.2", "Message refused: bare CR or LF in data (RFC 5321 2.3.8)")


def line_too_long(limit: int) -> Reply:
    return Reply(500, "5.5.2", f"Message refused: line longer than {limit} octets (RFC 5321 4.5.3.1.6)")


@dataclass(frozen=True, slots=True)
class DataOutcome:
    """The message bytes (unstuffed, CRLF-terminated), or the reply refusing them."""

    data: bytes
    refusal: Reply | None
    leftover: bytes  # bytes after the terminator: pipelined commands


class DataAssembler:
    """Incremental framer: feed chunks until :meth:`feed` returns an outcome."""

    def __init__(self, max_size: int, max_line: int) -> None:
        self._max_size = max_size
        self._max_line = max_line
        # The CRLF that ended the DATA command line belongs to the framing: "\r\n.\r\n"
        # right after it is an empty message.
        self._buffer = bytearray(b"\r\n")
        self._scanned = 0
        self._discarded = 0  # bytes thrown away after the size limit was passed

    def feed(self, chunk: bytes) -> DataOutcome | None:
        self._buffer += chunk
        end = self._buffer.find(END, self._scanned)
        if end < 0:
            self._scanned = max(0, len(self._buffer) - len(END) + 1)
            if len(self._buffer) - 2 > self._max_size + len(END):
                self._discard()
            return None
        body = bytes(self._buffer[2:end + 2])
        leftover = bytes(self._buffer[end + len(END):])
        self._buffer = bytearray()
        refusal = self._refusal(body)
        if refusal is not None:
            return DataOutcome(b"", refusal, leftover)
        return DataOutcome(unstuff(body), None, leftover)

    def _discard(self) -> None:
        # Keep only the tail that could begin the terminator.
        keep = len(END) - 1
        self._discarded += len(self._buffer) - keep
        del self._buffer[:-keep]
        self._scanned = 0

    def _refusal(self, body: bytes) -> Reply | None:
        if self._discarded or len(body) > self._max_size:
            return Reply(MESSAGE_TOO_BIG.code, MESSAGE_TOO_BIG.enhanced,
                         f"Message size exceeds fixed limit of {self._max_size} octets")
        crlf = body.count(b"\r\n")
        if body.count(b"\n") != crlf or body.count(b"\r") != crlf:
            return BARE_NEWLINE
        # The limit counts the CRLF (RFC 5321 4.5.3.1.6), not a dot doubled for transparency.
        if len(body) > self._max_line and _longest_line(body) + 2 > self._max_line:
            return line_too_long(self._max_line)
        return None


def _longest_line(body: bytes) -> int:
    """Length of the longest line of *body* without its CRLF and transparency dot."""
    lines = body.split(b"\r\n")
    longest = max(map(len, lines))
    # Shorter lines cannot beat longest - 1, which is all a stuffed dot takes off.
    return max(len(line) - line.startswith(b".") for line in lines if len(line) == longest)


def unstuff(body: bytes) -> bytes:
    """Remove the transparency dots of RFC 5321 §4.5.2: the first period of every line
    that starts with one (a lone "." never gets here, it ended the data)."""
    body = body.replace(b"\r\n.", b"\r\n")
    return body[1:] if body.startswith(b".") else body


async def read_data(reader: asyncio.StreamReader, max_size: int, max_line: int,
                    on_progress: Callable[[], None]) -> DataOutcome | None:
    """Read one DATA section from *reader*; None when the client went away first."""
    assembler = DataAssembler(max_size, max_line)
    while True:
        chunk = await reader.read(CHUNK)
        if not chunk:
            return None
        on_progress()
        outcome = assembler.feed(chunk)
        if outcome is not None:
            return outcome
