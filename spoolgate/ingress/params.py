"""ESMTP parameters of MAIL and RCPT: SIZE, BODY, SMTPUTF8 (RFC 6531) and DSN (RFC 3461).

Keywords are case-insensitive, values are not (ENVID and ORCPT are xtext and
go back out byte for byte in DSNs). Malformed values get ``501 5.5.4``;
keywords we do not offer get ``555 5.5.4``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from spoolgate.mail.envelope import Notify, Ret
from spoolgate.mail.reply import MESSAGE_TOO_BIG, SmtpError

_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+")
MAX_ENVID = 100


@dataclass(frozen=True, slots=True)
class MailParams:
    size: int | None = None
    body: str = "7BIT"
    smtputf8: bool = False
    ret: Ret | None = None
    envid: str | None = None


@dataclass(frozen=True, slots=True)
class RcptParams:
    notify: frozenset[Notify] = frozenset()
    orcpt: str | None = None


def _bad(text: str) -> SmtpError:
    return SmtpError(501, "5.5.4", text)


def split_params(text: str) -> dict[str, str | None]:
    """``KEY=value KEY2`` -> {"KEY": "value", "KEY2": None}; duplicates are errors."""
    params: dict[str, str | None] = {}
    for item in text.split():
        key, eq, value = item.partition("=")
        key = key.upper()
        if not key.isascii() or not (key[:1].isalnum() and all(c.isalnum() or c == "-" for c in key)):
            raise _bad(f"Bad parameter syntax: {item[:40]!r}")
        if eq and not value:
            raise _bad(f"Empty value for {key}")
        if key in params:
            raise _bad(f"Duplicate parameter {key}")
        params[key] = value if eq else None
    return params


def decode_xtext(value: str) -> str:
    """Decode RFC 3461 xtext; raise :class:`SmtpError` 501 when it is not xtext."""
    if not _XTEXT.fullmatch(value):
        raise _bad("Parameter value is not valid xtext")
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def parse_mail_params(text: str, max_size: int, utf8_offered: bool = True) -> MailParams:
    params = split_params(text)
    size = body = ret = envid = None
    smtputf8 = False
    for key, value in params.items():
        if key == "SIZE":
            if value is None or not value.isdigit() or not value.isascii():
                raise _bad("SIZE needs a number of octets")
            size = int(value)
            if size > max_size:
                raise SmtpError(MESSAGE_TOO_BIG.code, MESSAGE_TOO_BIG.enhanced,
                                f"Message size exceeds fixed limit of {max_size} octets")
        elif key == "BODY":
            body = (value or "").upper()
            if body not in ("7BIT", "8BITMIME"):
                raise _bad("BODY must be 7BIT or 8BITMIME")
        elif key == "SMTPUTF8" and utf8_offered:
            if value is not None:
                raise _bad("SMTPUTF8 takes no value")
            smtputf8 = True
        elif key == "RET":
            try:
                ret = Ret((value or "").upper())
            except ValueError:
                raise _bad("RET must be FULL or HDRS") from None
        elif key == "ENVID":
            if value is None:
                raise _bad("ENVID needs a value")
            envid = decode_xtext(value)
            if len(envid) > MAX_ENVID:
                raise _bad(f"ENVID longer than {MAX_ENVID} characters")
            # RFC 3461 4.4: printable US-ASCII; it goes back out in DSN headers and CLI output.
            if not all(32 <= ord(c) < 127 for c in envid):
                raise _bad("ENVID holds control or non-ASCII characters")
        else:
            raise SmtpError(555, "5.5.4", f"MAIL parameter {key} not supported")
    return MailParams(size=size, body=body or "7BIT", smtputf8=smtputf8, ret=ret, envid=envid)


def parse_notify(value: str | None) -> frozenset[Notify]:
    if not value:
        raise _bad("NOTIFY needs a value")
    try:
        items = frozenset(Notify(item) for item in value.upper().split(","))
    except ValueError:
        raise _bad("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY") from None
    if Notify.NEVER in items and len(items) > 1:
        raise _bad("NOTIFY=NEVER cannot be combined")
    if len(items) != len(value.split(",")):
        raise _bad("NOTIFY lists a value twice")
    return items


def _unicode_escape(match: re.Match[str]) -> str:
    code = int(match.group(1), 16)
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        raise _bad("ORCPT escapes a code point that is not a character")
    return chr(code)


def parse_orcpt(value: str | None) -> str:
    if not value:
        raise _bad("ORCPT needs addr-type;address")
    addr_type, semicolon, address = value.partition(";")
    if not semicolon or not _ADDR_TYPE.fullmatch(addr_type) or not address:
        raise _bad("ORCPT must be addr-type;address")
    if addr_type.lower() == "utf-8":
        # RFC 6533 utf-8-addr-xtext: \x{HEX} escapes, UTF-8 left as it is.
        decoded = re.sub(r"\\x\{([0-9A-Fa-f]{1,6})\}", _unicode_escape, address)
    else:
        decoded = decode_xtext(address)
    if any(ord(c) < 32 or ord(c) == 127 for c in decoded):
        raise _bad("ORCPT holds control characters")
    return f"{addr_type.lower()};{decoded}"


def parse_rcpt_params(text: str) -> RcptParams:
    params = split_params(text)
    notify: frozenset[Notify] = frozenset()
    orcpt = None
    for key, value in params.items():
        if key == "NOTIFY":
            notify = parse_notify(value)
        elif key == "ORCPT":
            orcpt = parse_orcpt(value)
        else:
            raise SmtpError(555, "5.5.4", f"RCPT parameter {key} not supported")
    return RcptParams(notify=notify, orcpt=orcpt)
