"""Header and structure heuristics of the built-in scanner, on the one parse of a message.

Each rule names a trait that spam has far more often than the mail a company wants
(SpamAssassin's approach): a missing or malformed Date or Message-ID, a Date hours ahead
of the last Received stamp, a From display name that claims one of the company's own
domains, an HTML-only body hiding text, images with next to no text, a link whose visible
text names another host than it goes to, undecodable or mixed charsets, words mixing
scripts (homoglyphs), undisclosed or many recipients, broken MIME. Scores are small and
add up; no single rule here decides alone. Pure functions of the parse: no I/O, and
nothing a message contains can make them raise (the HTML parser is wrapped).
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from urllib.parse import urlsplit

from spoolgate.mail.envelope import Envelope
from spoolgate.mail.verdict import Symbol
from spoolgate.mime.parse import ParsedMessage, addresses, defuse_unclosed_tags, html_to_text

# name: (score, description). Scores in SpamAssassin's scale: 5 tags a message. Rules
# that fire often enough in the labelled corpus's training half (bench/accuracy_cv
# --fit-rules 0.6 3: 0.6 x the log-odds of firing in spam vs ham, capped at 3) carry that
# score, as SpamAssassin scores its rules from a corpus: INVALID_MSGID, HTML_ONLY,
# HTML_LINK_TEXT_MISMATCH (newsletters' tracking links make it weak), MIME_MALFORMED,
# DATE_IN_FUTURE, HTML_IMAGE_LITTLE_TEXT and TO_UNDISCLOSED; the others, too rare there to
# measure, keep judged scores. (A Date far in the past and a missing To were measured too:
# mailing lists and digests do both as often as spam, so they are no rules.)
RULES: dict[str, tuple[float, str]] = {
    "MISSING_DATE": (1.0, "no Date header"),
    "INVALID_DATE": (1.0, "Date header is not an RFC 5322 date"),
    "DATE_IN_FUTURE": (2.6, "Date is hours ahead of when the message was received"),
    "MISSING_MID": (0.5, "no Message-ID header"),
    "INVALID_MSGID": (1.5, "Message-ID is not <id-left@id-right>"),
    "FROM_NAME_SPOOFS_OWN_DOMAIN": (3.5, "From display name shows an address of our domain"),
    "HTML_ONLY": (1.8, "HTML body with no text alternative"),
    "HTML_HIDDEN_TEXT": (1.5, "HTML body hides text (display:none, zero size, invisible)"),
    "HTML_LINK_TEXT_MISMATCH": (0.8, "link text names another host than the link goes to"),
    "HTML_IMAGE_LITTLE_TEXT": (3.0, "HTML body of remote images with next to no text"),
    "INVALID_CHARSET": (1.0, "a text part declares an unknown or undecodable charset"),
    "MIXED_CHARSETS": (0.5, "text parts declare more than two charsets"),
    "MIXED_SCRIPT_WORDS": (2.0, "words in Subject or From mix alphabets (homoglyphs)"),
    "EXCESSIVE_RECIPIENTS": (1.5, "more recipients than a person writes to"),
    "TO_UNDISCLOSED": (2.4, "To names no address (undisclosed recipients)"),
    "MIME_MALFORMED": (2.2, "MIME structure is broken (boundaries, encodings)"),
}
MANY_RECIPIENTS = 50
FUTURE_HOURS = 3  # a Date further ahead of the newest Received stamp is DATE_IN_FUTURE
FEW_WORDS = 50  # HTML bodies with remote images and fewer shown words: HTML_IMAGE_LITTLE_TEXT
MAX_RECEIVED_LINE = 1000  # characters of the newest Received header searched for its stamp
_MIME_DEFECTS = frozenset({
    "StartBoundaryNotFoundDefect", "CloseBoundaryNotFoundDefect",
    "MultipartInvariantViolationDefect", "NoBoundaryInMultipartDefect",
    "MissingHeaderBodySeparatorDefect", "bad-base64", "payload-error",
    "InvalidMultipartContentTransferEncodingDefect"})
_CHARSET_DEFECTS = frozenset({"unknown-charset", "charset-decode-error"})
_MSGID = re.compile(r"^<[^<>@\s]+@[^<>@\s]+>$")
_ADDRESS_IN_TEXT = re.compile(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)+)", re.UNICODE)
_HOST_LIKE = re.compile(r"^(?:https?://)?((?:[a-z0-9-]+\.)+[a-z]{2,})(?:[/:?#]\S*)?$", re.I)
_HIDING_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0*(?:\.0*)?(?:px|pt|em)?\s*(?:;|$)"
    r"|max-height\s*:\s*0|opacity\s*:\s*0(?:\.0*)?\s*(?:;|$)", re.I)
_VOID_TAGS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
                        "meta", "source", "track", "wbr"})
_WORD = re.compile(r"\w{3,}", re.UNICODE)
_RECEIVED_STAMP = re.compile(r";\s*([^;]*)$")


@dataclass(frozen=True, slots=True)
class HeuristicsContext:
    """What the rules need beyond the message: the company's domains."""

    own_domains: frozenset[str] = frozenset()


