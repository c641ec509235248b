"""IMAP ``FETCH BODYSTRUCTURE`` responses, read into the leaf parts a mail app would list.

Owns a small reader for IMAP response data (RFC 3501 §4 and §9: atoms, quoted strings,
literals, NIL, parenthesised lists) and the walk of a BODYSTRUCTURE into :class:`Leaf`
values comparable with :class:`spoolgate.mime.parse.Part`. imapclient has a response
parser too, but one function of it is not worth a dependency. Malformed input raises
``ValueError``.
"""

from __future__ import annotations

import imaplib
import itertools
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import decode_header, make_header

Item = bytes | None | list["Item"]
_ATOM = re.compile(rb"[^\s()\"{}\[\]]+(?:\[[^\]]*\](?:<[0-9.]+>)?)?")
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n")
_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"', re.DOTALL)
MAX_NESTING = 200


@dataclass(frozen=True, slots=True)
class Leaf:
    """One leaf part as a comparison sees it: lowercased type, file name, disposition, and
    its depth (0 for a single-part message; +1 per multipart or encapsulated message, as
    :attr:`spoolgate.mime.parse.Part.depth` counts)."""

    content_type: str
    filename: str | None
    disposition: str | None
    depth: int = 0


def join_response(data: list) -> bytes:
    """The raw response text of imaplib's ``fetch`` result (literals put back in place)."""
    pieces: list[bytes] = []
    for item in data:
        if isinstance(item, tuple):
            pieces += [item[0], b"\r\n", item[1]]
        elif item is not None:
            pieces.append(item)
    return b"".join(pieces)


def read_items(text: bytes) -> list[Item]:
    """Every top-level item of *text* (a parenthesised list is a Python list)."""
    items: list[Item] = []
    stack: list[list[Item]] = [items]
    position = 0
    while position < len(text):
        char = text[position:position + 1]
        if char in b" \t\r\n":
            position += 1
        elif char == b"(":
            if len(stack) > MAX_NESTING:
                raise ValueError("nesting too deep")
            stack[-1].append([])
            stack.append(stack[-1][-1])  # type: ignore[arg-type]
            position += 1
        elif char == b")":
            if len(stack) == 1:
                raise ValueError(f"unbalanced ')' at {position}")
            stack.pop()
            position += 1
        else:
            value, position = _scalar(text, position)
            stack[-1].append(value)
    if len(stack) != 1:
        raise ValueError("unbalanced '('")
    return items


def _scalar(text: bytes, position: int) -> tuple[bytes | None, int]:
    if text[position:position + 1] == b'"':
        match = _QUOTED.match(text, position)
        if match is None:
            raise ValueError(f"unterminated string at {position}")
        return re.sub(rb"\\(.)", rb"\1", match.group(1)), match.end()
    literal = _LITERAL.match(text, position)
    if literal is not None:
        end = literal.end() + int(literal.group(1))
        if end > len(text):
            raise ValueError(f"literal past the end at {position}")
        return text[literal.end():end], end
    match = _ATOM.match(text, position)
    if match is None:
        raise ValueError(f"unexpected {text[position:position + 10]!r} at {position}")
    atom = match.group(0)
    return (None if atom.upper() == b"NIL" else atom), match.end()


def bodystructures(text: bytes) -> dict[int, Item]:
    """UID → BODYSTRUCTURE of each ``N (UID u BODYSTRUCTURE (...))`` in *text* (the
    untagged FETCH responses as imaplib returns them, ``* `` and ``FETCH`` removed)."""
    found: dict[int, Item] = {}
    for item in read_items(text):
        if not isinstance(item, list):
            continue
        fields = dict(zip(item[::2], item[1::2], strict=False))
        uid = fields.get(b"UID")
        if isinstance(uid, bytes) and b"BODYSTRUCTURE" in fields:
            found[int(uid)] = fields[b"BODYSTRUCTURE"]
    return found


