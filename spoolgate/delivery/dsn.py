"""Delivery status notifications (RFC 3464): the report a sender gets when we fail, delay or deliver.

This module owns whether a recipient asked for a notice (RFC 3461 §4.1) and the
shape of the notice: a multipart/report (RFC 6522) with a human-readable part,
a message/delivery-status part and the returned original or its headers. It
builds bytes only; queueing them with the null sender is the caller's job.

Addresses, server replies, ENVID and ORCPT come from strangers: they are put on
one logical line (controls dropped, folded at spaces) so they can never add a
header line or a MIME part, and no output line exceeds 998 octets. It fails
with ValueError for a request that must not or cannot become a DSN: a null
sender (never a DSN for a DSN), no recipients, or a malformed status code.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from enum import StrEnum
from types import MappingProxyType

from spoolgate.mail.envelope import Notify, Ret

FULL_RETURN_LIMIT = 256 * 1024
"""With RET absent, a failed original up to this size comes back whole, a larger one as headers."""

MAX_LINE = 998
_FOLD_AT = 78
_MAX_WORD = 900  # octets; a longer unbroken run is split so a folded line stays under MAX_LINE
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NOT_HOSTNAME = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_LINE_END = re.compile(rb"\r\n|\r|\n")


class Action(StrEnum):
    """What happened to one recipient (RFC 3464 §2.3.3)."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"


_SUBJECTS = MappingProxyType({Action.FAILED: "Undelivered Mail Returned to Sender",
                              Action.DELAYED: "Delayed Mail (still being retried)",
                              Action.DELIVERED: "Successful Mail Delivery Report"})
_RETURNED = MappingProxyType({Action.FAILED: "Undelivered", Action.DELAYED: "Delayed",
                              Action.DELIVERED: "Delivered"})


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    """One recipient's line of the report: its address, fate and what the remote server said."""

    address: str
    action: Action
    status: str
    orcpt: str | None = None
    remote_mta: str | None = None
    diagnostic: str | None = None
    last_attempt: float | None = None
    will_retry_until: float | None = None


@dataclass(frozen=True, slots=True)
class DsnRequest:
    """Everything a DSN reports about one message, for the recipients that asked for a notice."""

    queue_id: str
    sender: str
    reporting_mta: str
    arrival: float
    recipients: tuple[DsnRecipient, ...]
    original: bytes
    envid: str | None = None
    ret: Ret | None = None


def wants_notice(notify: str | None, action: Action) -> bool:
    """Whether a recipient with the stored NOTIFY value asked for a notice of *action*.

    Absent NOTIFY means FAILURE,DELAY (RFC 3461 §4.1); SUCCESS covers delivered and relayed.
    """
    requested = ({item.strip().upper() for item in notify.split(",")} if notify
                 else {Notify.FAILURE, Notify.DELAY})
    if Notify.NEVER in requested:
        return False
    match Action(action):
        case Action.FAILED:
            return Notify.FAILURE in requested
        case Action.DELAYED:
            return Notify.DELAY in requested
        case _:
            return Notify.SUCCESS in requested


def build_dsn(request: DsnRequest, now: float, message_id_domain: str | None = None) -> bytes:
    """The whole DSN message (headers and body, CRLF line ends), ready to queue with the null sender.

    The result is 7-bit unless the sender's address itself is UTF-8 (then sending it
    needs SMTPUTF8 anyway, and the To: header carries the address as RFC 6532 allows).
    """
    _check(request)
    mta = _hostname(request.reporting_mta)
    full = _returns_full(request)
    parts = (_notification_part(request, mta, full),
             _status_part(request, mta),
             _returned_part(request, _LINE_END.sub(b"\r\n", request.original), full))
    boundary = _boundary(parts)
    delimiter = b"--" + boundary
    body = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts)
    return (_top_headers(request, now, mta, message_id_domain, boundary)
            + b"\r\nThis is a MIME-encapsulated message.\r\n\r\n"
            + body + delimiter + b"--\r\n")


def _check(request: DsnRequest) -> None:
    if not _one_line(request.sender):
        raise ValueError(f"{request.queue_id}: no DSN to the null sender (never a DSN for a DSN)")
    if not request.recipients:
        raise ValueError(f"{request.queue_id}: a DSN needs at least one recipient")
    for recipient in request.recipients:
        if not _STATUS.fullmatch(recipient.status):
            raise ValueError(f"{request.queue_id}: {recipient.status!r} is not an RFC 3463 status")


def _returns_full(request: DsnRequest) -> bool:
    if request.ret == Ret.FULL:
        return True
    if request.ret == Ret.HDRS:
        return False
    failed = any(r.action == Action.FAILED for r in request.recipients)
    return failed and len(request.original) <= FULL_RETURN_LIMIT


# -- the message header --------------------------------------------------------------------------

