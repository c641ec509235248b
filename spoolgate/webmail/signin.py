"""The sign-in and sign-out pages.

Owns the forms and their answers: a wrong password and an unknown user get the same
message; a throttled attempt says when to try again. Sign-in rotates the session. A user
with a TOTP secret gets a pending session after the password and the code form at
``/login/totp``; the right code completes it under a new session ID.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from spoolgate.store.accounts import WebSession
from spoolgate.webmail import presenting
from spoolgate.webmail.sessions import client_ip
from spoolgate.webmail.site import Site, site_of

WRONG = "The address or the password is not right."
WRONG_CODE = "That code is not right, or it was already used. Wait for the next code."


def _next(value: object) -> str:
    """Only a path on this site: never an open redirect."""
    if isinstance(value, str) and value.startswith("/") and not value.startswith("//") \
            and "\\" not in value:
        return value
    return "/inbox"


def login_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    site = site_of(request)
    if form is None:
        if session is not None:
            return RedirectResponse("/inbox", status_code=303)
        return _form(site, request, error=None, email="", status=200)
    email = str(form.get("email", ""))[:320]
    result = site.auth.sign_in(email, str(form.get("password", ""))[:1024], client_ip(request))
    if result.user is None or not result.user.totp_secret:  # else counted after the code
        site.metrics.signin(result.user is not None)
    if result.user is None:
        error = WRONG
        if result.retry_at is not None:
            error = _throttled(site, result.retry_at, result.locked)
        return _form(site, request, error=error, email=email, status=401)
    target = _next(form.get("next"))
    if result.user.totp_secret:
        response = RedirectResponse(f"/login/totp?next={quote(target, safe='/')}",
                                    status_code=303)
        site.sessions.start(request, response, result.user.email, pending="totp")
        return response
    response = RedirectResponse(target, status_code=303)
    site.sessions.start(request, response, result.user.email)
    return response


def totp_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    """The second step: the 6-digit code of the user's authenticator app."""
    site = site_of(request)
    if session is None:
        return RedirectResponse("/login", status_code=303)
    if session.pending is None:
        return RedirectResponse("/inbox", status_code=303)
    if form is None:
        return _totp_form(site, request, session, error=None, status=200)
    target = _next(form.get("next"))
    result = site.auth.verify_totp(session.email, str(form.get("code", ""))[:32],
                                   client_ip(request))
    site.metrics.signin(result.user is not None)
    if result.user is None:
        error = WRONG_CODE
        if result.retry_at is not None:
            error = _throttled(site, result.retry_at, result.locked)
        return _totp_form(site, request, session, error=error, status=401, target=target)
    response = RedirectResponse(target, status_code=303)
    if site.sessions.complete(request, response, session) is None:
        return RedirectResponse("/login", status_code=303)
    return response


def _totp_form(site: Site, request: Request, session: WebSession, error: str | None,
               status: int, target: str | None = None) -> Response:
    return site.page("totp.html", None, status=status, error=error, csrf=session.csrf_token,
                     next=target or _next(request.query_params.get("next")))


def _throttled(site: Site, retry_at: float, locked: bool) -> str:
    if locked:
        when = presenting.clock_time(retry_at, site.zone)
        return f"Too many failed sign-ins. Sign-in is locked until {when}."
    seconds = max(1, int(retry_at - site.clock() + 0.999))
    return f"Too many failed sign-ins. Wait {seconds} seconds, then try again."


def _form(site: Site, request: Request, error: str | None, email: str, status: int) -> Response:
    token = site.sessions.login_token(request)
    response = site.page("login.html", None, status=status, error=error, email=email,
                         next=_next(request.query_params.get("next")), csrf=token)
    site.sessions.set_login_cookie(request, response, token)
    return response


def logout_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    response = RedirectResponse("/login", status_code=303)
    site_of(request).sessions.end(request, response)
    return response
