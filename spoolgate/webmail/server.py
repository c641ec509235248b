"""Serving the webmail: uvicorn inside the gateway's event loop, and session upkeep.

The gateway owns the process's signals (SIGTERM stops ingress, delivery and the web in
order), so the embedded uvicorn never installs handlers of its own. Expired sessions are
removed from the store every few minutes; a failure to do so is logged once and retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn

from spoolgate.config import Settings
from spoolgate.intake.scanning import Scanning
from spoolgate.ops.metrics import Metrics
from spoolgate.ops.serving import serve_http
from spoolgate.scan.bayes import BayesClassifier
from spoolgate.store.accounts import Accounts
from spoolgate.store.store import Store, StoreError
from spoolgate.webmail.app import create_app
from spoolgate.webmail.sending import Submit
from spoolgate.webmail.sessions import Sessions
from spoolgate.webmail.settings import WebmailSettings

log = logging.getLogger("spoolgate.web")
SESSION_UPKEEP_INTERVAL = 300.0


def webmail_settings(settings: Settings) -> WebmailSettings:
    """The webmail's view of the configuration."""
    web = settings.web
    return WebmailSettings(
        hostname=settings.smtp.hostname, node=settings.node.name,
        domains={d.name: str(d.route) for d in settings.domains},
        session_idle=web.session_idle, session_max=web.session_max,
        secure_cookies=web.secure_cookies, timezone=web.timezone,
        max_recipients_per_hour=web.max_recipients_per_hour,
        trash_retention=settings.delivery.failed_retention_days * 86400,
        imap={d.name: d.imap for d in settings.domains if d.imap is not None},
        imap_local_parts={d.name: d.recipients for d in settings.domains
                          if d.imap is not None})


@dataclass
class WebService:
    """The running webmail: its server task and the session upkeep task."""

    server: uvicorn.Server
    serving: asyncio.Task[None]
    upkeep: asyncio.Task[None]

    async def stop(self) -> None:
        self.upkeep.cancel()
        self.server.should_exit = True
        await self.serving


async def start_webmail(settings: Settings, store: Store,
                        submit: Submit | None = None,
                        extra_routes: Callable[[Sessions], list] | None = None,
                        scanning: Scanning | None = None,
                        classifier: BayesClassifier | None = None,
                        metrics: Metrics | None = None) -> WebService:
    """Listen on ``[web] listen``; return once the socket is bound. *submit* queues mail
    sent from the webmail (without it, sending is refused); *extra_routes* are the admin
    console's pages; *scanning* rescans what users release from their quarantine and
    *classifier* learns their spam / not spam marks (each optional)."""
    options = webmail_settings(settings)
    app = create_app(store, options, submit=submit, extra_routes=extra_routes,
                     scanning=scanning, classifier=classifier,
                     user_release={d.name: d.spam.user_release for d in settings.domains},
                     metrics=metrics)
    listen = settings.web.listen
    server, serving = await serve_http(
        app, listen.host, listen.port, "webmail",
        proxy_headers=bool(settings.web.trusted_proxies),
        forwarded_allow_ips=list(settings.web.trusted_proxies) or None)
    log.info("webmail listening web=%s", listen)
    upkeep = asyncio.get_running_loop().create_task(_expire_sessions(Accounts(store), options))
    return WebService(server, serving, upkeep)


async def _expire_sessions(accounts: Accounts, options: WebmailSettings) -> None:
    failing = False
    while True:
        await asyncio.sleep(SESSION_UPKEEP_INTERVAL)
        now = time.time()
        try:
            await asyncio.to_thread(accounts.expire_sessions, now - options.session_idle,
                                    now - options.session_max)
        except StoreError as error:
            if not failing:
                log.warning("expiring webmail sessions failed (logged once): %s", error)
            failing = True
        else:
            failing = False
