"""Sign-in sessions in the store, their cookie, and the CSRF check of every POST.

Owns the session cookie: a random token (256 bits) that only the browser holds; the store
keeps its SHA-256. The cookie is HttpOnly and SameSite=Lax, Secure with the ``__Host-``
prefix when served over TLS (or configured so). A session ends after ``session_idle``
seconds without a request or ``session_max`` after sign-in; a sign-in always starts a new
session ID and ends the browser's previous one. A session still waiting for its second
factor (``pending``) counts as signed out on every page but those made for it
(``endpoint(..., pending=True)``) and ends after ``totp_pending`` seconds; completing it
starts a new session ID again. Every POST carries a synchronizer token:
the session's CSRF token, or before sign-in a double-submit token in its own
SameSite=Strict cookie; a POST from another origin (Sec-Fetch-Site, Origin) is refused too.
Inline images inside the sandboxed message frame (an opaque origin, which gets no
SameSite cookie) use URLs signed with the session's secret instead (:func:`signature`).
:func:`endpoint` wraps every handler so that no route can skip these checks; handlers run
in the thread pool since the store is synchronous. Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from spoolgate.store.accounts import Accounts, WebSession
from spoolgate.webmail.settings import WebmailSettings

TOUCH_EVERY = 60.0  # seconds: a session's last_seen_at is written at most this often
MAX_FORM_FIELDS = 20

Handler = Callable[[Request, FormData | None, WebSession | None], Response]


def token_id(token: str) -> str:
    """What the store keeps of a cookie token."""
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Loads, starts and ends sessions; *clock* gives the time (tests move it)."""

    def __init__(self, accounts: Accounts, settings: WebmailSettings,
                 clock: Callable[[], float]) -> None:
        self.accounts = accounts
        self.settings = settings
        self.clock = clock

    def secure(self, request: Request) -> bool:
        return self.settings.secure_cookies or request.url.scheme == "https"

    def cookie_name(self, request: Request) -> str:
        return "__Host-spoolgate" if self.secure(request) else "spoolgate"

    def login_cookie_name(self, request: Request) -> str:
        return "__Host-spoolgate-login" if self.secure(request) else "spoolgate-login"

    def load(self, request: Request, *, pending: bool = False) -> WebSession | None:
        """The request's live session (touched), or None; an expired one is removed. A
        session awaiting its second factor counts only when *pending* allows it."""
        token = request.cookies.get(self.cookie_name(request))
        return self.load_id(token_id(token), pending=pending) if token else None

    def load_id(self, session_id: str, *, pending: bool = False) -> WebSession | None:
        """The live session stored as *session_id* (touched), or None."""
        session = self.accounts.get_session(session_id)
        if session is None:
            return None
        now = self.clock()
        if (now - session.last_seen_at > self.settings.session_idle
                or now - session.created_at > self.settings.session_max
                or (session.pending is not None
                    and now - session.created_at > self.settings.totp_pending)):
            self.accounts.delete_session(session.id)
            return None
        if session.pending is not None and not pending:
            return None
        if now - session.last_seen_at >= TOUCH_EVERY:
            self.accounts.touch_session(session.id, now)
        return session

    def start(self, request: Request, response: Response, email: str,
              pending: str | None = None) -> WebSession:
        """A new session for *email* (the browser's old one ends), cookie set on *response*;
        *pending* ("totp") while a second factor is still due."""
        old = request.cookies.get(self.cookie_name(request))
        token = secrets.token_urlsafe(32)
        now = self.clock()
        session = WebSession(token_id(token), email, secrets.token_urlsafe(32), now, now,
                             client_ip(request), pending)
        self.accounts.create_session(session, replaces=token_id(old) if old else None)
        self._set_cookie(request, response, token)
        response.delete_cookie(self.login_cookie_name(request), path="/")
        return session

    def complete(self, request: Request, response: Response,
                 session: WebSession) -> WebSession | None:
        """The pending *session* made whole under a new ID and CSRF token (cookie set on
        *response*), or None if it ended meanwhile."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        completed = WebSession(token_id(token), session.email, secrets.token_urlsafe(32),
                               now, now, client_ip(request))
        if not self.accounts.complete_session(session.id, completed):
            return None
        self._set_cookie(request, response, token)
        return completed

    def _set_cookie(self, request: Request, response: Response, token: str) -> None:
        response.set_cookie(self.cookie_name(request), token, max_age=int(self.settings.session_max),
                            path="/", secure=self.secure(request), httponly=True, samesite="lax")

    def end(self, request: Request, response: Response) -> None:
        token = request.cookies.get(self.cookie_name(request))
        if token:
            self.accounts.delete_session(token_id(token))
        response.delete_cookie(self.cookie_name(request), path="/",
                               secure=self.secure(request), httponly=True, samesite="lax")

    def login_token(self, request: Request) -> str:
        """The double-submit CSRF token of the sign-in form (the browser's, or a new one)."""
        return request.cookies.get(self.login_cookie_name(request)) or secrets.token_urlsafe(32)

    def set_login_cookie(self, request: Request, response: Response, token: str) -> None:
        response.set_cookie(self.login_cookie_name(request), token, path="/",
                            secure=self.secure(request), httponly=True, samesite="strict")

    def csrf_ok(self, request: Request, form: FormData, session: WebSession | None) -> bool:
        sent = form.get("csrf")
        if not isinstance(sent, str) or not sent or not _same_origin(request):
            return False
        expected = (session.csrf_token if session is not None
                    else request.cookies.get(self.login_cookie_name(request)))
        return bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


def signature(session: WebSession, text: str) -> str:
    """A MAC of *text* keyed by the session's secret CSRF token, for capability URLs."""
    return hmac.new(session.csrf_token.encode(), text.encode(), hashlib.sha256).hexdigest()


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _same_origin(request: Request) -> bool:
    """False when the browser says the POST comes from another origin. Sec-Fetch-Site
    first: with Referrer-Policy no-referrer, browsers send ``Origin: null`` for our forms."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True  # no claim either way: the token decides
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def endpoint(sessions: Sessions, handler: Handler, *, signed_in: bool = True,
             uploads: bool = False, pending: bool = False,
             max_fields: int = MAX_FORM_FIELDS):
    """An ASGI endpoint running *handler* in the thread pool, after the session lookup
    and, for POST, the CSRF check; signed-out requests to *signed_in* pages go to sign-in.
    Only with *pending* does a session still awaiting its second factor reach *handler*.
    With *uploads*, a POST may carry files (spooled to disk by python-multipart); one whose
    declared length is over the settings' limit is refused before it is read. A form
    with more than *max_fields* fields is refused (the console's bulk actions allow more).
    """

    async def run(request: Request) -> Response:
        form = None
        if request.method == "POST":
            max_files = sessions.settings.max_attachments if uploads else 0
            if uploads and not _length_ok(request, upload_limit(sessions.settings)):
                return PlainTextResponse(TOO_LARGE, status_code=413)
            form = await request.form(max_files=max_files, max_fields=max_fields)
        return await run_in_threadpool(_guarded, sessions, handler, request, form, signed_in,
                                       pending)

    run.__name__ = handler.__name__
    return run


TOO_LARGE = ("This message is too large to send: go back and attach fewer or smaller "
             "files.")


def upload_limit(settings: WebmailSettings) -> int:
    """Bytes a POST with uploads may declare: the message limit and room for its fields."""
    return settings.max_message_size + 1024 * 1024


def _length_ok(request: Request, limit: int) -> bool:
    """Only a declared Content-Length within *limit* (browsers always declare one)."""
    length = request.headers.get("content-length", "")
    return length.isdigit() and int(length) <= limit


def _guarded(sessions: Sessions, handler: Handler, request: Request, form: FormData | None,
             signed_in: bool, pending: bool = False) -> Response:
    session = sessions.load(request, pending=pending)
    if form is not None and not sessions.csrf_ok(request, form, session):
        return PlainTextResponse("This form has expired. Go back, reload the page and try "
                                 "again.", status_code=403)
    if signed_in and session is None:
        target = request.url.path if request.method == "GET" else "/"
        return RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303)
    return handler(request, form, session)