def _top_headers(request: DsnRequest, now: float, mta: str, message_id_domain: str | None,
                 boundary: bytes) -> bytes:
    domain = _hostname(message_id_domain) if message_id_domain else mta
    queue_id = re.sub(r"[^A-Za-z0-9]", "", request.queue_id)
    fields = [
        ("From", f"Mail Delivery System <MAILER-DAEMON@{mta}>"),
        ("To", f"<{_one_line(request.sender).replace('<', '').replace('>', '')}>"),
        ("Subject", _SUBJECTS[_headline(request.recipients)]),
        ("Date", _date(now)),
        ("Message-ID", f"<{queue_id}.{secrets.token_hex(8)}.dsn@{domain}>"),
        ("Auto-Submitted", "auto-replied"),
        ("MIME-Version", "1.0"),
        ("Content-Type", "multipart/report; report-type=delivery-status;"
                         f' boundary="{boundary.decode("ascii")}"'),
    ]
    return "".join(_field(name, value) for name, value in fields).encode("utf-8")


def _headline(recipients: Iterable[DsnRecipient]) -> Action:
    """What the report is mainly about: any failure, else any delay, else success."""
    actions = {Action(r.action) for r in recipients}
    for action in (Action.FAILED, Action.DELAYED):
        if action in actions:
            return action
    return Action.DELIVERED


def _boundary(parts: Sequence[bytes]) -> bytes:
    # "=_" cannot occur in quoted-printable or base64; the check covers the verbatim original.
    while True:
        candidate = f"=_spoolgate_{secrets.token_hex(16)}".encode("ascii")
        if not any(candidate in part for part in parts):
            return candidate


# -- part 1: the explanation for people ----------------------------------------------------------

def _notification_part(request: DsnRequest, mta: str, full: bool) -> bytes:
    text = _explanation(request, mta, full).replace("\n", "\r\n").encode("utf-8")
    if text.isascii() and _longest_line(text) <= MAX_LINE:
        encoding = "7bit"
    else:
        encoding, text = "quoted-printable", binascii.b2a_qp(text, istext=True)
    return (b"Content-Description: Notification\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: " + encoding.encode("ascii") + b"\r\n\r\n" + text)


def _explanation(request: DsnRequest, mta: str, full: bool) -> str:
    def group(*actions: Action) -> list[DsnRecipient]:
        return [r for r in request.recipients if Action(r.action) in actions]

    paragraphs = [f"This is the mail system at host {mta}."]
    if failed := group(Action.FAILED):
        paragraphs += ["I'm sorry to have to inform you that your message could not be delivered"
                       " to one or more recipients. The mail system has given up on:"]
        paragraphs += [_describe(r) for r in failed]
    if delayed := group(Action.DELAYED):
        paragraphs += ["#" * 68 + "\n# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR"
                       " MESSAGE. #\n" + "#" * 68,
                       "Your message could not be delivered yet to the recipients below. The mail"
                       " system will keep trying until the date given for each of them."]
        paragraphs += [_describe(r) for r in delayed]
    if delivered := group(Action.DELIVERED, Action.RELAYED):
        paragraphs += ["Your message was successfully delivered to the destinations below. A"
                       " relayed destination may not send further notices."]
        paragraphs += [_describe(r) for r in delivered]
    returned = "the original message" if full else "the headers of the original message"
    paragraphs += [f"The delivery report and {returned} are attached. For further assistance,"
                   " please send mail to postmaster and include this report.",
                   "                   The mail system"]
    return "\n\n".join(_wrap(p) for p in paragraphs) + "\n"


def _describe(recipient: DsnRecipient) -> str:
    host = _one_line(recipient.remote_mta or "")
    reply = _one_line(recipient.diagnostic or "")
    if host and reply:
        detail = f"host {host} said: {reply}"
    else:
        detail = reply or (f"host {host}, status {recipient.status}" if host
                           else f"status {recipient.status}")
    if recipient.action == Action.DELAYED and recipient.will_retry_until is not None:
        detail += f" (will retry until {_date(recipient.will_retry_until)})"
    return f"<{_one_line(recipient.address)}>: {detail}"


def _wrap(paragraph: str) -> str:
    if paragraph.startswith(("#", " ")):
        return paragraph
    return textwrap.fill(paragraph, width=72, subsequent_indent="    " if paragraph[0] == "<" else "",
                         break_long_words=False, break_on_hyphens=False)


# -- part 2: message/delivery-status ---------------------------------------------------------------

def _status_part(request: DsnRequest, mta: str) -> bytes:
    per_message = [("Reporting-MTA", f"dns; {mta}"),
                   ("X-Spoolgate-Queue-ID", _ascii(_one_line(request.queue_id)))]
    if envid := _ascii(_one_line(request.envid or "")):
        per_message.append(("Original-Envelope-Id", envid))
    per_message.append(("Arrival-Date", _date(request.arrival)))
    blocks = [per_message] + [_recipient_fields(r) for r in request.recipients]
    # Blocks are separated by one empty line; the stdlib parser reads each as a header block.
    text = "\r\n".join("".join(_field(name, value) for name, value in block) for block in blocks)
    return (b"Content-Description: Delivery report\r\n"
            b"Content-Type: message/delivery-status\r\n\r\n" + text.encode("ascii"))


