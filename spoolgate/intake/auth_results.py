"""The ``Authentication-Results`` header (RFC 8601): writing ours, removing forged ones.

Owns two pure functions on bytes. :func:`authentication_results_header` renders method
results as one folded header field, values quoted when they are not tokens and stripped to
printable ASCII, each bounded in length, so nothing a sender controls (a DKIM ``d=``, an SPF
error text) can break out of its field. :func:`strip_forged_results` removes, from the
top-level header block only, every incoming ``Authentication-Results`` field whose
authserv-id is ours (RFC 8601 §5: downstream readers trust that id), and keeps the others.
Neither raises for any input; the body is never touched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from spoolgate.mail.verdict import AuthResult

MAX_VALUE = 200  # characters of one value (reason, property) kept in the header
_LINE = 78  # RFC 5322 §2.1.1: lines SHOULD be no longer than 78 characters
_TOKEN = re.compile(r'[^\x00-\x20()<>@,;:\\"/\[\]?=\x7f]+')  # RFC 2045 §5.1
_ADDRESS = re.compile(  # RFC 8601 pvalue: [ [ local-part ] "@" ] domain-name
    r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]*@)?[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_KEYWORD_JUNK = re.compile(r"[^A-Za-z0-9._-]")
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_HEADER_END = re.compile(rb"(?:^|\n)(\r?\n)")
_LINES = re.compile(rb"[^\n]*\n|[^\n]+")
_FIELD_NAME = re.compile(rb"authentication-results[ \t]*:", re.IGNORECASE)
_ID_TOKEN = re.compile(rb'[^\x00-\x20()<>@,;:\\"/\[\]?=\x7f]+')


def authentication_results_header(authserv_id: str, results: Sequence[AuthResult]) -> bytes:
    """``Authentication-Results: <id>;`` and one folded line per result, ending in CRLF.

    With no results the field says ``none`` (RFC 8601 §2.2).
    """
    first = f"Authentication-Results: {_value(authserv_id)};"
    if not results:
        return f"{first} none\r\n".encode("ascii")
    lines = [first] + [_result_text(result) + ";" for result in results]
    return ("\r\n\t".join(lines)[:-1] + "\r\n").encode("ascii")


def _result_text(result: AuthResult) -> str:
    """``method=result [reason=...] ptype.property=value ...``, folded past 78 characters."""
    parts = [f"{_keyword(result.method)}={_keyword(result.result)}"]
    if result.reason:
        parts.append(f"reason={_value(result.reason)}")
    parts.extend(f"{_keyword(name)}={_pvalue(value)}" for name, value in result.properties)
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + len(part) + 9 > _LINE:  # 8 for the tab, 1 for the space
            lines.append(part)
        else:
            lines[-1] += " " + part
    return "\r\n\t ".join(lines)


def _keyword(text: str) -> str:
    return _KEYWORD_JUNK.sub("", text)[:64] or "unknown"


def _printable(text: str) -> str:
    return _NOT_PRINTABLE.sub("?", text.strip())[:MAX_VALUE]


def _value(text: str) -> str:
    """A token as it is, anything else as a quoted-string (RFC 2045 ``value``)."""
    text = _printable(text)
    if _TOKEN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pvalue(text: str) -> str:
    """A property value: an address or domain as it is (RFC 8601 ``pvalue``), else a value."""
    text = _printable(text)
    return text if _ADDRESS.fullmatch(text) else _value(text)


def strip_forged_results(data: bytes, authserv_id: str) -> bytes:
    """``data`` without the top-level ``Authentication-Results`` fields that claim our id.

    The header block ends at the first empty line (or the end of ``data``); folded fields
    go as a whole; the id is compared case-insensitively after any comments.
    """
    end = _header_end(data)
    ours = authserv_id.strip().lower().encode("ascii", "replace")
    kept = [field for field in _fields(data[:end]) if _authserv_id(field) != ours]
    return b"".join(kept) + data[end:]


def _header_end(data: bytes) -> int:
    """Where the empty line after the header block starts, or ``len(data)``."""
    match = _HEADER_END.search(data)
    return match.start(1) if match else len(data)


def _fields(head: bytes) -> list[bytes]:
    """The header block cut into fields, each with its continuation lines."""
    fields: list[bytes] = []
    for line in _LINES.findall(head):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _authserv_id(field: bytes) -> bytes | None:
    """The lower-cased authserv-id of an ``Authentication-Results`` field, else None."""
    match = _FIELD_NAME.match(field)
    if match is None:
        return None
    value = field[match.end():].replace(b"\r", b"").replace(b"\n", b"")
    start = _skip_cfws(value, 0)
    if value[start:start + 1] == b'"':
        return _quoted_string(value, start + 1).lower()
    token = _ID_TOKEN.match(value, start)
    return token.group().lower() if token else b""


def _skip_cfws(value: bytes, at: int) -> int:
    """The index after white space and (nested) comments starting at ``at``."""
    depth = 0
    while at < len(value):
        char = value[at:at + 1]
        if char == b"\\" and depth:
            at += 1
        elif char == b"(":
            depth += 1
        elif char == b")" and depth:
            depth -= 1
        elif not depth and char not in (b" ", b"\t"):
            return at
        at += 1
    return at


def _quoted_string(value: bytes, at: int) -> bytes:
    """The content of a quoted-string whose opening quote is just before ``at``."""
    out = bytearray()
    while at < len(value) and value[at:at + 1] != b'"':
        if value[at:at + 1] == b"\\":
            at += 1
        out += value[at:at + 1]
        at += 1
    return bytes(out)
