"""Our MIME parse against Dovecot's, on the corpus and on generated trees: one view, or none.

Each message is parsed by :func:`spoolgate.mime.parse.parse_message` and APPENDed to a real
Dovecot (the company server and, through IMAP, the user's mail app), whose ``BODYSTRUCTURE``
lists the leaf parts it sees. Wherever the two lists differ (count, content types, file
names, dispositions), the built-in scanner must report the message unscannable, which the
policy quarantines or refuses and never passes; the test names each message that would
pass and what the parsers disagree about.

What is compared, after normalisation (each rule is a way the two report the same thing):

- content types lowercased; message/rfc822 is entered by both; any other message/* part
  is one opaque leaf to Dovecot where our walk enters it, and matches the leaves our walk
  found inside it (what the scanner reads is then a superset: see :func:`matched`);
- file names: Content-Disposition ``filename`` first, else Content-Type ``name``, RFC 2231
  and RFC 2047 decoded, stripped and one pair of enclosing ``<>`` removed on Dovecot's
  side, as ``Message.get_filename`` does (so the scanner checks the inner name); 8-bit
  bytes in a name are decoded as UTF-8 with replacement on both sides;
- dispositions: a disposition other than inline or attachment counts as attachment
  (RFC 2183 §2.8, as the parse does);
- charsets, sizes, Content-IDs and descriptions are not compared (they do not change what
  is scanned, and Dovecot reports parameters as written where we decode them).
"""

from __future__ import annotations

import imaplib
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mime.parse import parse_message
from spoolgate.scan.base import ScanRequest
from spoolgate.scan.builtin import BuiltinScanner
from tests.bodystructure import Item, Leaf, fetch_structures, leaves
from tests.conftest import open_to_daemons
from tests.downstream import PASSWORD, DovecotLmtp
from tests.gateway_process import free_port
from tests.integration.test_corpus import as_sent, message_files

pytestmark = pytest.mark.integration

USER = "differential@example.test"
BATCH = 500
ENVELOPE = Envelope("a@remote.test", (Recipient("b@example.test"),),
                    ClientInfo("192.0.2.1", "mail.remote.test"))


@pytest.fixture(scope="module")
def imap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[imaplib.IMAP4]:
    """One Dovecot for the module, and one IMAP session to it."""
    folder = tmp_path_factory.mktemp("dovecot")
    open_to_daemons(folder)  # spamd and Dovecot run as other users (RECIPES.md)
    with DovecotLmtp(folder, free_port(), users=(USER,), imap_port=free_port(),
                     fast_storage=True) as dovecot:
        client = imaplib.IMAP4("127.0.0.1", dovecot.imap_port, timeout=60)
        client.login(USER, PASSWORD)
        yield client
        client.logout()


def ours(data: bytes) -> list[Leaf]:
    """The leaf parts as our parse lists them."""
    return [Leaf(p.content_type, p.filename, p.disposition, p.depth)
            for p in parse_message(data).parts]


def theirs(structure: Item) -> list[Leaf]:
    """The leaf parts as Dovecot lists them, normalised as the module docstring says."""
    return [Leaf(leaf.content_type, _as_get_filename(leaf.filename),
                 leaf.disposition if leaf.disposition in (None, "inline") else "attachment",
                 leaf.depth)
            for leaf in leaves(structure)]


def _as_get_filename(name: str | None) -> str | None:
    """A file name as ``Message.get_filename`` gives it: stripped, one pair of enclosing
    angle brackets removed (``email.utils.unquote``)."""
    if name is None:
        return None
    name = name.strip()
    return name[1:-1].strip() if name.startswith("<") and name.endswith(">") else name


def matched(mine: list[Leaf], dovecot: list[Leaf]) -> bool:
    """Whether the two lists name the same leaves. A message/* part other than
    message/rfc822 is one opaque leaf to Dovecot (message/global, /news, /partial,
    /external-body, /disposition-notification, /feedback-report) where our walk enters it
    as the encapsulated message it is: it matches the run of our leaves below its depth."""
    position = 0
    for leaf in dovecot:
        if leaf.content_type.startswith("message/") and leaf.content_type not in (
                "message/rfc822", "message/delivery-status"):
            if position >= len(mine) or mine[position].depth <= leaf.depth:
                return False
            position += 1  # the encapsulated message's own leaf, or its first one
            if mine[position - 1].depth > leaf.depth + 1:  # a multipart inside: all of it
                while position < len(mine) and mine[position].depth > leaf.depth + 1:
                    position += 1
        elif position < len(mine) and mine[position] == leaf:
            position += 1
        else:
            return False
    return position == len(mine)


