"""What a user says about a message: release it from quarantine, spam, not spam.

Owns the reader's release / spam / not-spam actions and their wording. A release goes
through :func:`spoolgate.intake.release.release_quarantined` (rescan, then only the
user's own recipient row, as far as their domain's ``user_release`` allows); the marks
teach the built-in Bayes classifier when there is one (without it they still act) and are
recorded as events. "Spam" moves the message to Trash, which stops a delivery still
waiting; "not spam" on a quarantined message releases it. Refusals are calm messages on
the reader page; another user's queue ID is a 404; a failing classifier is logged and the
action goes on without learning.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping

import anyio.from_thread
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from spoolgate.intake.release import (
    ReleaseOutcome,
    ReleaseResult,
    quarantine_cause,
    release_quarantined,
    user_may_release,
)
from spoolgate.mime.parse import parse_message
from spoolgate.store.accounts import WebSession
from spoolgate.store.mailbox import MailboxItem
from spoolgate.store.queue import Queue
from spoolgate.store.store import StoreError
from spoolgate.webmail.mailbox import owned
from spoolgate.webmail.site import Site, site_of

log = logging.getLogger("spoolgate.web")

DEFAULT_USER_RELEASE = "spam"
NOTICES = {  # the reader's; the folders' (released, spam...) are mailbox.NOTICES
    "ham": "Marked as not spam.",
    "not-quarantined": "It is no longer in quarantine.",
    "sender-allowed": "Sender allowed: their mail will no longer be held as spam for you.",
    "sender-blocked": ("Sender blocked: their mail to you alone will be refused. "
                       "This message stays where it is."),
}
ALERTS = {
    "dangerous": "It still looks dangerous: ask your administrator.",
    "unavailable": "Scanning is unavailable, try again in a few minutes.",
    "not-allowed": "Only your administrator can release this message: ask them.",
    "no-sender": "This message has no sender address (it is a bounce): nothing to list.",
}
_REFUSALS = {ReleaseOutcome.INFECTED: "dangerous", ReleaseOutcome.SCAN_FAILED: "unavailable",
             ReleaseOutcome.NOT_ALLOWED: "not-allowed"}


def reader_context(site: Site, session: WebSession, item: MailboxItem,
                   scan_detail: str | None, query: Mapping[str, str]) -> dict[str, object]:
    """The reader page's share: which buttons apply, and the notice or alert to show."""
    quarantined = item.state == "quarantined" and not item.trashed
    can_release = quarantined and user_may_release(
        _user_release(site, session), quarantine_cause(scan_detail))
    return {"can_release": can_release, "ask_admin": quarantined and not can_release,
            "notice": NOTICES.get(query.get("notice", "")),
            "alert": ALERTS.get(query.get("alert", ""))}


def release_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    """Rescan the message and release the user's own copy of it from quarantine."""
    assert session is not None
    site = site_of(request)
    item = owned(site, session, request.path_params["queue_id"])
    if item.state != "quarantined" or item.trashed:
        return _to_reader(item, notice="not-quarantined")
    return _after_release(item, _release(site, session, item.queue_id), "released")


def spam_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    """Learn the message as spam and move it to Trash (a waiting delivery is stopped)."""
    assert session is not None
    site = site_of(request)
    item = owned(site, session, request.path_params["queue_id"])
    _mark(site, session, item, spam=True)
    folder = _folder_of(item)
    if item.trashed:
        return RedirectResponse(f"/{folder}?notice=spam-delivered", status_code=303)
    outcome = site.mailbox.trash(session.email, item.queue_id, site.clock())
    notice = ("spam-in-flight" if outcome.in_flight
              else "spam" if outcome.stopped or item.state == "quarantined" else "spam-delivered")
    return RedirectResponse(f"/{folder}?notice={notice}", status_code=303)


def not_spam_view(request: Request, form: FormData | None,
                  session: WebSession | None) -> Response:
    """Learn the message as ham; a quarantined one is released as well (or nothing is
    learned, when the release is refused: a virus must not teach the classifier)."""
    assert session is not None
    site = site_of(request)
    item = owned(site, session, request.path_params["queue_id"])
    if item.state == "quarantined" and not item.trashed:
        result = _release(site, session, item.queue_id)
        if result.outcome is ReleaseOutcome.RELEASED:
            _mark(site, session, item, spam=False)
        return _after_release(item, result, "released-ham")
    _mark(site, session, item, spam=False)
    return _to_reader(item, notice="ham")


def _release(site: Site, session: WebSession, queue_id: str) -> ReleaseResult:
    release = functools.partial(
        release_quarantined, Queue(site.store, site.settings.node), queue_id, site.scanning,
        actor=session.email, addresses=(session.email,),
        user_release=_user_release(site, session))
    result = anyio.from_thread.run(release)  # the scanners live on the server's loop
    log.info("%s: webmail release by %s: %s%s", queue_id, session.email, result.outcome.value,
             f" ({result.reason})" if result.reason else "")
    return result


def _after_release(item: MailboxItem, result: ReleaseResult, notice: str) -> Response:
    if result.outcome is ReleaseOutcome.RELEASED:
        return RedirectResponse(f"/quarantine?notice={notice}", status_code=303)
    if result.outcome is ReleaseOutcome.NOT_QUARANTINED:
        return _to_reader(item, notice="not-quarantined")
    return _to_reader(item, alert=_REFUSALS[result.outcome])


def _mark(site: Site, session: WebSession, item: MailboxItem, spam: bool) -> None:
    """Learn the message (when a classifier is configured) and record the mark."""
    learned = "no classifier configured"
    data = site.store.message_data(item.queue_id)
    if site.classifier is not None and data is not None:
        try:
            fresh = site.classifier.learn(parse_message(data), data, spam=spam)
            learned = "learned" if fresh else "already learned"
        except StoreError as error:
            log.warning("%s: learning the user's mark failed: %s", item.queue_id, error)
            learned = "not learned: the classifier's store failed"
    label = "spam" if spam else "not spam"
    Queue(site.store, site.settings.node).note(
        item.queue_id, "marked-spam" if spam else "marked-ham",
        f"marked as {label} by {session.email} in the webmail ({learned})",
        recipient=session.email)


def _user_release(site: Site, session: WebSession) -> str:
    return site.user_release.get(session.email.rpartition("@")[2].lower(),
                                 DEFAULT_USER_RELEASE)


def _folder_of(item: MailboxItem) -> str:
    if item.trashed:
        return "trash"
    return "quarantine" if item.state == "quarantined" else "inbox"


def _to_reader(item: MailboxItem, *, notice: str = "", alert: str = "") -> Response:
    query = f"notice={notice}" if notice else f"alert={alert}"
    return RedirectResponse(f"/m/{item.queue_id}?{query}", status_code=303)
