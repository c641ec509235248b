"""The search box: the query language, indexing what search needs, and the results page.

Owns the parse of what a user types (:func:`parse_query`: plain words, all required;
``"quoted phrases"``; ``from:``, ``to:``, ``subject:``, ``filename:`` with a word or a
quoted phrase; ``has:attachment``; ``after:``/``before:`` with a YYYY-MM-DD day in the
site's time zone, after inclusive and before exclusive) into a
:class:`~spoolgate.store.search.SearchQuery`. The parse is pure and never fails: an
unknown operator or a bad date is searched as plain text, characters that are not part
of a word are only separators, and query syntax of the index (FTS5's ``OR``, ``NEAR``,
``*``) means nothing here. Before searching, :func:`index_pending` indexes (parses once)
up to ``INDEX_BATCH`` of the user's messages not yet in the list index, newest first;
the page says when older ones are still left out. :class:`IndexProgress` remembers,
per user, up to when that is done, so the check does not walk the whole mailbox each time.
"""

from __future__ import annotations

import re
import threading
from datetime import date, datetime
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from spoolgate.mime.parse import parse_message
from spoolgate.store.accounts import WebSession
from spoolgate.store.mailbox import Mailbox
from spoolgate.store.search import Field, Search, SearchQuery, SearchTerm
from spoolgate.store.store import Store
from spoolgate.webmail import presenting
from spoolgate.webmail.mailbox import _cursor, _rows
from spoolgate.webmail.site import site_of

MAX_QUERY = 500          # characters of a query read; the rest is ignored
MAX_TERMS = 16           # terms kept; more only slow the index down
INDEX_BATCH = 500        # messages a search indexes before it runs
_FIELDS = {"from": Field.FROM, "to": Field.TO, "subject": Field.SUBJECT,
           "filename": Field.FILENAME}
_TOKEN = re.compile(r'(?:([A-Za-z]+):)?(?:"([^"]*)"?|(\S+))')
_WORD = re.compile(r"\w")


def parse_query(text: str, zone: ZoneInfo) -> SearchQuery:
    """The query *text* means (see the module docstring); never raises."""
    terms: list[SearchTerm] = []
    flags: dict[str, float | bool] = {}
    for match in _TOKEN.finditer(text[:MAX_QUERY]):
        operator, phrase, word = match.group(1), match.group(2), match.group(3)
        value = phrase if phrase is not None else word or ""
        if not _apply_operator((operator or "").lower(), value, zone, terms, flags):
            whole = match.group(0) if phrase is None else (f"{operator} " if operator else "") + value
            _add_term(terms, Field.ANY, whole)
    return SearchQuery(tuple(terms[:MAX_TERMS]), bool(flags.get("has")),
                       _float(flags.get("after")), _float(flags.get("before")))


def _apply_operator(operator: str, value: str, zone: ZoneInfo, terms: list[SearchTerm],
                    flags: dict[str, float | bool]) -> bool:
    """Record *operator*:*value*; False when it is not one (then it is plain text)."""
    if operator in _FIELDS and _WORD.search(value):
        _add_term(terms, _FIELDS[operator], value)
        return True
    if operator == "has" and value.lower() in ("attachment", "attachments"):
        flags["has"] = True
        return True
    if operator in ("after", "before"):
        day = _day(value, zone)
        if day is not None:
            flags[operator] = day
            return True
    return False


def _add_term(terms: list[SearchTerm], field: Field, text: str) -> None:
    if _WORD.search(text):
        terms.append(SearchTerm(field, text))


def _day(value: str, zone: ZoneInfo) -> float | None:
    """The start of day *value* (YYYY-MM-DD) in *zone*, or None."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return None
    return datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()


def _float(value: float | bool | None) -> float | None:
    return None if value is None or isinstance(value, bool) else float(value)


class IndexProgress:
    """Per app: for each user, a time up to which all their mail is known to be indexed,
    so that a search looks only at newer mail for unindexed messages (a message keeps its
    entry until purged). SKEW covers commits in flight and other nodes' clocks; lost on
    restart, when one search checks the whole mailbox again."""

    SKEW = 600.0

    def __init__(self) -> None:
        self._through: dict[str, float] = {}
        self._lock = threading.Lock()

    def since(self, email: str) -> float | None:
        with self._lock:
            return self._through.get(email)

    def indexed(self, email: str, checked_at: float) -> None:
        with self._lock:
            self._through[email] = checked_at - self.SKEW


def index_pending(store: Store, mailbox: Mailbox, email: str, limit: int,
                  since: float | None = None) -> bool:
    """Index up to *limit* of the user's unindexed messages queued after *since* (newest
    first), from the one parse the list uses; True when more are left."""
    queue_ids = Search(store).unindexed(email, limit + 1, since)
    entries = {queue_id: presenting.index_entry(parse_message(store.message_data(queue_id)
                                                              or b""))
               for queue_id in queue_ids[:limit]}
    mailbox.save_index(entries)
    return len(queue_ids) > limit


def search_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    """GET /search?q=...: the user's matching messages, newest first, as the list shows them."""
    assert session is not None
    site = site_of(request)
    text = request.query_params.get("q", "")[:MAX_QUERY]
    query = parse_query(text, site.zone)
    incomplete = not query.empty and _index_first(request, session.email)
    size = site.settings.page_size
    items = Search(site.store).find(session.email, query, size + 1,
                                    _cursor(request.query_params.get("before")))
    more, items = len(items) > size, items[:size]
    next_cursor = f"{items[-1].queued_at!r}:{items[-1].queue_id}" if more else None
    base = "/search?" + urlencode({"q": text})
    return site.page("folder.html", session, folder="search", rows=_rows(site, items),
                     next_cursor=next_cursor, banner=None, query=text, heading="Search",
                     paged=request.query_params.get("before") is not None,
                     newest_url=base, older_url=base + "&",
                     notice=INCOMPLETE if incomplete else None)


def _index_first(request: Request, email: str) -> bool:
    """Index the user's new mail before searching; True when some is still left."""
    site, progress = site_of(request), request.app.state.search_progress
    checked_at = site.clock()
    more = index_pending(site.store, site.mailbox, email, INDEX_BATCH, progress.since(email))
    if not more:
        progress.indexed(email, checked_at)
    return more


INCOMPLETE = ("Older messages are still being prepared for search and are not in these "
              "results yet. Search again in a moment to include more of them.")
