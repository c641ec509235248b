"""Outage alerts: the admins' email and the webhook when a route goes down or comes up.

The store decides a route change inside the transaction that makes it (so with
several nodes exactly one of them makes it) and calls :meth:`Alerts.messages`
there: the alert email is queued in that same transaction, so it is never lost
and never queued twice. Its rows are marked for the outbound route, so it
leaves through the smarthost (or the admin domain's MX) even when the admin's
own domain is served by the server that is down.

The webhook (one JSON POST per change, from the node that made it) is best
effort: a few tries with backoff in a task of its own, never holding up
delivery; a webhook that stays unreachable is logged and given up. Changes of
``mx:`` routes (a stranger's domain, reached for a DSN) are recorded but alert
nobody.
"""

from __future__ import annotations

import asyncio
import email.policy
import json
import logging
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from spoolgate.config import AlertSettings, Settings
from spoolgate.mail.envelope import ClientInfo, Envelope, IncomingMessage, Notify, Recipient
from spoolgate.mail.queueid import new_queue_id
from spoolgate.store.queue import RouteChange

log = logging.getLogger("spoolgate.alerts")

WEBHOOK_ATTEMPTS = 4
WEBHOOK_BACKOFF = 2.0  # seconds before the second try, doubled for each next one
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def alerts_route(route: str) -> bool:
    """Whether a change of *route* alerts anyone: a configured route or the smarthost,
    not the MX of a stranger's domain."""
    return not route.startswith("mx:")


class Alerts:
    """Builds the alert email of a route change and posts its webhook, for one node."""

    def __init__(self, settings: Settings) -> None:
        self.settings: AlertSettings = settings.alerts
        self.hostname = settings.smtp.hostname
        self._tasks: set[asyncio.Task[None]] = set()
        served = {domain.name for domain in settings.domains}
        self._looping = () if settings.outbound.route is not None else tuple(
            a for a in self.settings.admins if a.rpartition("@")[2].lower() in served)

    def problems(self) -> list[str]:
        """Admin addresses whose alerts would come back here, for a warning at start."""
        return [f"alerts to {address} go to its domain's MX, which is this gateway: they "
                "wait with that domain's mail during an outage; set [outbound] route to a "
                "smarthost or add an admin address elsewhere" for address in self._looping]

    def messages(self, change: RouteChange) -> list[IncomingMessage]:
        """The alert email for *change* (none without admins); runs in the store's
        transaction, so it only builds bytes."""
        if not self.settings.admins or not alerts_route(change.route):
            return []
        return [alert_message(change, self.settings.admins, self.hostname)]

    def notify(self, change: RouteChange) -> None:
        """Post the webhook of *change* in the background, if one is configured."""
        url = self.settings.webhook
        if url is None or not alerts_route(change.route):
            return
        task = asyncio.get_running_loop().create_task(
            post_webhook(url, webhook_body(change), self.settings.webhook_timeout),
            name="alert-webhook")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Give posts in flight a moment (one timeout), then cancel them."""
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self.settings.webhook_timeout)
            for task in pending:
                task.cancel()


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes >= 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes} min" if minutes else f"{int(seconds)} s"


def _one_line(text: str | None) -> str:
    return _CONTROLS.sub(" ", text or "none").strip()[:500]


def summary(change: RouteChange) -> str:
    """One line saying what happened, for a chat message."""
    domains = f" ({', '.join(change.domains)})" if change.domains else ""
    if change.state == "down":
        return f"Spoolgate: route {change.route}{domains} is DOWN"
    return f"Spoolgate: route {change.route}{domains} is UP again"


def subject(change: RouteChange) -> str:
    """The alert email's subject: the state first, so a phone's preview shows it."""
    domains = f" ({', '.join(change.domains)})" if change.domains else ""
    return f"[Spoolgate] {change.state.upper()}: {change.route}{domains}"


def alert_body(change: RouteChange) -> str:
    """The plain-text body of the alert email."""
    domains = ", ".join(change.domains) or "(none configured: the outbound route)"
    if change.state == "down":
        lines = [
            f"The route {change.route} stopped answering and is now marked down.", "",
            f"  Route:          {change.route}",
            f"  Domains:        {domains}",
            f"  Failing since:  {_utc(change.since)}",
            f"  Marked down:    {_utc(change.at)}, after {change.failures} failed attempts",
            f"  Last error:     {_one_line(change.last_error)}",
            f"  Waiting:        {change.waiting} messages",
            f"  Reported by:    node {change.node}", "",
            "Spoolgate keeps accepting mail for these domains and holds it in its queue.",
            "It tries the server again at intervals (one connection at a time) and",
            "delivers the waiting mail, oldest first, as soon as it answers. Users can",
            "read new mail in the emergency webmail meanwhile.",
        ]
    else:
        lines = [
            f"The route {change.route} answers again and is now marked up.", "",
            f"  Route:          {change.route}",
            f"  Domains:        {domains}",
            f"  Down since:     {_utc(change.since)} ({_duration(change.at - change.since)})",
            f"  Up since:       {_utc(change.at)}",
            f"  Waiting:        {change.waiting} messages, being delivered oldest first",
            f"  Reported by:    node {change.node}",
        ]
    lines += ["", "Look closer with:  spoolgate routes",
              "                   spoolgate queue list", ""]
    return "\n".join(lines)


def alert_message(change: RouteChange, admins: tuple[str, ...],
                  hostname: str) -> IncomingMessage:
    """The alert email to *admins*, from the null sender (so it never bounces back)."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = f"Spoolgate <postmaster@{hostname}>"
    msg["To"] = ", ".join(admins)
    msg["Subject"] = subject(change)
    msg["Date"] = format_datetime(datetime.fromtimestamp(change.at, UTC))
    msg["Message-ID"] = make_msgid(f"route-{change.state}-{change.event_id}", domain=hostname)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    msg["X-Spoolgate-Route-Event"] = f"{change.state} {change.route}"
    msg.set_content(alert_body(change))
    envelope = Envelope(
        sender="", recipients=tuple(Recipient(a, frozenset({Notify.NEVER})) for a in admins),
        client=ClientInfo(ip="127.0.0.1", helo=hostname), body_type="7BIT")
    return IncomingMessage(queue_id=new_queue_id(), envelope=envelope, data=msg.as_bytes(),
                           received_at=change.at, node=change.node,
                           events=(("alert", f"route {change.route} {change.state} alert to "
                                             f"{len(admins)} admin(s)"),))