def disagreement(data: bytes, structure: Item | str) -> str | None:
    """What the two parsers disagree about in *data*, or None when they agree."""
    if isinstance(structure, str):
        return f"Dovecot: {structure}"
    mine, dovecot = ours(data), theirs(structure)
    if matched(mine, dovecot):
        return None
    return f"here {_shown(mine)}, in Dovecot {_shown(dovecot)}"


def _shown(found: list[Leaf]) -> str:
    return "[" + ", ".join(f"{leaf.content_type} {leaf.filename!r} {leaf.disposition} "
                           f"@{leaf.depth}" for leaf in found) + "]"


def unnoticed(imap: imaplib.IMAP4, named: Sequence[tuple[str, bytes]],
              mailbox: str) -> tuple[list[str], int]:
    """The messages on which the parsers disagree and the scanner still does not say
    unscannable (each with the disagreement), and how many disagreements there were."""
    scanner = BuiltinScanner()
    missed: list[str] = []
    differing = 0
    for start in range(0, len(named), BATCH):
        batch = named[start:start + BATCH]
        structures = fetch_structures(imap, f"{mailbox}{start}", [data for _, data in batch])
        for (name, data), structure in zip(batch, structures, strict=True):
            found = disagreement(data, structure)
            if found is None:
                continue
            differing += 1
            if scanner.scan_now(ScanRequest(data, ENVELOPE)).unscannable is None:
                missed.append(f"{name}: {found}")
    return missed, differing


