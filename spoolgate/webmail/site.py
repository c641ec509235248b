"""The parts one webmail app works with, built once by :func:`create_app`.

Owns the Jinja2 environment (autoescape on for every template) and the shared services
handed to views through ``request.app.state.site``: store operations, the authenticator,
sessions, settings and the clock. Holds no per-request state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from spoolgate.intake.scanning import Scanning
from spoolgate.mail.envelope import Envelope
from spoolgate.ops.metrics import Metrics
from spoolgate.scan.bayes import BayesClassifier
from spoolgate.store.accounts import Accounts, WebSession
from spoolgate.store.mailbox import Folder, Mailbox
from spoolgate.store.store import Store
from spoolgate.webmail.auth import Authenticator
from spoolgate.webmail.sessions import Sessions
from spoolgate.webmail.settings import WebmailSettings

TEMPLATES = Path(__file__).parent / "templates"
CONSOLE_ROLES = ("admin", "domain-admin")  # who sees the link to the admin console
UNREAD_CAP = 1000  # the unread badge says "999+" beyond: counting on is a cost every page pays


def template_environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True, slots=True)
class Site:
    store: Store
    settings: WebmailSettings
    accounts: Accounts
    mailbox: Mailbox
    auth: Authenticator
    sessions: Sessions
    templates: jinja2.Environment
    clock: Callable[[], float]
    # Stores one message durably (the gateway's Intake.accept); None: sending is off.
    submit: Callable[[Envelope, bytes], Awaitable[str]] | None = None
    # Rescans a message a user releases from quarantine; None: released without a rescan.
    scanning: Scanning | None = None
    # Learns what users mark as spam or not spam; None: the marks learn nothing.
    classifier: BayesClassifier | None = None
    # domain -> [[domains]] user_release ("spam" for a domain not named).
    user_release: Mapping[str, str] = field(default_factory=dict)
    # Counts sign-ins and failures for /metrics (a private registry when not served).
    metrics: Metrics = field(default_factory=Metrics)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)

    def page(self, name: str, session: WebSession | None, status: int = 200,
             **context: Any) -> HTMLResponse:
        """Render template *name* with the signed-in user's common context."""
        common: dict[str, Any] = {"user": session.email if session else None,
                                  "csrf": session.csrf_token if session else "",
                                  "hostname": self.settings.hostname, "folder": None,
                                  "notice": None, "unread": 0, "console": False}
        if session is not None:
            user = self.accounts.get_user(session.email)
            common["console"] = user is not None and user.role in CONSOLE_ROLES
            unread = self.mailbox.count(session.email, Folder.INBOX, unseen_only=True,
                                        cap=UNREAD_CAP)
            common["unread"] = f"{UNREAD_CAP - 1}+" if unread >= UNREAD_CAP else unread
        common.update(context)
        html = self.templates.get_template(name).render(**common)
        return HTMLResponse(html, status_code=status)


def site_of(request: Request) -> Site:
    return request.app.state.site
