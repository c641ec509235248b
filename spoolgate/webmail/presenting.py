"""How the webmail says things: times, sizes, per-message status lines, list entries.

Owns the wording users see for queue states ("waiting for your mail server since 10:42")
and the list entry built from the one parse of a message. Pure functions; never raises
for any message.
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from spoolgate.intake.release import Cause, quarantine_cause
from spoolgate.mime.parse import ParsedMessage, addresses
from spoolgate.store.mailbox import IndexEntry, MailboxItem

SNIPPET_LENGTH = 160
SEARCH_TEXT_LENGTH = 64 * 1024  # characters of the text body that search sees
_SPACE = re.compile(r"\s+")


def clock_time(at: float, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(at, zone).strftime("%H:%M")


def short_time(at: float, now: float, zone: ZoneInfo) -> str:
    """"10:42" today, "12 Mar" this year, "12 Mar 2023" before."""
    when, today = datetime.fromtimestamp(at, zone), datetime.fromtimestamp(now, zone)
    if when.date() == today.date():
        return when.strftime("%H:%M")
    if when.year == today.year:
        return f"{when.day} {when:%b}"
    return f"{when.day} {when:%b %Y}"


def long_time(at: float, zone: ZoneInfo) -> str:
    when = datetime.fromtimestamp(at, zone)
    return f"{when:%a} {when.day} {when:%b %Y %H:%M} ({zone.key})"


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def status(item: MailboxItem, now: float, zone: ZoneInfo,
           quarantine_reason: str | None = None) -> tuple[str, str]:
    """(badge class, words) for the message's state, as the list and reader show it."""
    since = short_time(item.queued_at, now, zone)
    if item.state in ("queued", "deferred", "held"):
        return "waiting", f"waiting for your mail server since {since}"
    if item.state == "delivering":
        return "waiting", "being delivered to your mail server now"
    if item.state == "delivered":
        return "delivered", f"delivered {short_time(item.updated_at, now, zone)}"
    if item.state == "quarantined":
        return "quarantined", f"quarantined: {quarantine_label(quarantine_reason)}"
    if item.state == "deleted" and item.stopped_state:
        return "stopped", "deleted before delivery: not sent to your mail server"
    return "other", item.state


def quarantine_label(detail: str | None) -> str:
    """"virus" when a scanner found malware, else "spam" (from the scan event's detail)."""
    return "virus" if quarantine_cause(detail) is Cause.VIRUS else "spam"


def index_entry(parsed: ParsedMessage) -> IndexEntry:
    """The list's view of a parsed message, with the start of its text for search."""
    names = tuple(p.filename or "(unnamed)" for p in parsed.attachments())
    body = parsed.text_body()
    return IndexEntry(subject=parsed.subject, from_text=parsed.from_, to_text=parsed.to,
                      cc_text=parsed.cc, date_text=parsed.date,
                      snippet=_SPACE.sub(" ", body[:4 * SNIPPET_LENGTH]).strip()[:SNIPPET_LENGTH],
                      has_attachments=bool(names), attachment_names=names,
                      body_text=body[:SEARCH_TEXT_LENGTH])


def sender_name(from_text: str, envelope_sender: str) -> str:
    """The From display name, else its address, else the envelope sender."""
    for name, address in addresses(from_text):
        if name or address:
            return name or address
    return envelope_sender or "(no sender)"
