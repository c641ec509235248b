"""Marks of bulk-mailing software ("ratware") and of shouting HTML, on the one parse.

Owns the rules that tell a message written by a person's mail program from one stamped
out by a spam tool pretending to be one: a mailer header that claims Outlook beside a
Message-ID no Outlook makes, an Outlook Express message without the header Outlook
Express always adds, a Subject padded with spaces and a batch number, a priority no
person sets, legally required advertisement labels (``ADV:``, Japan's 未承諾広告), and
HTML that shouts (huge or red fonts, lines of capitals, runs of exclamation marks).
These describe how spam is made, so they hold on mail from any site or year.

Scores in SpamAssassin's scale (5 tags); none decides alone. Pure functions of the parse:
no I/O, bounded text, nothing a message contains makes them raise.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from spoolgate.mail.verdict import Symbol
from spoolgate.mime.parse import ParsedMessage, addresses

MAX_HTML = 256 * 1024  # characters of HTML markup read per message
MAX_TEXT = 64 * 1024  # characters of shown text read for capitals and exclamations

RULES: dict[str, tuple[float, str]] = {
    "FORGED_OUTLOOK_MSGID": (2.0, "claims Outlook, but its Message-ID is not Outlook's"),
    "OUTLOOK_EXPRESS_NO_MIMEOLE": (1.5, "claims Outlook Express without X-MimeOLE"),
    "SUBJECT_RATWARE_ID": (2.0, "Subject padded with spaces or ending in a batch number"),
    "SUBJECT_ADVERTISEMENT": (2.5, "Subject carries a legal advertisement label (ADV:)"),
    "PRIORITY_UNUSUAL": (1.0, "an X-Priority other than normal (bulk tools set 1 or 5)"),
    "FROM_LOCAL_DIGITS": (0.5, "the sender's mailbox name ends in several digits"),
    "HTML_FONT_HUGE": (1.0, "HTML in huge fonts"),
    "HTML_FONT_RED": (0.8, "HTML in red or other loud colours"),
    "BODY_YELLING": (1.5, "several lines of the text in capitals"),
    "BODY_EXCLAIMS": (0.8, "runs of exclamation marks in the text"),
}

_OUTLOOK = re.compile(r"(?i)\bmicrosoft outlook\b")
_OUTLOOK_EXPRESS = re.compile(r"(?i)\boutlook express\b")
# Outlook's Message-IDs: $-separated hex (Outlook Express, Outlook 2002 and later), 28
# letters A-P (Outlook 2000 in Internet-only mode), or Microsoft's own servers.
_OUTLOOK_MSGID = re.compile(r"\$[0-9a-fA-F]{6,8}\$|^<[A-P]{28}\.|@[\w.-]*outlook\.com>"
                            r"|@[\w.-]*\.prod\.")
# A run of spaces is entered at its start only ((?<!\s)): a match from inside the run is one
# from its start too, and trying every position of 64 KiB of spaces took minutes.
_RATWARE_SUBJECT = re.compile(r"\S {6,}\S|(?<!\s)\s{2,}[0-9a-z]{1,6}[.:][0-9]{1,5}\s*$"
                              r"|(?<!\s)\s{3,}[0-9.]{2,}\s*$"
                              r"|\s[0-9a-z]{8,}\s*$(?<=[0-9][a-z]|[a-z][0-9])", re.I)
_AD_LABEL = re.compile(r"^\s*(?:\[?adv\]?\s*[:\-]|adv\s+)|未承諾広告", re.I)
_FROM_DIGITS = re.compile(r"[a-z][0-9]{3,}$", re.I)
# A font tag's attributes are read up to 300 characters: [^>]* would rescan the rest of
# the text from every "<font" of a message that never closes one.
_FONT_HUGE = re.compile(r"(?i)<font[^<>]{0,300}?\bsize\s*=\s*[\"']?\s*(?:\+[3-9]|[6-9])\b"
                        r"|font-size\s*:\s*(?:[3-9][0-9]|[2-9][0-9]{2})\s*(?:px|pt)")
_FONT_RED = re.compile(r"(?i)(?:<font[^<>]{0,300}?\bcolor|color\s*:)\s*=?\s*[\"']?\s*"
                       r"(?:red|#?ff0000|#?f00\b|#?ff00ff|#?ffff00|yellow|lime|#?00ff00)")
_CAPS_LINE = re.compile(r"^[^a-z\n]*[A-Z][^a-z\n]*$", re.M)
_EXCLAIMS = re.compile(r"!{3,}|(?:![^!\n]{0,20}){4}")


def ratware_symbols(parsed: ParsedMessage) -> list[Symbol]:
    """Every rule of :data:`RULES` that matches *parsed*, with its score and why."""
    return [Symbol(name, RULES[name][0], detail[:80])
            for name, detail in (*_header_marks(parsed), *_html_marks(parsed),
                                 *_text_marks(parsed))]


def _header_marks(parsed: ParsedMessage) -> Iterator[tuple[str, str]]:
    yield from _mailer_marks(parsed)
    if _RATWARE_SUBJECT.search(parsed.subject):
        yield "SUBJECT_RATWARE_ID", parsed.subject
    if _AD_LABEL.search(parsed.subject):
        yield "SUBJECT_ADVERTISEMENT", parsed.subject
    priority = (parsed.header("x-priority") or "").strip()[:1]
    if priority and priority in "1245":
        yield "PRIORITY_UNUSUAL", f"X-Priority: {priority}"
    sender = (addresses(parsed.from_) or [("", "")])[0][1].partition("@")[0]
    if _FROM_DIGITS.search(sender):
        yield "FROM_LOCAL_DIGITS", sender


def _mailer_marks(parsed: ParsedMessage) -> Iterator[tuple[str, str]]:
    mailer = parsed.header("x-mailer") or ""
    if "macintosh" in mailer.lower():
        return  # Outlook for the Mac leaves the Message-ID to the server and has no MimeOLE
    message_id = parsed.message_id.strip()
    if _OUTLOOK.search(mailer) and message_id and not _OUTLOOK_MSGID.search(message_id):
        yield "FORGED_OUTLOOK_MSGID", f"{mailer[:40]} / {message_id[:40]}"
    if _OUTLOOK_EXPRESS.search(mailer) and parsed.header("x-mimeole") is None:
        yield "OUTLOOK_EXPRESS_NO_MIMEOLE", mailer


def _html_marks(parsed: ParsedMessage) -> Iterator[tuple[str, str]]:
    markup = "".join((p.text or "")[:MAX_HTML] for p in parsed.html_bodies())[:MAX_HTML]
    if not markup:
        return
    for name, pattern in (("HTML_FONT_HUGE", _FONT_HUGE), ("HTML_FONT_RED", _FONT_RED)):
        match = pattern.search(markup)
        if match:
            yield name, match.group()


def _text_marks(parsed: ParsedMessage) -> Iterator[tuple[str, str]]:
    text = _shown_text(parsed)
    shouted = [line for line in _CAPS_LINE.findall(text) if sum(c.isalpha() for c in line) >= 20]
    if len(shouted) >= 2:
        yield "BODY_YELLING", shouted[0].strip()
    match = _EXCLAIMS.search(text)
    if match:
        yield "BODY_EXCLAIMS", match.group()


def _shown_text(parsed: ParsedMessage) -> str:
    """The text a reader sees first: the plain part, else the HTML as text; quoted lines
    (a reply quoting shouting) left out."""
    body = parsed.text_body()[:MAX_TEXT]
    return "\n".join(line for line in body.splitlines() if not line.lstrip().startswith(">"))