def header_symbols(parsed: ParsedMessage, envelope: Envelope,
                   context: HeuristicsContext) -> list[Symbol]:
    """Every rule that matches, as symbols with their scores."""
    names = [*_date_rules(parsed), *_msgid_rules(parsed), *_from_rules(parsed, context),
             *_html_rules(parsed), *_charset_rules(parsed), *_recipient_rules(parsed, envelope),
             *_mime_rules(parsed)]
    return [Symbol(name, RULES[name][0], detail or RULES[name][1]) for name, detail in names]


def _date_rules(parsed: ParsedMessage) -> list[tuple[str, str]]:
    value = parsed.header("date")
    if value is None:
        return [("MISSING_DATE", "")]
    date = _date(value)
    if date is None:
        return [("INVALID_DATE", f"Date: {value[:60]!r}")]
    received = _date(_received_stamp(parsed))
    with contextlib.suppress(TypeError, OverflowError):  # naive vs aware: no comparison
        if received is not None and (date - received).total_seconds() > FUTURE_HOURS * 3600:
            return [("DATE_IN_FUTURE", f"Date: {value[:60]!r}")]
    return []


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _received_stamp(parsed: ParsedMessage) -> str | None:
    """The date after the last ';' of the newest Received header: when the previous hop
    (or this gateway, once it has prepended its own) took the message."""
    value = parsed.header("received")
    match = _RECEIVED_STAMP.search(value[-MAX_RECEIVED_LINE:]) if value else None
    return match.group(1) if match else None


def _msgid_rules(parsed: ParsedMessage) -> list[tuple[str, str]]:
    value = parsed.header("message-id")
    if value is None:
        return [("MISSING_MID", "")]
    if not _MSGID.match(value.strip()):
        return [("INVALID_MSGID", f"Message-ID: {value[:60]!r}")]
    return []


def _from_rules(parsed: ParsedMessage, context: HeuristicsContext) -> list[tuple[str, str]]:
    rules: list[tuple[str, str]] = []
    name, address = (addresses(parsed.from_) or [("", "")])[0]
    domain = address.rpartition("@")[2].lower()
    for shown in _ADDRESS_IN_TEXT.findall(name):
        shown = shown.lower()
        if _within(shown, context.own_domains) and not _within(domain, context.own_domains):
            rules.append(("FROM_NAME_SPOOFS_OWN_DOMAIN", f"From: {parsed.from_[:80]!r}"))
            break
    if any(_mixes_scripts(word) for word in _WORD.findall(f"{parsed.subject} {name}")):
        rules.append(("MIXED_SCRIPT_WORDS", ""))
    return rules


def _within(domain: str, domains: Collection[str]) -> bool:
    return any(domain == d or domain.endswith("." + d) for d in domains)


def _mixes_scripts(word: str) -> bool:
    """A word of letters from two of Latin, Cyrillic and Greek: the usual homoglyph trick."""
    scripts = set()
    for char in word:
        if char.isalpha():
            with contextlib.suppress(ValueError):
                scripts.add(unicodedata.name(char).split(" ", 1)[0])
    return len(scripts & {"LATIN", "CYRILLIC", "GREEK"}) > 1


