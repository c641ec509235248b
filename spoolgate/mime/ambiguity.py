"""Constructs that MIME parsers are known to read differently: one view of the structure, or none.

Owns the structural-ambiguity check. It walks the raw bytes on its own (not through the
stdlib parse, which silently resolves what it finds ambiguous) and names every construct on
which the parsers a message meets can disagree: ours (Python's ``email``), the company
server's (Dovecot's, Exchange's), the reader's mail app (Thunderbird's, Outlook's) and other
scanners. Such a message cannot be scanned as the reader will see it, so the scanner reports
it unscannable instead of scoring it (DESIGN.md, "The scanner sees what clients see").

The walk splits multiparts the way RFC 2046 says (innermost open boundary first, whole
delimiter lines), which is where the parsers agree; every place where they do not is a
finding, named by its construct (see :data:`CONSTRUCTS` and docs/threat-model.md).
Nothing a message contains makes it raise: the walk is bounded in parts, depth and header
lines, going past a bound is itself a finding (``structure-too-complex``), and an
unexpected error is the finding ``check-failed``. Every search over a body is one regular
expression pass in C; nothing is quadratic in the message size.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from spoolgate.mime.fields import (
    Field,
    base_name,
    extended_value,
    is_extended,
    plain_value,
    read_field,
)
from spoolgate.mime.parse import Limits

CONSTRUCTS: dict[str, str] = {
    "boundary-reused": "a nested multipart reuses the boundary of an enclosing one",
    "boundary-prefix": "a boundary is a prefix of another open boundary",
    "boundary-line-suffix": "a line is an open boundary followed by other text "
                            "(a delimiter to prefix-matching parsers only)",
    "boundary-not-found": "a multipart whose boundary never appears",
    "boundary-syntax": "a boundary that ends in a space, is unquoted with characters "
                       "that need quotes, or is given only in RFC 2231 form",
    "delimiter-after-close": "a delimiter line after the multipart's closing boundary",
    "missing-final-boundary": "a nested multipart without its closing boundary, "
                              "followed by more content",
    "empty-part": "two delimiter lines with nothing between them (a part to some parsers, "
                  "none to others)",
    "multipart-without-boundary": "a multipart type without a boundary parameter",
    "duplicate-header": "two Content-Type, Content-Transfer-Encoding or "
                        "Content-Disposition fields in one header section",
    "duplicate-parameter": "a boundary, name or filename parameter given twice",
    "conflicting-parameter": "an RFC 2231 parameter that says something else than the "
                             "plain one of the same name",
    "filename-name-mismatch": "Content-Disposition filename and Content-Type name differ",
    "parameter-syntax": "unbalanced quotes or unreadable parameters in a Content-* field, "
                        "or a boundary, name or filename unquoted with characters that "
                        "need quotes",
    "content-type-unreadable": "a Content-Type without a readable type/subtype",
    "content-disposition-unreadable": "a Content-Disposition without a readable "
                                      "disposition type",
    "unknown-transfer-encoding": "a Content-Transfer-Encoding parsers do not agree on",
    "encoded-multipart": "a multipart with a Content-Transfer-Encoding other than "
                         "7bit, 8bit or binary",
    "encoded-message": "an encapsulated message with a Content-Transfer-Encoding other "
                       "than 7bit, 8bit or binary",
    "header-line-malformed": "a line inside a header section that is not a field "
                             "(no colon, space before the colon, a leading continuation)",
    "nul-in-header": "a NUL byte in a header section",
    "bare-cr": "a CR not followed by LF (a line end to some parsers only)",
    "base64-garbage": "a base64 body with characters outside the alphabet or data after "
                      "the padding (decoders skip, stop or fail)",
    "uuencode": "a uuencoded file inside a text body (mail apps list it as an attachment)",
    "yenc": "a yEnc-encoded file inside a text body",
    "binhex": "a BinHex file inside a text body",
    "structure-too-complex": "more parts, nesting or header lines than the check reads",
    "check-failed": "the check itself failed on this message",
}

MAX_HEADER_LINES = 20_000  # header lines read in the whole message before giving up
DEFAULT_LIMITS = Limits()
_IDENTITY = frozenset({"7bit", "8bit", "binary"})
# The uuencode names are decoded by Python's email package and by mail apps alike.
_KNOWN_ENCODINGS = _IDENTITY | {"base64", "quoted-printable", "x-uuencode", "uuencode",
                                "x-uue", "uue"}
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")
_DASH_LINE = re.compile(rb"(?m)^--")
_BARE_CR = re.compile(rb"\r(?!\n)")
_BASE64_GARBAGE = re.compile(rb"[^A-Za-z0-9+/=\s]")
_BASE64_AFTER_PADDING = re.compile(rb"=[\s=]*[A-Za-z0-9+/]")
_UUENCODE = re.compile(rb"(?m)^begin(?:-base64)? [0-7]{3,4} [^\r\n]+\r?\n[M`!-_][^\r\n]*\r?$")
_YENC = re.compile(rb"(?m)^=ybegin .*\bname=")
_BINHEX = re.compile(rb"\(This file must be converted with BinHex")
_WATCHED_PARAMETERS = ("boundary", "name", "filename")


@dataclass(frozen=True, slots=True)
class Ambiguity:
    """One construct found: its name (a key of :data:`CONSTRUCTS`), the part it is in
    (``root``, ``1``, ``1.2``; ``/message`` for an encapsulated message) and a detail."""

    construct: str
    where: str
    detail: str = ""

    def __str__(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.construct} in {self.where}{detail}"


def unscannable_reason(data: bytes, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """Why *data* cannot be scanned as its readers will see it (the first findings, for
    the log and the quarantine), or None when MIME parsers should agree on it."""
    found = find_ambiguities(data, limits)
    if not found:
        return None
    more = f"; and {len(found) - 3} more" if len(found) > 3 else ""
    return ("MIME structure that parsers read differently: "
            + "; ".join(map(str, found[:3])) + more)


def find_ambiguities(data: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[Ambiguity, ...]:
    """Every construct in *data* that MIME parsers can read differently, in document
    order (one finding per construct and part). Never raises."""
    try:
        walk = _Walk(bytes(data), limits)
        if _BARE_CR.search(walk.data):
            walk.note("bare-cr", "root", "a CR without LF")
        walk.entity(0, len(walk.data), "root", (), 0, digest=False)
        return tuple(walk.found)
    except Exception as error:  # a last guard: the check must never crash a scanner
        return (Ambiguity("check-failed", "root", type(error).__name__),)


@dataclass(frozen=True, slots=True)
class _Headers:
    fields: tuple[tuple[str, bytes], ...]
    body_start: int


@dataclass(slots=True)
class _Walk:
    data: bytes
    limits: Limits
    found: list[Ambiguity] = field(default_factory=list)
    parts: int = 0
    header_lines: int = 0
    dash_lines: list[int] = field(default_factory=list)
    stopped: bool = False

    def __post_init__(self) -> None:
        allowed = 4 * self.limits.max_parts
        for match in _DASH_LINE.finditer(self.data):
            if len(self.dash_lines) >= allowed:
                self.give_up("more delimiter-like lines than are read")
                break
            self.dash_lines.append(match.start())

    def note(self, construct: str, where: str, detail: str = "") -> None:
        if not any(a.construct == construct and a.where == where for a in self.found):
            self.found.append(Ambiguity(construct, where, detail[:200]))

    def give_up(self, detail: str) -> None:
        self.note("structure-too-complex", "root", detail)
        self.stopped = True

    def entity(self, start: int, end: int, where: str, open_: tuple[bytes, ...], depth: int,
               *, digest: bool) -> None:
        """Check the entity in ``data[start:end]``, then its children."""
        self.parts += 1
        if self.parts > self.limits.max_parts or depth > self.limits.max_depth:
            self.give_up(f"over {self.limits.max_parts} parts or "
                         f"{self.limits.max_depth} levels")
        if self.stopped:
            return
        headers = self.header_section(start, end, where)
        kind, content_type = self.content_type(headers, where, digest)
        encoding = self.transfer_encoding(headers, where, kind)
        self.disposition(headers, content_type, where)
        body = headers.body_start
        if kind.startswith("multipart/"):
            self.multipart(content_type, body, end, where, open_, depth, kind)
        elif kind.startswith("message/") and kind != "message/delivery-status":
            self.entity(body, end, f"{where}/message", open_, depth + 1, digest=False)
        else:
            self.leaf(body, end, where, kind, encoding)

    def header_section(self, start: int, end: int, where: str) -> _Headers:
        fields: list[tuple[str, bytes]] = []
        position = start
        while position < end:
            self.header_lines += 1
            if self.header_lines > MAX_HEADER_LINES:
                self.give_up(f"over {MAX_HEADER_LINES} header lines")
                return _Headers(tuple(fields), end)
            newline = self.data.find(b"\n", position, end)
            following = end if newline < 0 else newline + 1
            line = self.data[position:following].rstrip(b"\r\n")
            if not line:
                return self.headers_end(fields, start, following, where)
            name = _FIELD_NAME.match(line)
            if name is not None:
                fields.append((line[:name.end() - 1].decode("latin-1").lower(),
                               line[name.end():]))
            elif line[:1] in (b" ", b"\t") and fields:
                fields[-1] = (fields[-1][0], fields[-1][1] + b"\n" + line)
            elif not (position == start and line.startswith(b"From ")):  # an mbox line
                self.note("header-line-malformed", where, repr(line[:60]))
            position = following
        return self.headers_end(fields, start, end, where)

    def headers_end(self, fields: list[tuple[str, bytes]], start: int, body: int,
                    where: str) -> _Headers:
        if b"\x00" in self.data[start:body]:
            self.note("nul-in-header", where)
        for name in ("content-type", "content-transfer-encoding", "content-disposition"):
            if sum(1 for key, _ in fields if key == name) > 1:
                self.note("duplicate-header", where, name)
        return _Headers(tuple(fields), body)

    def content_type(self, headers: _Headers, where: str,
                     digest: bool) -> tuple[str, Field | None]:
        value = _first(headers, "content-type")
        default = "message/rfc822" if digest else "text/plain"
        if value is None:
            return default, None
        content_type = read_field(value, media_type=True)
        if not content_type.kind:
            self.note("content-type-unreadable", where, repr(value[:60]))
            return default, content_type
        self.parameters(content_type, where, "Content-Type")
        return content_type.kind, content_type

    def transfer_encoding(self, headers: _Headers, where: str, kind: str) -> str:
        value = _first(headers, "content-transfer-encoding")
        if value is None:
            return "7bit"
        encoding = value.decode("latin-1").strip().lower()
        if encoding not in _KNOWN_ENCODINGS:
            self.note("unknown-transfer-encoding", where, repr(encoding[:40]))
        elif encoding not in _IDENTITY and kind.startswith("multipart/"):
            self.note("encoded-multipart", where, f"{kind} in {encoding}")
        elif encoding not in _IDENTITY and kind.startswith("message/"):
            self.note("encoded-message", where, f"{kind} in {encoding}")
        return encoding

    def disposition(self, headers: _Headers, content_type: Field | None, where: str) -> None:
        value = _first(headers, "content-disposition")
        if value is None:
            return
        disposition = read_field(value, media_type=False)
        if not disposition.kind:
            self.note("content-disposition-unreadable", where, repr(value[:60]))
        self.parameters(disposition, where, "Content-Disposition")
        filename = _value(disposition, "filename")
        name = _value(content_type, "name") if content_type is not None else None
        if (filename is not None and name is not None
                and filename.strip().casefold() != name.strip().casefold()):
            self.note("filename-name-mismatch", where, f"{filename[:60]!r} / {name[:60]!r}")

    def parameters(self, read: Field, where: str, header: str) -> None:
        watched = read.kind.startswith("multipart/") or any(
            base_name(p) in _WATCHED_PARAMETERS for p in read.parameters)
        if watched and any(m != "type" for m in read.malformed):
            self.note("parameter-syntax", where, f"{header}: {','.join(read.malformed)}")
        for parameter in read.parameters:
            if (parameter.needs_quotes and not is_extended(parameter)
                    and parameter.name in ("name", "filename")):
                self.note("parameter-syntax", where, f"{header}: {parameter.name} unquoted")
        for name in _WATCHED_PARAMETERS:
            plain = plain_value(read.parameters, name)
            sections = [p.name for p in read.parameters
                        if is_extended(p) and base_name(p) == name]
            if len(plain) > 1 or len(sections) != len(set(sections)):
                self.note("duplicate-parameter", where, f"{header} {name}")
            extended = extended_value(read.parameters, name) if sections else None
            if plain and extended is not None and plain[0].strip() != extended.strip():
                self.note("conflicting-parameter", where,
                          f"{header} {name}={plain[0][:40]!r} / {name}*={extended[:40]!r}")

    def multipart(self, content_type: Field | None, body: int, end: int, where: str,
                  open_: tuple[bytes, ...], depth: int, kind: str) -> None:
        boundary = _boundary(content_type, self, where)
        if boundary is None:
            self.note("multipart-without-boundary", where, kind)
            return
        for outer in open_:
            if outer == boundary:
                self.note("boundary-reused", where, repr(boundary[:70]))
            elif outer.startswith(boundary) or boundary.startswith(outer):
                self.note("boundary-prefix", where, f"{boundary[:70]!r} / {outer[:70]!r}")
        delimiters, closed = self.delimiters(boundary, body, end, where, (*open_, boundary))
        if not delimiters:
            self.note("boundary-not-found", where, repr(boundary[:70]))
            return
        if closed is None and open_ and self.data[end:].strip():
            self.note("missing-final-boundary", where, repr(boundary[:70]))
        if closed is not None:
            self.epilogue(boundary, closed, end, where)
        limits = [*delimiters, closed if closed is not None else (end, end)]
        for number, ((_, part_start), (next_line, _)) in enumerate(
                zip(limits, limits[1:], strict=False), start=1):
            part_end = _before_line_break(self.data, part_start, next_line)
            child = f"{number}" if where == "root" else f"{where}.{number}"
            if part_start >= next_line:
                self.note("empty-part", child)
            self.entity(part_start, part_end, child, (*open_, boundary), depth + 1,
                        digest=kind == "multipart/digest")
            if self.stopped:
                return

    def delimiters(self, boundary: bytes, start: int, end: int, where: str,
                   open_: tuple[bytes, ...]
                   ) -> tuple[list[tuple[int, int]], tuple[int, int] | None]:
        """(line start, next line start) of each delimiter of *boundary* in the range,
        and of its close delimiter if any; lines that match an open boundary only as a
        prefix are findings."""
        found: list[tuple[int, int]] = []
        first = bisect.bisect_left(self.dash_lines, start)
        last = bisect.bisect_left(self.dash_lines, end)
        for line_start in self.dash_lines[first:last]:
            newline = self.data.find(b"\n", line_start, end)
            following = end if newline < 0 else newline + 1
            line = self.data[line_start + 2:following].rstrip(b"\r\n")
            match = _delimiter_of(line, open_)
            if match is None:
                continue
            matched, rest = match
            if rest not in (b"", b"--"):
                self.note("boundary-line-suffix", where, repr(line[:80]))
            elif matched != boundary:
                return found, None  # an enclosing multipart's delimiter ends this one
            elif rest == b"--":
                return found, (line_start, following)
            else:
                found.append((line_start, following))
        return found, None

    def epilogue(self, boundary: bytes, closed: tuple[int, int], end: int, where: str) -> None:
        first = bisect.bisect_left(self.dash_lines, closed[1])
        last = bisect.bisect_left(self.dash_lines, end)
        for line_start in self.dash_lines[first:last]:
            if self.data.startswith(boundary, line_start + 2):
                self.note("delimiter-after-close", where, repr(boundary[:70]))
                return

    def leaf(self, body: int, end: int, where: str, kind: str, encoding: str) -> None:
        if encoding == "base64":
            if _BASE64_GARBAGE.search(self.data, body, end):
                self.note("base64-garbage", where, "characters outside the alphabet")
            elif _BASE64_AFTER_PADDING.search(self.data, body, end):
                self.note("base64-garbage", where, "data after the padding")
        elif kind.startswith("text/"):
            for construct, pattern in (("uuencode", _UUENCODE), ("yenc", _YENC),
                                       ("binhex", _BINHEX)):
                found = pattern.search(self.data, body, end)
                if found is not None:
                    self.note(construct, where, repr(found.group(0)[:60]))


def _first(headers: _Headers, name: str) -> bytes | None:
    return next((value for key, value in headers.fields if key == name), None)


def _value(read: Field, name: str) -> str | None:
    extended = extended_value(read.parameters, name)
    if extended is not None:
        return extended
    plain = plain_value(read.parameters, name)
    return plain[0] if plain else None


def _boundary(content_type: Field | None, walk: _Walk, where: str) -> bytes | None:
    if content_type is None:
        return None
    value = _value(content_type, "boundary")
    if value is None:
        return None
    raw = next((p for p in content_type.parameters if p.name == "boundary"), None)
    if value != value.rstrip() or (raw is not None and raw.needs_quotes):
        walk.note("boundary-syntax", where, repr(value[:80]))
    if raw is None:
        walk.note("boundary-syntax", where, "given only in RFC 2231 form")
    return value.encode("utf-8", "surrogateescape") or None


def _delimiter_of(line: bytes, open_: tuple[bytes, ...]) -> tuple[bytes, bytes] | None:
    """The innermost open boundary *line* (without its leading ``--``) starts with, and the
    rest of the line with trailing blanks removed; None when it starts with none."""
    for boundary in reversed(open_):
        if line.startswith(boundary):
            return boundary, line[len(boundary):].rstrip(b" \t")
    return None


def _before_line_break(data: bytes, start: int, line_start: int) -> int:
    """Where a part ends: before the line break that belongs to the next delimiter."""
    end = line_start
    if end > start and data[end - 1:end] == b"\n":
        end -= 1
        if end > start and data[end - 1:end] == b"\r":
            end -= 1
    return max(start, end)
