"""A tolerant reading of MIME header fields that keeps what stricter parsers throw away.

Owns the lexing of ``Content-Type``/``Content-Disposition`` values into a type and a list
of parameters *as written* (duplicates, RFC 2231 sections and quoting mistakes kept), and
the decoding of one parameter's value (RFC 2231 continuations and charsets, RFC 2047
encoded words). :mod:`spoolgate.mime.ambiguity` uses it to see what different MIME parsers
could read differently. Nothing here raises for any input; every loop is bounded by the
length of the value it reads.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from email.header import decode_header, make_header

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_MEDIA_TYPE = re.compile(rb"[ \t]*(" + _TOKEN + rb")[ \t]*/[ \t]*(" + _TOKEN + rb")[ \t]*(?=;|$)")
_PARAM_NAME = re.compile(rb"[ \t]*([^=;\s\"]+)[ \t]*=[ \t]*")
_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_UNQUOTED = re.compile(rb'[^;\s"]*')
_SECTION = re.compile(r"^([^*]+)(?:\*(\d+))?(\*)?$")
# RFC 2045's tspecials, and "'" and "*", which Python's email reads as RFC 2231 marks.
_TSPECIALS = frozenset(b'()<>@,;:\\"/[]?=\'*')
MAX_PARAMETERS = 64  # parameters read per field; more is itself a finding


@dataclass(frozen=True, slots=True)
class Parameter:
    """One ``name=value`` as written: *name* lowercased (with any ``*N*`` section mark),
    *value* unquoted, and how it was written."""

    name: str
    value: str
    quoted: bool
    needs_quotes: bool  # unquoted but holds characters RFC 2045 allows only in quotes


@dataclass(frozen=True, slots=True)
class Field:
    """A ``Content-Type`` or ``Content-Disposition`` value: its lowercased type (``""`` when
    it cannot be read) and parameters in order; *malformed* names what was skipped."""

    kind: str
    parameters: tuple[Parameter, ...]
    malformed: tuple[str, ...]


def read_field(value: bytes, media_type: bool) -> Field:
    """Lex a field value: ``type/subtype`` (or a disposition token) and its parameters."""
    value = re.sub(rb"\r?\n(?=[ \t])", b"", value).strip()
    malformed: list[str] = []
    if media_type:
        match = _MEDIA_TYPE.match(value)
        kind = (match.group(1) + b"/" + match.group(2)) if match else b""
    else:
        match = re.match(rb"[ \t]*(" + _TOKEN + rb")[ \t]*(?=;|$)", value)
        kind = match.group(1) if match else b""
    if match is None:
        malformed.append("type")
    rest = value[match.end():] if match else value[value.find(b";"):] if b";" in value else b""
    parameters = _parameters(rest, malformed)
    return Field(kind.decode("ascii", "replace").lower(), tuple(parameters), tuple(malformed))


def _parameters(rest: bytes, malformed: list[str]) -> list[Parameter]:
    found: list[Parameter] = []
    position = 0
    while position < len(rest) and len(found) < MAX_PARAMETERS:
        if rest[position:position + 1] in (b" ", b"\t"):
            position += 1
            continue
        if rest[position:position + 1] == b";":
            position += 1
            if rest[position:].lstrip(b" \t")[:1] == b";":
                malformed.append("empty-parameter")  # ";;": some parsers stop reading
            continue
        name = _PARAM_NAME.match(rest, position)
        if name is None:
            malformed.append("parameter")
            end = rest.find(b";", position)
            position = len(rest) if end < 0 else end + 1
            continue
        position = name.end()
        quoted = _QUOTED.match(rest, position)
        raw = quoted.group(1) if quoted else _UNQUOTED.match(rest, position).group(0)
        position = quoted.end() if quoted else position + len(raw)
        if quoted is None and rest[position:position + 1] == b'"':
            malformed.append("quote")
            position = len(rest)
        text = re.sub(rb"\\(.)", rb"\1", raw) if quoted else raw
        found.append(Parameter(name.group(1).decode("latin-1").lower(),
                               text.decode("utf-8", "surrogateescape"), quoted is not None,
                               quoted is None and any(c in _TSPECIALS for c in raw)))
        following = rest[position:].lstrip(b" \t")
        if following and not following.startswith(b";"):
            malformed.append("parameter-trailer")
    if len(found) >= MAX_PARAMETERS:
        malformed.append("too-many-parameters")
    return found


def base_name(parameter: Parameter) -> str:
    """The parameter's name without an RFC 2231 section or charset mark (``name*0*`` → ``name``)."""
    match = _SECTION.match(parameter.name)
    return match.group(1) if match else parameter.name


def is_extended(parameter: Parameter) -> bool:
    """Whether the parameter is an RFC 2231 section or charset-tagged value."""
    return "*" in parameter.name


def plain_value(parameters: tuple[Parameter, ...], name: str) -> list[str]:
    """Every plain (non-RFC 2231) value of *name*, RFC 2047 encoded words decoded."""
    return [_decode_words(p.value) for p in parameters if p.name == name]


def extended_value(parameters: tuple[Parameter, ...], name: str) -> str | None:
    """The RFC 2231 value of *name* (sections joined in number order, charset applied), or
    None when it has no RFC 2231 form."""
    sections: dict[int, tuple[str, bool]] = {}
    for parameter in parameters:
        match = _SECTION.match(parameter.name)
        if match is None or match.group(1) != name or not is_extended(parameter):
            continue
        number = int(match.group(2)[:6]) if match.group(2) else 0
        sections.setdefault(number, (parameter.value, bool(match.group(3))))
    if not sections:
        return None
    charset = "us-ascii"
    pieces: list[bytes] = []
    for index, number in enumerate(sorted(sections)):
        text, encoded = sections[number]
        if index == 0 and encoded and text.count("'") >= 2:
            charset, _, text = text.split("'", 2)
        pieces.append(urllib.parse.unquote_to_bytes(text) if encoded
                      else text.encode("utf-8", "surrogateescape"))
    return _decode_bytes(b"".join(pieces), charset or "us-ascii")


def _decode_bytes(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset, "replace")
    except (LookupError, ValueError):
        return data.decode("latin-1")


def _decode_words(value: str) -> str:
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # any malformed encoded word: keep it as written
        return value