def test_every_corpus_message_has_one_view_or_is_unscannable(
        corpus: Path, imap: imaplib.IMAP4, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    named = [(str(path.relative_to(corpus)), as_sent(path.read_bytes()))
             for path in message_files(corpus)]
    missed, differing = unnoticed(imap, named, "corpus")
    with capsys.disabled():
        print(f"\n{len(named)} corpus messages: {differing} read differently by Dovecot, "
              f"{len(missed)} of them not unscannable, {time.monotonic() - started:.1f} s")
    assert not missed, "\n".join(missed)


# --- generated MIME trees, mutated where parsers are known to part ways ---------------------

BOUNDARIES = ("b", "bb", "b-1", "==x==", "b'1")  # short and shared: reuse and prefixes happen
LEAF_TYPES = ("text/plain", "text/html", "application/zip", "application/octet-stream")
NAMES = ("a.exe", "report.pdf", "<b.zip>", "r\u00e9sum\u00e9.doc")


@dataclass(frozen=True)
class Leaf_:
    """A leaf to render: its type, file name and how the name and headers are written."""

    content_type: str
    filename: str | None
    naming: str
    glitch: str | None
    encoding: str


@dataclass(frozen=True)
class Multipart:
    """A multipart to render, with the mutations of its delimiters and headers."""

    subtype: str
    boundary: str
    children: tuple
    quoted: bool
    close: bool
    glitch: str | None


def _name_params(leaf: Leaf_) -> tuple[str, str]:
    """(Content-Type parameters, Content-Disposition value) naming the leaf's file."""
    name = leaf.filename
    if name is None:
        return "", ""
    encoded = urllib.parse.quote(name.encode())
    return {
        "filename": ("", f'attachment; filename="{name}"'),
        "name": (f'; name="{name}"', ""),
        "both": (f'; name="{name}"', f'attachment; filename="{name}"'),
        "differ": ('; name="other.txt"', f'attachment; filename="{name}"'),
        "rfc2231": ("", f"attachment; filename*=utf-8''{encoded}"),
        "rfc2231-conflict": ("", f"attachment; filename=\"x.txt\"; filename*=utf-8''{encoded}"),
        "unquoted": (f"; name={name}", ""),
        "twice": ("", f'attachment; filename="x.txt"; filename="{name}"'),
    }[leaf.naming]


def _render_leaf(leaf: Leaf_) -> list[str]:
    params, disposition = _name_params(leaf)
    lines = [f"Content-Type: {leaf.content_type}{params}"]
    if leaf.glitch == "duplicate-type":
        lines.append("Content-Type: application/x-msdownload")
    if disposition:
        lines.append(f"Content-Disposition: {disposition}")
    if leaf.glitch == "space-before-colon":
        lines.insert(0, "X-Note : x")
    if leaf.glitch == "no-colon":
        lines.insert(0, "X-Note x")
    body = "hello\r\nbegin 644 a.exe\r\nM86)C\r\n`\r\nend" if leaf.glitch == "uuencode" else "hello"
    if leaf.encoding != "7bit":
        lines.append(f"Content-Transfer-Encoding: {leaf.encoding}")
        body = "aGVsbG8=" if leaf.encoding == "base64" else body
        body += "!!!" if leaf.glitch == "base64-garbage" else ""
    return [*lines, "", body]


def render(node: Leaf_ | Multipart) -> list[str]:
    """The lines of *node*, headers first (joined with CRLF by :func:`message`)."""
    if isinstance(node, Leaf_):
        return _render_leaf(node)
    boundary = f'"{node.boundary}"' if node.quoted else node.boundary
    lines = [f"Content-Type: multipart/{node.subtype}; boundary={boundary}"]
    lines += {"base64": ["Content-Transfer-Encoding: base64"],
              "duplicate-boundary": [f"Content-Type: multipart/{node.subtype}; boundary=zz"],
              "cr": ["X-Note: a\rContent-Type: text/plain"]}.get(node.glitch or "", [])
    lines.append("")
    for index, child in enumerate(node.children):
        suffix = "x" if node.glitch == "suffix" and index == len(node.children) - 1 else ""
        lines += [f"--{node.boundary}{suffix}", *render(child)]
        if node.glitch == "empty-part" and index == 0:
            lines.append(f"--{node.boundary}")
    if node.close:
        lines += [f"--{node.boundary}--", ""]
    if node.glitch == "after-close":
        lines += [f"--{node.boundary}", "Content-Type: application/zip; name=\"c.zip\"", "",
                  "UEsDBA=="]
    return lines


def message(node: Leaf_ | Multipart) -> bytes:
    """A whole message around *node*: top-level headers, CRLF line ends."""
    head = ["From: a@remote.test", "To: b@example.test", "Subject: generated",
            "MIME-Version: 1.0"]
    return "\r\n".join([*head, *render(node), ""]).encode("utf-8")


leaf_nodes = st.builds(
    Leaf_, st.sampled_from(LEAF_TYPES), st.none() | st.sampled_from(NAMES),
    st.sampled_from(("filename", "name", "both", "differ", "rfc2231", "rfc2231-conflict",
                     "unquoted", "twice")),
    st.none() | st.none() | st.sampled_from(("duplicate-type", "space-before-colon",
                                             "no-colon", "uuencode", "base64-garbage")),
    st.sampled_from(("7bit", "7bit", "base64", "quoted-printable", "x-unknown")))
trees = st.recursive(leaf_nodes, lambda children: st.builds(
    Multipart, st.sampled_from(("mixed", "alternative", "related", "digest")),
    st.sampled_from(BOUNDARIES), st.lists(children, min_size=1, max_size=3).map(tuple),
    st.booleans(), st.booleans() | st.just(True),
    st.none() | st.none() | st.none() | st.sampled_from(
        ("base64", "duplicate-boundary", "cr", "suffix", "empty-part", "after-close"))),
    max_leaves=6)


# No shrinking: a batch of 100 round trips per step would take minutes, and the failure
# already names each message with its bytes.
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck),
          phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(st.lists(trees, min_size=100, max_size=100))
def test_generated_trees_have_one_view_or_are_unscannable(imap: imaplib.IMAP4,
                                                           nodes: list) -> None:
    named = [(f"generated {n} {message(node)!r}", message(node))
             for n, node in enumerate(nodes)]
    missed, _ = unnoticed(imap, named, f"gen{uuid.uuid4().hex[:8]}")
    assert not missed, "\n".join(missed)
