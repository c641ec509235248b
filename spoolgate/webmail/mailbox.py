"""Mailbox views: the folders (inbox, quarantine, trash) and what a user does to messages.

Owns the list pages (newest first, keyset paging, status badges, the route-down banner),
the lazy list index (only messages listed for the first time are parsed) and the verbs
delete (to trash), restore, mark unread and empty trash. A queue ID that is not the
user's is answered 404, the same as one that does not exist.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from spoolgate.mime.parse import parse_message
from spoolgate.store.accounts import WebSession
from spoolgate.store.mailbox import Folder, MailboxItem
from spoolgate.webmail import presenting
from spoolgate.webmail.site import Site, site_of

NOTICES = {
    "trashed": "Moved to Trash. It will not be delivered to your mail server.",
    "trashed-delivered": "Moved to Trash.",
    "trashed-in-flight": ("Moved to Trash, but it was being delivered at that moment: "
                          "it may still reach your mail server."),
    "restored": "Restored.",
    "restored-queued": "Restored. It will be delivered to your mail server again.",
    "emptied": "Trash emptied.",
    "unread": "Marked as unread.",
    "released": "Released: it will be delivered to your mail server.",
    "digest-on": "You will get a daily summary of new mail in your quarantine.",
    "digest-off": "No more daily summaries.",
    "released-ham": ("Marked as not spam and released: it will be delivered to your "
                     "mail server."),
    "spam": "Marked as spam and moved to Trash. It will not be delivered to your mail server.",
    "spam-delivered": "Marked as spam and moved to Trash.",
    "spam-in-flight": ("Marked as spam and moved to Trash, but it was being delivered at "
                       "that moment: it may still reach your mail server."),
}


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the message list."""

    queue_id: str
    sender: str
    subject: str
    snippet: str
    time: str
    badge: str
    status: str
    seen: bool
    attachments: bool


def folder_view(folder: Folder):
    def view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
        assert session is not None
        site = site_of(request)
        size = site.settings.page_size
        items = site.mailbox.page(session.email, folder, size + 1,
                                  _cursor(request.query_params.get("before")))
        more, items = len(items) > size, items[:size]
        rows = _rows(site, with_index(site, items))
        next_cursor = f"{items[-1].queued_at!r}:{items[-1].queue_id}" if more else None
        extra = {}
        if folder is Folder.QUARANTINE:  # the digest opt-in sits on this page
            user = site.accounts.get_user(session.email)
            extra["digest"] = user is not None and user.digest
        return site.page("folder.html", session, **extra, folder=folder.value, rows=rows,
                         next_cursor=next_cursor, banner=route_banner(site, session.email),
                         paged=request.query_params.get("before") is not None,
                         notice=NOTICES.get(request.query_params.get("notice", "")))

    view.__name__ = f"{folder.value}_view"
    return view


def with_index(site: Site, items: list[MailboxItem]) -> list[MailboxItem]:
    """*items* with their list entries, parsing (once, ever) those listed for the first time."""
    fresh = {}
    for item in items:
        if item.index is None:
            data = site.store.message_data(item.queue_id) or b""
            fresh[item.queue_id] = presenting.index_entry(parse_message(data))
    site.mailbox.save_index(fresh)
    return [dataclasses.replace(i, index=fresh[i.queue_id]) if i.queue_id in fresh else i
            for i in items]


def _rows(site: Site, items: list[MailboxItem]) -> list[Row]:
    now, zone = site.clock(), site.zone
    reasons = site.mailbox.quarantine_reasons(
        [i.queue_id for i in items if i.state == "quarantined"])
    rows = []
    for item in items:
        index = item.index
        assert index is not None
        badge, words = presenting.status(item, now, zone, reasons.get(item.queue_id))
        rows.append(Row(item.queue_id, presenting.sender_name(index.from_text, item.sender),
                        index.subject or "(no subject)", index.snippet,
                        presenting.short_time(item.queued_at, now, zone), badge, words,
                        item.seen, index.has_attachments))
    return rows


def route_banner(site: Site, email: str) -> str | None:
    """The outage banner when the route of the user's domain is down."""
    route_name = site.settings.domains.get(email.rpartition("@")[2])
    route = site.mailbox.route(route_name) if route_name else None
    if route is None or route.state != "down":
        return None
    since = presenting.short_time(route.since, site.clock(), site.zone)
    return (f"Your mail server has been unreachable since {since}. New mail is kept here "
            "and will be delivered when it is back.")


def _cursor(value: str | None) -> tuple[float, str] | None:
    if not value or ":" not in value:
        return None
    at, _, queue_id = value.partition(":")
    try:
        return float(at), queue_id
    except ValueError:
        return None


def owned(site: Site, session: WebSession, queue_id: str) -> MailboxItem:
    """The user's message, or 404 (also for another user's queue ID)."""
    item = site.mailbox.item(session.email, queue_id)
    if item is None:
        raise HTTPException(404, "No such message")
    return item


def _folder_of(item: MailboxItem) -> str:
    if item.trashed:
        return Folder.TRASH.value
    return Folder.QUARANTINE.value if item.state == "quarantined" else Folder.INBOX.value


def delete_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    assert session is not None
    site = site_of(request)
    item = owned(site, session, request.path_params["queue_id"])
    outcome = site.mailbox.trash(session.email, item.queue_id, site.clock())
    notice = ("trashed-in-flight" if outcome.in_flight
              else "trashed" if outcome.stopped else "trashed-delivered")
    return RedirectResponse(f"/{_folder_of(item)}?notice={notice}", status_code=303)


def restore_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    assert session is not None
    site = site_of(request)
    item = owned(site, session, request.path_params["queue_id"])
    site.mailbox.restore(session.email, item.queue_id, site.clock())
    notice = "restored-queued" if item.stopped_state else "restored"
    return RedirectResponse(f"/trash?notice={notice}", status_code=303)


def unread_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    assert session is not None
    site = site_of(request)
    item = owned(site, session, request.path_params["queue_id"])
    site.mailbox.mark_seen(session.email, item.queue_id, site.clock(), seen=False)
    return RedirectResponse(f"/{_folder_of(item)}?notice=unread", status_code=303)


def empty_trash_view(request: Request, form: FormData | None,
                     session: WebSession | None) -> Response:
    assert session is not None
    site = site_of(request)
    site.mailbox.empty_trash(session.email, site.clock(), site.settings.trash_retention)
    return RedirectResponse("/trash?notice=emptied", status_code=303)