def leaves(structure: Item) -> list[Leaf]:
    """The leaf parts in document order; an encapsulated message (message/rfc822) is
    entered, as :func:`spoolgate.mime.parse.parse_message` enters message/*."""
    found: list[Leaf] = []
    pending: list[tuple[Item, int]] = [(structure, 0)]
    while pending:
        node, depth = pending.pop()
        if not isinstance(node, list) or not node:
            raise ValueError(f"not a body structure: {node!r}")
        if isinstance(node[0], list):  # multipart: bodies, then the subtype
            bodies = list(itertools.takewhile(lambda child: isinstance(child, list), node))
            pending.extend((child, depth + 1) for child in reversed(bodies))
            continue
        kind = f"{_text(node[0])}/{_text(node[1])}".lower()
        if kind in ("message/rfc822", "message/global") and len(node) > 8 \
                and isinstance(node[8], list):
            pending.append((node[8], depth + 1))
            continue
        found.append(Leaf(kind, _filename(node), _disposition(node), depth))
    return found


def _text(value: Item) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""


def _pairs(value: Item) -> dict[str, str]:
    if not isinstance(value, list):
        return {}
    pairs: dict[str, str] = {}
    for name, text in zip(value[::2], value[1::2], strict=False):
        pairs.setdefault(_text(name).lower(), _text(text))
    return pairs


def _disposition_field(node: list[Item]) -> Item:
    """The disposition of a single part: after the MD5 of its extension data (RFC 3501
    §7.4.2), whose position depends on the type (text/* and message/rfc822 add fields)."""
    if _text(node[0]).lower() == "text":
        md5 = 8
    elif len(node) > 9 and isinstance(node[7], list) and isinstance(node[8], list):
        md5 = 10  # an encapsulated message: envelope, body, lines
    else:
        md5 = 7
    return node[md5 + 1] if len(node) > md5 + 1 else None


def _disposition(node: list[Item]) -> str | None:
    field = _disposition_field(node)
    return _text(field[0]).lower() or None if isinstance(field, list) and field else None


def _filename(node: list[Item]) -> str | None:
    field = _disposition_field(node)
    from_disposition = _pairs(field[1]) if isinstance(field, list) and len(field) > 1 else {}
    for params in (from_disposition, _pairs(node[2])):
        for name in ("filename", "name"):
            if f"{name}*" in params:
                return _rfc2231(params[f"{name}*"])
            if name in params:
                return _rfc2047(params[name])
    return None


def _rfc2231(value: str) -> str:
    """A ``name*`` value as Dovecot sends it (sections joined): charset'language'%XX."""
    charset, language, encoded = value.split("'", 2) if value.count("'") >= 2 \
        else ("us-ascii", "", value)
    raw = urllib.parse.unquote_to_bytes(encoded)
    try:
        return raw.decode(charset or "us-ascii", "replace")
    except LookupError:
        return raw.decode("latin-1")


def _rfc2047(value: str) -> str:
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # as the parse does: a malformed encoded word stays as written
        return value


def fetch_structures(imap: imaplib.IMAP4, mailbox: str,
                     messages: Sequence[bytes]) -> list[Item | str]:
    """APPEND *messages* to a new *mailbox*, then one ``UID FETCH 1:* BODYSTRUCTURE``: the
    structure of each message in order, or the server's refusal as text. The mailbox is
    deleted afterwards."""
    _ok(imap.create(mailbox), "CREATE")
    try:
        refused: dict[int, str] = {}
        uids: list[int | None] = []
        for message in messages:
            kind, data = imap.append(mailbox, None, None, message)
            if kind != "OK":
                refused[len(uids)] = f"APPEND {kind}: {data!r}"
                uids.append(None)
                continue
            uids.append(_appended_uid(data) or (max(filter(None, uids), default=0) + 1))
        _ok(imap.select(mailbox), "SELECT")
        kind, data = imap.uid("FETCH", "1:*", "(UID BODYSTRUCTURE)")
        _ok((kind, data), "FETCH")
        found = bodystructures(join_response(data))
        imap.close()
    finally:
        imap.delete(mailbox)
    return [refused[index] if uid is None else found.get(uid, "no BODYSTRUCTURE")
            for index, uid in enumerate(uids)]


def _appended_uid(data: list) -> int | None:
    """The UID of the APPENDUID response code (RFC 4315), which Dovecot sends."""
    match = re.search(rb"\[APPENDUID \d+ (\d+)\]", b" ".join(d for d in data if d))
    return int(match.group(1)) if match else None


def _ok(result: tuple[str, list], what: str) -> None:
    if result[0] != "OK":
        raise RuntimeError(f"IMAP {what}: {result!r}")
