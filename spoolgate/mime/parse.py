"""Parse message bytes once, with the stdlib ``email`` package and ``email.policy.default``.

Owns the single reading of a message that the scanner, the store's index, the relay and the
webmail all use, so two components can never disagree about what a message contains.
It never raises: malformed input, limits reached and decoding failures become defect names
on the part or on the message, and ``truncated`` says when a limit cut the parse short; a
truncated parse is incomplete, so callers must not treat it as clean.
The stdlib parser recurses once per nesting level and its cost grows with nesting depth and
with the size of Content-* headers, so the input is cut before either gets out of bounds.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from dataclasses import dataclass, field
from email import policy
from email.feedparser import BytesFeedParser
from email.header import decode_header, make_header
from email.headerregistry import UnstructuredHeader
from email.message import Message
from email.utils import getaddresses
from html.parser import HTMLParser

# Costs measured with CPython 3.11's email package and policy.default (see _bounded_input).
MAX_HEADERS = 1000  # top-level headers decoded; the rest are dropped with a defect
ROOT_HEADER_BUDGET = 64 * 1024  # bytes of top-level headers given the structured parser
STRUCTURED_HEADER_MAX = 8192  # one longer value skips it (address parsing is superlinear)
MIME_HEADER_BUDGET = 32 * 1024  # bytes of Content-* headers per message: ~5-15 ms per KB
MIME_HEADER_MAX = 4 * 1024  # one Content-* header; longer ones cost superlinear time
ADDRESS_FIELD_MAX = 4096  # characters of an address field given to the address parser
_FEED_CHUNK = 64 * 1024
_DELIMITER_LINE = re.compile(rb"(?m)^--")
_CONTENT_HEADER = re.compile(rb"(?im)^content-[a-z0-9-]*[ \t]*:[^\n]*(?:\n[ \t][^\n]*)*")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_NESTING = re.compile(rb"(?i)multipart|message/")
_BASE64_DEFECTS = frozenset({"InvalidBase64PaddingDefect", "InvalidBase64CharactersDefect",
                             "InvalidBase64LengthDefect"})
_BLOCK_TAGS = frozenset({"p", "br", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6",
                         "table", "blockquote", "pre", "hr"})


@dataclass(frozen=True, slots=True)
class Limits:
    """How far the parse may go before it stops and says so."""

    max_parts: int = 1000
    max_depth: int = 50
    max_payload: int = 32 * 1024 * 1024
    max_header_line: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class Part:
    """A leaf part: its decoded bytes, its text for text/* parts, and what was wrong with it."""

    content_type: str
    charset: str | None
    filename: str | None
    disposition: str | None
    content_id: str | None
    size: int
    depth: int
    payload: bytes
    text: str | None
    defects: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """The one parse of a message: top-level headers decoded, leaf parts in document order."""

    headers: tuple[tuple[str, str], ...]
    subject: str
    from_: str
    to: str
    cc: str
    date: str
    message_id: str
    parts: tuple[Part, ...]
    part_count: int
    max_depth: int
    defects: tuple[str, ...]
    truncated: bool

    def header(self, name: str) -> str | None:
        """The first top-level header field called *name* (any case), decoded; else None."""
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)

    def text_body(self) -> str:
        """The first inline text/plain part, else the first HTML body as crude text, else ""."""
        for part in self.parts:
            if part.content_type == "text/plain" and not _is_attachment(part):
                return part.text or ""
        for part in self.html_bodies():
            return html_to_text(part.text or "")
        return ""

    def html_bodies(self) -> tuple[Part, ...]:
        """The text/html parts that are not attachments, in document order."""
        return tuple(p for p in self.parts
                     if p.content_type == "text/html" and not _is_attachment(p))

    def attachments(self) -> tuple[Part, ...]:
        """Parts with a filename or a disposition of attachment."""
        return tuple(p for p in self.parts if _is_attachment(p))


def _is_attachment(part: Part) -> bool:
    return part.filename is not None or part.disposition == "attachment"


@dataclass(slots=True)
class _Walk:
    limits: Limits
    defects: list[str] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    part_count: int = 0
    max_depth: int = 0
    truncated: bool = False
    structured_budget: int = ROOT_HEADER_BUDGET

    def stop(self, defect: str) -> None:
        if defect not in self.defects:
            self.defects.append(defect)
        self.truncated = True


def parse_message(data: bytes, limits: Limits = Limits()) -> ParsedMessage:
    """Parse ``data`` as one RFC 5322 message. Never raises for any input bytes."""
    walk = _Walk(limits)
    try:
        return _parse(bytes(data), walk)
    except Exception as error:  # a last guard: bad input must never crash a caller
        walk.stop(f"parser-error:{type(error).__name__}")
        return ParsedMessage((), "", "", "", "", "", "", tuple(walk.parts), walk.part_count,
                             walk.max_depth, tuple(walk.defects), True)


HEADER_SECTION_LIMIT = 64 * 1024  # bytes of header section :func:`header_summary` reads
SUMMARY_LIMIT = 500  # characters kept of a subject or Message-ID for tracking


def summary_of(parsed: ParsedMessage) -> tuple[str, str]:
    """(Subject, Message-ID) of a parsed message, cut as :func:`header_summary` cuts them:
    for intake, which has the scan's parse already."""
    return parsed.subject[:SUMMARY_LIMIT], parsed.message_id.strip()[:SUMMARY_LIMIT]


def header_summary(data: bytes) -> tuple[str, str]:
    """(Subject, Message-ID) of a message, from its header section alone (the first
    64 KiB at most), decoded by the same parser as everything else and cut to 500
    characters each. Never raises."""
    end = data.find(b"\r\n\r\n", 0, HEADER_SECTION_LIMIT)
    head = data[:end + 2] if end >= 0 else data[:HEADER_SECTION_LIMIT]
    walk = _Walk(Limits())
    found: dict[str, str] = {}
    try:
        # Only the two headers are decoded: decoding every header (what a full parse
        # does) cost about 1.5 ms per message, on the SMTP session's event loop.
        for name, value in itertools.islice(_feed(head, walk).raw_items(), MAX_HEADERS):
            key = name.lower()
            if key in ("subject", "message-id") and key not in found:
                found[key] = _decode_header(name, value, walk)
    except Exception:  # a last guard, as in parse_message
        return "", ""
    return (found.get("subject", "")[:SUMMARY_LIMIT],
            found.get("message-id", "").strip()[:SUMMARY_LIMIT])


def _parse(data: bytes, walk: _Walk) -> ParsedMessage:
    if b"\x00" in data:
        walk.defects.append("nul-bytes")
    root = _feed(_bounded_input(data, walk), walk)
    headers = _decode_headers(root, walk)
    _walk_tree(root, walk)
    first: dict[str, str] = {}
    for name, value in headers:
        first.setdefault(name.lower(), value)
    return ParsedMessage(
        headers=headers, subject=first.get("subject", ""), from_=first.get("from", ""),
        to=first.get("to", ""), cc=first.get("cc", ""), date=first.get("date", ""),
        message_id=first.get("message-id", ""), parts=tuple(walk.parts),
        part_count=walk.part_count, max_depth=walk.max_depth,
        defects=tuple(dict.fromkeys(walk.defects)), truncated=walk.truncated)


def _bounded_input(data: bytes, walk: _Walk) -> bytes:
    """Cut the input before the stdlib spends unbounded time on what the walk would not reach.

    Every part after the first needs a line beginning with "--": four such lines per allowed
    part leave room for signatures and rules in bodies. The stdlib parses Content-* headers
    several times per part (5-10 ms per KB with policy.default, worse for one long header), so
    each has a size cap and all of them a budget. Any cut makes the parse ``truncated``.
    """
    cut = len(data)
    allowed = 4 * walk.limits.max_parts
    for count, match in enumerate(_DELIMITER_LINE.finditer(data)):
        if count >= allowed:
            walk.stop("too-many-parts")
            cut = match.start()
            break
    spent = 0
    for match in _CONTENT_HEADER.finditer(data, 0, cut):
        size = match.end() - match.start()
        spent += size
        if spent > MIME_HEADER_BUDGET or size > MIME_HEADER_MAX:
            walk.stop("mime-headers-too-long")
            cut = match.start()
            break
    return data[:cut]


class _DepthLimitedParser(BytesFeedParser):
    """The stdlib feed parser, stopped before nesting that the walk would not enter.

    The stdlib parser recurses once per nesting level and scans every line against every
    open boundary, so depth costs both stack and time. ``_parsegen`` is private stdlib API:
    if it ever changes, this guard is silently skipped and the RecursionError catch remains.
    """

    def __init__(self, max_depth: int) -> None:
        super().__init__(policy=policy.default)
        self._spoolgate_depth = 0
        self._spoolgate_max_depth = max_depth

    def _parsegen(self):
        if self._spoolgate_depth > self._spoolgate_max_depth:
            raise _TooDeepError
        self._spoolgate_depth += 1
        try:
            yield from super()._parsegen()
        finally:
            self._spoolgate_depth -= 1


class _TooDeepError(Exception):
    pass


def _feed(data: bytes, walk: _Walk) -> Message:
    single = _single_part(data)
    if single is not None:
        return single
    parser = _DepthLimitedParser(walk.limits.max_depth)
    try:
        for start in range(0, len(data), _FEED_CHUNK):
            parser.feed(data[start:start + _FEED_CHUNK])
        return parser.close()
    except (RecursionError, _TooDeepError):
        walk.stop("too-deep")
        stack = getattr(parser, "_msgstack", None) or [Message(policy=policy.default)]
        return stack[0]


def _single_part(data: bytes) -> Message | None:
    """The stdlib parser's result for a message that is not multipart or message/*,
    without feeding it the body: it would read the body line by line (most of a big text
    message's parse) only to join the lines back into the payload. None when the top
    header section says or may say anything else, or ends in a way the parser would read
    differently; the full parse then runs."""
    match = _HEADER_END.search(data)
    if match is None or _NESTING.search(data, 0, match.start()):
        return None
    parser = BytesFeedParser(policy=policy.default)
    parser.feed(data[:match.end()])
    msg = parser.close()
    if msg.defects or msg.is_multipart() or msg.get_payload():
        return None  # a line that ended the headers early, or any surprise
    msg.set_payload(data[match.end():].decode("ascii", "surrogateescape"))
    return msg


def _decode_headers(msg: Message, walk: _Walk) -> tuple[tuple[str, str], ...]:
    raw = list(msg.raw_items())
    if len(raw) > MAX_HEADERS:
        walk.stop("too-many-headers")
        raw = raw[:MAX_HEADERS]
    return tuple((name, _decode_header(name, value, walk)) for name, value in raw)


def _decode_header(name: str, value: str, walk: _Walk) -> str:
    if len(value) > walk.limits.max_header_line:
        walk.stop("header-too-long")
        value = value[:walk.limits.max_header_line]
    if len(value) <= STRUCTURED_HEADER_MAX and walk.structured_budget >= len(value):
        walk.structured_budget -= len(value)
        if "=?" not in value and _PLAIN_TEXT.fullmatch(value) and _is_unstructured(name):
            # What the header registry would return, without its parse: most of a
            # message's headers (Received, X-*, DKIM-Signature) and the cost of parsing it.
            return value.replace("\r", "").replace("\n", "")
        try:
            header = policy.default.header_fetch_parse(name, value)
            walk.defects.extend(_names(getattr(header, "defects", ())))
            return str(header)
        except Exception:
            walk.defects.append("header-decode-error")
    elif "header-budget-exceeded" not in walk.defects:
        walk.defects.append("header-budget-exceeded")
    return _unstructured(value)


_PLAIN_TEXT = re.compile(r"(?:[\t\x20-\x7e]|\r?\n(?=[ \t]))*")  # printable ASCII, folded
_REGISTRY = policy.default.header_factory


def _is_unstructured(name: str) -> bool:
    """Whether *name* is free text to the header registry (not an address, a date, a
    Message-ID or a MIME parameter list); encoded words are what it would decode."""
    kind = _REGISTRY.registry.get(name.lower(), _REGISTRY.default_class)
    return issubclass(kind, UnstructuredHeader)


def _unstructured(value: str) -> str:
    unfolded = re.sub(r"\r?\n(?=[ \t])", "", value)
    try:
        return str(make_header(decode_header(unfolded)))
    except Exception:
        return unfolded.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _walk_tree(root: Message, walk: _Walk) -> None:
    walk.defects.extend(_names(root.defects))
    stack: list[tuple[Message, int]] = [(root, 0)]
    while stack:
        msg, depth = stack.pop()
        if walk.part_count >= walk.limits.max_parts:
            walk.stop("too-many-parts")
            return
        walk.part_count += 1
        walk.max_depth = max(walk.max_depth, depth)
        children = _children(msg)
        if children is None and msg._payload is None and walk.truncated:
            continue  # the parser stopped inside this part before reading any of its body
        if children is None:
            walk.parts.append(_leaf(msg, depth, walk))
        elif depth >= walk.limits.max_depth:
            walk.stop("too-deep")
        else:
            stack.extend((child, depth + 1) for child in reversed(children))


def _children(msg: Message) -> list[Message] | None:
    """The sub-parts of a container, or None for a leaf (message/delivery-status is a leaf)."""
    payload = msg._payload  # read directly: is_multipart() would not say more
    if not isinstance(payload, list):
        return None
    if _safe(msg.get_content_type, "") == "message/delivery-status":
        return None
    return [child for child in payload if isinstance(child, Message)]


def _leaf(msg: Message, depth: int, walk: _Walk) -> Part:
    seen = len(msg.defects)
    defects = _names(msg.defects)
    payload = _payload(msg, defects)
    defects.extend(_names(msg.defects[seen:]))  # defects found while decoding the payload
    if any(name in _BASE64_DEFECTS for name in defects):
        defects.append("bad-base64")
    size = len(payload)
    if size > walk.limits.max_payload:
        payload = payload[:walk.limits.max_payload]
        defects.append("payload-truncated")
        walk.stop("payload-truncated")
    content_type = _safe(msg.get_content_type, "application/octet-stream").lower()
    charset = _safe(msg.get_content_charset, None, defects)
    text = _text(payload, charset, defects) if content_type.startswith("text/") else None
    return Part(content_type=content_type, charset=charset, filename=_filename(msg, defects),
                disposition=_disposition(msg, defects), content_id=_content_id(msg, defects),
                size=size, depth=depth, payload=payload, text=text, defects=tuple(defects))


def _payload(msg: Message, defects: list[str]) -> bytes:
    if isinstance(msg._payload, list):  # message/delivery-status: its header blocks, as text
        try:
            return b"\n".join(block.as_bytes(policy=policy.default) for block in msg._payload)
        except Exception:
            defects.append("payload-error")
            return b""
    try:
        payload = msg.get_payload(decode=True)
    except Exception:
        defects.append("payload-error")
        return b""
    return payload if isinstance(payload, bytes) else b""


def _text(payload: bytes, charset: str | None, defects: list[str]) -> str:
    try:
        return payload.decode(charset or "us-ascii", "replace")
    except (LookupError, ValueError):  # unknown, or not a text encoding ("zlib", "base64")
        defects.append("unknown-charset")
    except Exception:  # a codec that fails even with errors="replace"
        defects.append("charset-decode-error")
    return payload.decode("latin-1")


def _filename(msg: Message, defects: list[str]) -> str | None:
    name = _safe(msg.get_filename, None, defects)
    if not isinstance(name, str):
        return None
    if "=?" in name:
        name = _unstructured(name)
    return name


def _disposition(msg: Message, defects: list[str]) -> str | None:
    value = _safe(msg.get_content_disposition, None, defects)
    if value is None or value in ("attachment", "inline"):
        return value
    return "attachment"  # RFC 2183: an unknown disposition is treated as attachment


def _content_id(msg: Message, defects: list[str]) -> str | None:
    value = _safe(lambda: msg.get("content-id"), None, defects)
    return None if value is None else str(value).strip() or None


def _safe(call, default, defects: list[str] | None = None):
    try:
        return call()
    except Exception:
        if defects is not None:
            defects.append("header-decode-error")
        return default


def _names(defects) -> list[str]:
    return [type(defect).__name__ for defect in defects]


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in ("script", "style"):
            self.skipping += 1
        elif tag in _BLOCK_TAGS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.chunks.append(data)


def addresses(*values: str) -> list[tuple[str, str]]:
    """``(display name, address)`` pairs of address header values; never raises.

    The stdlib's address parser recurses on nested comments and quotes, so hostile fields
    are cut to :data:`ADDRESS_FIELD_MAX` characters and a parser failure gives ``[]``.
    """
    try:
        return getaddresses([value[:ADDRESS_FIELD_MAX] for value in values if value])
    except (RecursionError, ValueError, IndexError, TypeError):
        return []


# A tag opened and never closed before the next "<" costs the stdlib HTML parser a scan
# to the end of the text (its tolerant start-tag pattern), so a body of "<font " * 16,000
# took 50 s. Real mail has a few (the corpus: at most 70, in the XSS payloads); past
# MAX_UNCLOSED_TAGS they are read as text, which is what the parser makes of them anyway.
_UNCLOSED_TAG = re.compile(r"<(?=[A-Za-z/])(?![^<>]{0,4096}>)")
MAX_UNCLOSED_TAGS = 256


def defuse_unclosed_tags(html: str) -> str:
    """*html* as it is, or with "<" escaped where it opens a tag that never closes when
    there are more than MAX_UNCLOSED_TAGS such: bounds the stdlib parser's time."""
    found = _UNCLOSED_TAG.finditer(html)
    if next(itertools.islice(found, MAX_UNCLOSED_TAGS, None), None) is None:
        return html
    return _UNCLOSED_TAG.sub("&lt;", html)


def html_to_text(html: str) -> str:
    """Crude text of an HTML body: tags dropped, script and style skipped, blocks on new lines."""
    extractor = _TextExtractor()
    with contextlib.suppress(Exception):  # keep what was extracted before a failure
        extractor.feed(defuse_unclosed_tags(html))
        extractor.close()
    text = "".join(extractor.chunks)
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()