def webhook_body(change: RouteChange) -> dict[str, object]:
    """The webhook's JSON object; ``text`` makes it a Slack or Mattermost message as is."""
    return {"event": f"route_{change.state}", "route": change.route,
            "domains": list(change.domains), "since": _iso(change.since),
            "last_error": change.last_error, "waiting": change.waiting, "node": change.node,
            "at": _iso(change.at), "text": summary(change)}


async def post_webhook(url: str, body: dict[str, object], per_try: float,
                       attempts: int = WEBHOOK_ATTEMPTS, backoff: float = WEBHOOK_BACKOFF) -> bool:
    """POST *body* as JSON (*per_try* seconds each), retrying server errors and unreachable
    hosts with backoff; returns whether it was taken. Never raises (failures are logged)."""
    data = json.dumps(body).encode()
    for attempt in range(1, attempts + 1):
        try:
            status = await asyncio.to_thread(_post, url, data, per_try)
            log.info("alert webhook: %s for %s posted (HTTP %d)", body["event"], body["route"],
                     status)
            return True
        except urllib.error.HTTPError as error:
            problem, final = f"HTTP {error.code}", 400 <= error.code < 500
        except (OSError, ValueError) as error:  # refused, timed out, TLS, bad URL
            problem, final = str(getattr(error, "reason", error)), isinstance(error, ValueError)
        if final or attempt == attempts:
            log.error("alert webhook: %s for %s not posted after %d attempt(s): %s",
                      body["event"], body["route"], attempt, problem)
            return False
        log.warning("alert webhook: attempt %d failed (%s); retrying", attempt, problem)
        await asyncio.sleep(backoff * 2 ** (attempt - 1))
    return False


def _post(url: str, data: bytes, timeout: float) -> int:
    # No proxy from the environment: settings come from the config file only.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "spoolgate-alerts"})
    with opener.open(request, timeout=timeout) as response:
        response.read(65536)
        return response.status
