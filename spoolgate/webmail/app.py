"""The webmail application: routes, middleware and error pages (Starlette).

Owns the URL table. :func:`create_app` builds everything from a store and one
:class:`WebmailSettings`; nothing is created at import time. Every route goes through
:func:`spoolgate.webmail.sessions.endpoint` (session lookup, CSRF on POST) and every
response through :class:`spoolgate.webmail.security.SecurityHeaders`. Errors become calm
pages: 404 for anything not the user's, 500 without internals (logged).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from argon2 import PasswordHasher
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from spoolgate.intake.scanning import Scanning
from spoolgate.mail.envelope import Envelope
from spoolgate.ops.metrics import Metrics
from spoolgate.scan.bayes import BayesClassifier
from spoolgate.store.accounts import Accounts
from spoolgate.store.mailbox import Folder, Mailbox
from spoolgate.store.store import Store
from spoolgate.webmail import (
    digest,
    feedback,
    mailbox,
    reading,
    search,
    senders,
    sending,
    signin,
)
from spoolgate.webmail.auth import Authenticator, default_hasher
from spoolgate.webmail.security import SecurityHeaders
from spoolgate.webmail.sessions import Sessions, endpoint
from spoolgate.webmail.settings import WebmailSettings
from spoolgate.webmail.site import Site, site_of, template_environment

__all__ = ["WebmailSettings", "create_app"]

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


def create_app(store: Store, settings: WebmailSettings, *,
               clock: Callable[[], float] = time.time,
               hasher: PasswordHasher | None = None,
               submit: Callable[[Envelope, bytes], Awaitable[str]] | None = None,
               extra_routes: Callable[[Sessions], list] | None = None,
               scanning: Scanning | None = None,
               classifier: BayesClassifier | None = None,
               user_release: Mapping[str, str] | None = None,
               metrics: Metrics | None = None) -> Starlette:
    """The webmail for *store*; *clock* and *hasher* are for tests (a moved clock, a
    cheaper argon2id); *submit* queues a message the user sends (the gateway's
    ``Intake.accept``; without it sending is refused); *extra_routes* adds pages that
    share the sign-in, sessions and CSRF checks (the admin console). *scanning* rescans
    what a user releases from quarantine, *classifier* learns their spam / not spam marks
    (each optional), *user_release* is each domain's ``user_release`` policy; *metrics*
    counts sign-ins for the gateway's ``/metrics``."""
    hasher = hasher or default_hasher()
    accounts = Accounts(store)
    sessions = Sessions(accounts, settings, clock)
    site = Site(store, settings, accounts, Mailbox(store, settings.node),
                Authenticator(accounts, settings, hasher, clock), sessions,
                template_environment(), clock, submit, scanning, classifier,
                dict(user_release or {}), metrics or Metrics())
    routes = _routes(sessions)
    if extra_routes is not None:
        routes[-1:-1] = extra_routes(sessions)  # before the static mount
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)],
                    exception_handlers={HTTPException: _http_error, Exception: _server_error})
    app.state.site = site
    app.state.search_progress = search.IndexProgress()
    return app


def _routes(sessions: Sessions) -> list:
    def get(path: str, handler, signed_in: bool = True) -> Route:
        return Route(path, endpoint(sessions, handler, signed_in=signed_in), methods=["GET"])

    def post(path: str, handler) -> Route:
        return Route(path, endpoint(sessions, handler), methods=["POST"])

    return [
        Route("/", lambda request: RedirectResponse("/inbox", status_code=303)),
        Route("/login", endpoint(sessions, signin.login_view, signed_in=False),
              methods=["GET", "POST"]),
        Route("/login/totp", endpoint(sessions, signin.totp_view, signed_in=False,
                                      pending=True), methods=["GET", "POST"]),
        Route("/logout", endpoint(sessions, signin.logout_view, pending=True),
              methods=["POST"]),
        get("/inbox", mailbox.folder_view(Folder.INBOX)),
        get("/quarantine", mailbox.folder_view(Folder.QUARANTINE)),
        get("/trash", mailbox.folder_view(Folder.TRASH)),
        post("/trash/empty", mailbox.empty_trash_view),
        get("/m/{queue_id}", reading.read_view),
        get("/m/{queue_id}/frame", reading.frame_view),
        get("/m/{queue_id}/source", reading.source_view),
        get("/m/{queue_id}/part/{index}", reading.attachment_view),
        get("/m/{queue_id}/cid/{cid:path}", reading.cid_view, signed_in=False),
        post("/m/{queue_id}/delete", mailbox.delete_view),
        post("/m/{queue_id}/restore", mailbox.restore_view),
        post("/m/{queue_id}/unread", mailbox.unread_view),
        post("/m/{queue_id}/release", feedback.release_view),
        post("/m/{queue_id}/spam", feedback.spam_view),
        post("/m/{queue_id}/not-spam", feedback.not_spam_view),
        post("/m/{queue_id}/allow-sender", senders.rule_view("allow")),
        post("/m/{queue_id}/block-sender", senders.rule_view("block")),
        get("/senders", senders.senders_view),
        post("/senders/remove", senders.remove_view),
        post("/quarantine/digest", digest.optin_view),
        # Reached from an email: the signed token is the authority, not a session.
        Route("/digest/{token}", endpoint(sessions, digest.digest_view, signed_in=False),
              methods=["GET", "POST"]),
        get("/m/{queue_id}/reply", sending.reply_view(reply_all=False)),
        get("/m/{queue_id}/reply-all", sending.reply_view(reply_all=True)),
        get("/m/{queue_id}/forward", sending.forward_view),
        get("/compose", sending.compose_view),
        Route("/compose", endpoint(sessions, sending.send_view, uploads=True), methods=["POST"]),
        get("/sent", sending.sent_view),
        get("/search", search.search_view),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return _error_page(request, error.status_code, str(error.detail))


async def _server_error(request: Request, error: Exception) -> Response:
    log.exception("webmail: error answering %s %s", request.method, request.url.path)
    return _error_page(request, 500, "Something went wrong on our side. Try again in a moment.")


def _error_page(request: Request, status: int, message: str) -> Response:
    if status == 405:
        message = "That is not something this page does."
    return site_of(request).page("error.html", None, status=status, code=status, message=message)