def _html_rules(parsed: ParsedMessage) -> list[tuple[str, str]]:
    html = parsed.html_bodies()
    if not html:
        return []
    rules: list[tuple[str, str]] = []
    if not any(p.content_type == "text/plain" and p.filename is None for p in parsed.parts):
        rules.append(("HTML_ONLY", ""))
    scan = _HtmlScan()
    for part in html:
        scan.run(part.text or "")
    if scan.hidden_text:
        rules.append(("HTML_HIDDEN_TEXT", scan.hidden_text[:80]))
    if scan.mismatch:
        rules.append(("HTML_LINK_TEXT_MISMATCH", scan.mismatch[:120]))
    if scan.images:
        shown = sum(len(html_to_text(part.text or "").split()) for part in html)
        if shown < FEW_WORDS:
            rules.append(("HTML_IMAGE_LITTLE_TEXT", f"{scan.images} images, {shown} words"))
    return rules


class _HtmlScan(HTMLParser):
    """Finds text inside hidden elements and links whose text names another host."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hidden_depth: list[str] = []
        self.hidden_text = ""
        self.href: str | None = None
        self.link_text: list[str] = []
        self.mismatch = ""
        self.images = 0

    def run(self, html: str) -> None:
        with contextlib.suppress(Exception):  # what was seen before a failure still counts
            self.feed(defuse_unclosed_tags(html))
            self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        hides = _HIDING_STYLE.search(values.get("style") or "") or "hidden" in values
        if tag not in _VOID_TAGS and (self.hidden_depth or hides):
            self.hidden_depth.append(tag)
        if tag == "a":
            self.href, self.link_text = values.get("href") or "", []
        elif tag == "img" and (values.get("src") or "").lower().startswith(("http:", "https:")):
            self.images += 1  # fetched from the sender's server; a signature's logo is cid:

    def handle_endtag(self, tag: str) -> None:
        if self.hidden_depth and self.hidden_depth[-1] == tag:
            self.hidden_depth.pop()
        if tag == "a" and self.href is not None:
            self._check_link(self.href, "".join(self.link_text).strip())
            self.href = None

    def handle_data(self, data: str) -> None:
        if self.hidden_depth and data.strip() and not self.hidden_text:
            self.hidden_text = data.strip()
        if self.href is not None:
            self.link_text.append(data)

    def _check_link(self, href: str, text: str) -> None:
        shown = _HOST_LIKE.match(text)
        if self.mismatch or not shown or not href.lower().startswith(("http:", "https:")):
            return
        with contextlib.suppress(ValueError):
            target = (urlsplit(href).hostname or "").lower().rstrip(".")
            shown_host = shown.group(1).lower()
            if target and not (_within(target, {shown_host}) or _within(shown_host, {target})):
                self.mismatch = f"text {shown_host!r} goes to {target!r}"


def _charset_rules(parsed: ParsedMessage) -> list[tuple[str, str]]:
    rules: list[tuple[str, str]] = []
    texts = [p for p in parsed.parts if p.text is not None]
    bad = [p.charset for p in texts if _CHARSET_DEFECTS & set(p.defects)]
    if bad:
        rules.append(("INVALID_CHARSET", f"charset {bad[0]!r}"))
    charsets = {p.charset for p in texts if p.charset and p.charset not in ("us-ascii",)}
    if len(charsets) > 2:
        rules.append(("MIXED_CHARSETS", ",".join(sorted(charsets))[:80]))
    return rules


def _recipient_rules(parsed: ParsedMessage, envelope: Envelope) -> list[tuple[str, str]]:
    listed = addresses(parsed.to, parsed.cc)
    count = max(len(envelope.recipients), len([a for _, a in listed if a]))
    rules: list[tuple[str, str]] = []
    if count > MANY_RECIPIENTS:
        rules.append(("EXCESSIVE_RECIPIENTS", f"{count} recipients"))
    to = parsed.header("to")
    if to is not None and (not any(a for _, a in addresses(to)) or "undisclosed" in to.lower()):
        rules.append(("TO_UNDISCLOSED", f"To: {to[:60]!r}"))
    return rules


def _mime_rules(parsed: ParsedMessage) -> list[tuple[str, str]]:
    found = sorted({d for d in parsed.defects if d in _MIME_DEFECTS}
                   | {d for p in parsed.parts for d in p.defects if d in _MIME_DEFECTS})
    return [("MIME_MALFORMED", ",".join(found))] if found else []
