"""The trace header we prepend (RFC 5321 §4.4) and the hop count that stops loops."""

from __future__ import annotations

import email.utils
import re

from spoolgate.mail.envelope import Envelope

_RECEIVED = re.compile(rb"^received[ \t]*:", re.IGNORECASE | re.MULTILINE)


def header_block(data: bytes) -> bytes:
    """The header section of *data* (up to the first empty line), CRLF line endings."""
    end = data.find(b"\r\n\r\n")
    if data.startswith(b"\r\n"):
        return b""
    return data if end < 0 else data[:end + 2]


def count_received(data: bytes) -> int:
    """How many ``Received:`` headers the message carries (its hop count)."""
    return len(_RECEIVED.findall(header_block(data)))


def _protocol(envelope: Envelope, esmtp: bool) -> str:
    # RFC 3848 and RFC 6531 "with" keywords.
    if envelope.smtputf8:
        base = "UTF8SMTP"
    else:
        base = "ESMTP" if esmtp else "SMTP"
    return base + ("S" if envelope.client.tls else "")


def _clean(text: str) -> str:
    """Keep client-supplied words from breaking the header: printable ASCII, no parens."""
    return "".join(c if 32 < ord(c) < 127 and c not in "()[];\\" else "?" for c in text)[:255]


def received_header(envelope: Envelope, queue_id: str, hostname: str, esmtp: bool,
                    now: float) -> bytes:
    """One ``Received:`` header, folded, ending in CRLF."""
    client = envelope.client
    tls = f" (using {client.tls})" if client.tls else ""
    recipient = f"\r\n\tfor <{_clean(envelope.recipients[0].address)}>" if len(envelope.recipients) == 1 else ""
    date = email.utils.formatdate(now, localtime=False, usegmt=True)
    line = (f"Received: from {_clean(client.helo) or 'unknown'} ([{client.ip}])\r\n"
            f"\tby {hostname} (Spoolgate) with {_protocol(envelope, esmtp)}{tls}\r\n"
            f"\tid {queue_id}{recipient}; {date}\r\n")
    return line.encode("ascii")
