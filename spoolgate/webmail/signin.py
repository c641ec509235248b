"""The sign-in and sign-out pages.

Owns the forms and their answers: a wrong password and an unknown user get the same
message; a throttled attempt says when to try again. Sign-in rotates the session.
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from spoolgate.store.accounts import WebSession
from spoolgate.webmail import presenting
from spoolgate.webmail.sessions import client_ip
from spoolgate.webmail.site import Site, site_of

WRONG = "The address or the password is not right."


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
    if result.user is None:
        error = WRONG
        if result.retry_at is not None:
            error = _throttled(site, result.retry_at, result.locked)
        return _form(site, request, error=error, email=email, status=401)
    response = RedirectResponse(_next(form.get("next")), status_code=303)
    site.sessions.start(request, response, result.user.email)
    return response


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