def _recipient_fields(recipient: DsnRecipient) -> list[tuple[str, str]]:
    action = Action(recipient.action)
    fields = []
    if recipient.orcpt and (orcpt := _original_recipient(recipient.orcpt)):
        fields.append(("Original-Recipient", orcpt))
    fields += [("Final-Recipient", _typed_address(recipient.address)),
               ("Action", action.value),
               ("Status", recipient.status)]
    if host := _hostname(recipient.remote_mta or "", fallback=""):
        fields.append(("Remote-MTA", f"dns; {host}"))
    if reply := _ascii(_one_line(recipient.diagnostic or "")):
        fields.append(("Diagnostic-Code", f"smtp; {reply}"))
    if recipient.last_attempt is not None:
        fields.append(("Last-Attempt-Date", _date(recipient.last_attempt)))
    if action == Action.DELAYED and recipient.will_retry_until is not None:
        fields.append(("Will-Retry-Until", _date(recipient.will_retry_until)))
    return fields


def _typed_address(address: str) -> str:
    clean = _one_line(address)
    return f"rfc822; {clean}" if clean.isascii() else f"utf-8; {_utf8_xtext(clean)}"


def _original_recipient(orcpt: str) -> str:
    clean = _one_line(orcpt)
    addr_type, semicolon, address = clean.partition(";")
    if not semicolon or not _ADDR_TYPE.fullmatch(addr_type):
        addr_type, address = "rfc822", clean
    if addr_type.lower() == "utf-8":
        return f"utf-8;{_utf8_xtext(address)}"
    return f"{addr_type};{_ascii(address)}"


def _utf8_xtext(text: str) -> str:
    """RFC 6533 utf-8-addr-xtext: QCHAR as it is, everything else as ``\\x{HEX}``."""
    return "".join(c if "!" <= c <= "~" and c not in "+=\\" else f"\\x{{{ord(c):02X}}}"
                   for c in text)


# -- part 3: the returned original ---------------------------------------------------------------

def _returned_part(request: DsnRequest, original: bytes, full: bool) -> bytes:
    content = original if full else _header_section(original)
    what = _RETURNED[_headline(request.recipients)]
    description = f"Content-Description: {what} Message{'' if full else ' Headers'}\r\n"
    if content.isascii() and b"\0" not in content and _longest_line(content) <= MAX_LINE:
        kind = "message/rfc822" if full else "text/rfc822-headers"
        return f"{description}Content-Type: {kind}\r\n\r\n".encode("ascii") + content
    # 8-bit data, NULs or over-long lines. message/rfc822 may not be base64-encoded
    # (RFC 2046 §5.2.1) but message/global and message/global-headers may (RFC 6532 §3.7,
    # RFC 6533 §6.3): the bytes come back exactly and the DSN stays 7-bit with short lines,
    # so it needs no 8BITMIME or BINARYMIME from the sender's server.
    kind = "message/global" if full else "message/global-headers"
    encoded = base64.b64encode(content)
    lines = b"\r\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
    return (f"{description}Content-Type: {kind}\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode("ascii") + lines


def _header_section(message: bytes) -> bytes:
    if message.startswith(b"\r\n"):
        return b""
    end = message.find(b"\r\n\r\n")
    if end >= 0:
        return message[:end + 2]
    return message if not message or message.endswith(b"\r\n") else message + b"\r\n"


# -- values on one line --------------------------------------------------------------------------

def _one_line(text: str) -> str:
    """*text* with every control character and line break gone, whitespace runs as one space."""
    return " ".join(_CONTROLS.sub(" ", text).split())


def _ascii(text: str) -> str:
    return "".join(c if c.isascii() else f"\\x{{{ord(c):02X}}}" for c in text)


def _hostname(text: str | None, fallback: str = "localhost") -> str:
    return _NOT_HOSTNAME.sub("", text or "") or fallback


def _date(epoch: float) -> str:
    return format_datetime(datetime.fromtimestamp(int(epoch), UTC))


def _field(name: str, value: str) -> str:
    """``name: value`` folded at spaces near 78 columns, each line under MAX_LINE octets."""
    words = [piece for word in value.split(" ") for piece in _pieces(word)]
    lines, line, started = [], f"{name}:", False
    for word in words:
        if started and len((line + " " + word).encode("utf-8")) > _FOLD_AT:
            lines.append(line)
            line = ""
        line += " " + word
        started = True
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _pieces(word: str) -> list[str]:
    """*word* cut into runs of at most _MAX_WORD octets (a fold adds a space between them)."""
    pieces, current, size = [], [], 0
    for char in word:
        width = len(char.encode("utf-8"))
        if size + width > _MAX_WORD:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    pieces.append("".join(current))
    return pieces


def _longest_line(data: bytes) -> int:
    return max(len(line) for line in data.split(b"\r\n"))
