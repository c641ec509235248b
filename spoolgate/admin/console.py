"""The admin console's pages: dashboard, queue, quarantine, message detail, tracking, audit.

Owns the ``/admin`` URL table and its views. The console lives in the webmail's app and
shares its sign-in, sessions and CSRF checks (every route goes through the webmail's
``endpoint``); each view then checks the role on the server (:mod:`spoolgate.admin.access`)
and reads through the scope, so a domain admin's requests for another domain's message
get 404. Every action is recorded in the audit log. Views run in the thread pool, as the
webmail's do; the quarantine release (a rescan, async) is run on the event loop from there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import anyio.from_thread
import jinja2
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from spoolgate.admin import actions
from spoolgate.admin.access import Operator, operator
from spoolgate.admin.charts import Series, line_chart
from spoolgate.config import Settings
from spoolgate.mail.queueid import is_queue_id
from spoolgate.mime.parse import header_summary
from spoolgate.scan.engines import antivirus_warning
from spoolgate.store.accounts import WebSession
from spoolgate.store.audit import AuditLog
from spoolgate.store.console import Console, QueueFilter, TrackingQuery
from spoolgate.store.queue import Queue
from spoolgate.store.senders import SenderRules
from spoolgate.webmail import presenting
from spoolgate.webmail.sessions import Sessions, endpoint
from spoolgate.webmail.site import TEMPLATES as WEBMAIL_TEMPLATES
from spoolgate.webmail.site import Site, site_of

TEMPLATES = Path(__file__).parent / "templates"
PAGE_SIZE = 100
MAX_SELECTED = 500  # messages one bulk action may name
RANGES = {"hour": (3600.0, 60.0), "day": (86400.0, 1800.0), "week": (7 * 86400.0, 6 * 3600.0)}
STATES = ("queued", "deferred", "delivering", "held", "quarantined", "delivered", "failed",
          "deleted")
DONE = {
    "flush": "made due now", "hold": "put on hold", "release": "released from hold",
    "delete": "deleted", "bounce": "bounced to the sender",
    "release-quarantine": "released from quarantine",
    "allow-sender": "added: their senders are allowed",
    "block-sender": "added: their senders are blocked",
}


def console_routes(settings: Settings,
                   releaser: actions.Releaser | None = None) -> Callable[[Sessions], list]:
    """The console's routes, for ``create_app(extra_routes=...)``; *releaser* rescans
    and releases a quarantined message (without it, that action is unavailable)."""
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(TEMPLATES),
                                    jinja2.FileSystemLoader(WEBMAIL_TEMPLATES)]),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True)
    views = _Views(settings, env, releaser)

    def routes(sessions: Sessions) -> list:
        def get(path: str, handler) -> Route:
            return Route(path, endpoint(sessions, handler), methods=["GET"])

        return [
            get("/admin", views.dashboard),
            get("/admin/queue", views.queue),
            get("/admin/quarantine", views.quarantine),
            get("/admin/m/{queue_id}", views.message),
            Route("/admin/act", endpoint(sessions, views.act, max_fields=MAX_SELECTED + 10),
                  methods=["POST"]),
            get("/admin/track", views.track),
            get("/admin/audit", views.audit),
            get("/admin/senders", views.senders),
            Route("/admin/senders/remove", endpoint(sessions, views.remove_sender),
                  methods=["POST"]),
        ]
    return routes


class _Views:
    def __init__(self, settings: Settings, env: jinja2.Environment,
                 releaser: actions.Releaser | None) -> None:
        self.settings = settings
        self.env = env
        self.releaser = releaser
        self.routes_of = {d.name: str(d.route) for d in settings.domains}

    # -- pages -------------------------------------------------------------------------

    def dashboard(self, request: Request, form: FormData | None,
                  session: WebSession | None) -> Response:
        site, who = _context(request, session)
        span_name = request.query_params.get("range", "hour")
        span, bucket = RANGES.get(span_name, RANGES["hour"])
        now = site.clock()
        console = Console(site.store)
        start = (now // bucket + 1) * bucket - span  # whole buckets, the last one open
        points = console.traffic(start, start + span, bucket, who.scope)
        labels = [_tick(p.start, span_name, site.zone) for p in points]
        chart = line_chart(f"Messages per {_bucket_words(bucket)}, last {span_name}", labels, [
            Series("accepted", "#2b6cb0", tuple(p.accepted for p in points)),
            Series("delivered", "#2f855a", tuple(p.delivered for p in points)),
            Series("refused", "#c53030", tuple(p.rejected for p in points)),
        ])
        queue = Queue(site.store, site.settings.node)
        visible = {name for d, name in self.routes_of.items() if who.sees(d)}
        routes = [r for r in queue.routes() if who.scope is None or r.name in visible]
        changes = [(presenting.long_time(e.at, site.zone), e)
                   for e in queue.route_events(start, limit=50)
                   if who.scope is None or e.route in visible]
        warning = antivirus_warning(self.settings, [d.name for d in self.settings.domains
                                                    if who.sees(d.name)])
        return self.page(site, session, "admin_dashboard.html", section="dashboard",
                         warnings=[warning] if warning else [], range=span_name, ranges=list(RANGES), chart=chart,
                         points=list(zip(labels, points, strict=True)),
                         bucket_words=_bucket_words(bucket),
                         mix=console.verdicts(start, who.scope),
                         depth=[(d, s, n, _age(age)) for d, s, n, age in
                                console.depth(who.scope, now)],
                         routes=[(r, presenting.long_time(r.since, site.zone),
                                  ", ".join(d for d, name in self.routes_of.items()
                                            if name == r.name and who.sees(d)))
                                 for r in routes], changes=changes)

    def queue(self, request: Request, form: FormData | None, session: WebSession | None,
              quarantine: bool = False) -> Response:
        site, who = _context(request, session)
        params = request.query_params
        state = params.get("state", "")
        if quarantine:
            state = "quarantined"
        where = QueueFilter(
            states=(state,) if state in STATES else
            ("queued", "deferred", "delivering", "held"),
            domains=tuple(d for d in [params.get("domain", "").strip().lower()] if d),
            sender=params.get("sender", "")[:320], recipient=params.get("recipient", "")[:320],
            older_than=_minutes(params.get("older")), newer_than=_minutes(params.get("newer")))
        offset = max(0, _int(params.get("offset"), 0))
        console = Console(site.store)
        now = site.clock()
        rows = console.queue(where, who.scope, PAGE_SIZE + 1, offset, now)
        more, rows = len(rows) > PAGE_SIZE, rows[:PAGE_SIZE]
        why = console.verdicts_of([row.queue_id for row in rows]) if quarantine else {}
        query = {k: v for k, v in params.items() if k != "offset" and v}
        return self.page(
            site, session, "admin_queue.html",
            section="quarantine" if quarantine else "queue", rows=[
                (row, presenting.short_time(row.received_at, now, site.zone), _age(
                    now - row.received_at)) for row in rows],
            total=console.count(where, who.scope, now), filters=params, states=STATES,
            state=state, quarantine=quarantine, why=why, offset=offset, page_size=PAGE_SIZE,
            next_url=f"?{urlencode({**query, 'offset': offset + PAGE_SIZE})}" if more else None,
            prev_url=(f"?{urlencode({**query, 'offset': max(0, offset - PAGE_SIZE)})}"
                      if offset else None),
            verbs=self._verbs(quarantine), back=str(request.url.path) + (
                f"?{request.url.query}" if request.url.query else ""),
            done=_done(params))

    def quarantine(self, request: Request, form: FormData | None,
                   session: WebSession | None) -> Response:
        return self.queue(request, form, session, quarantine=True)

    def message(self, request: Request, form: FormData | None,
                session: WebSession | None) -> Response:
        site, who = _context(request, session)
        queue_id = request.path_params["queue_id"]
        console = Console(site.store)
        if not is_queue_id(queue_id) or not console.in_scope(queue_id, who.scope):
            raise HTTPException(404, "There is no such message.")
        detail = site.store.show(queue_id)
        data = site.store.message_data(queue_id) or b""
        if detail is None:
            raise HTTPException(404, "There is no such message.")
        recipients = [r for r in detail.entry.recipients
                      if who.sees(r.address.rpartition("@")[2])]
        subject, message_id = header_summary(data)
        return self.page(
            site, session, "admin_message.html", section="queue", detail=detail,
            recipients=recipients, subject=subject, message_id=message_id,
            received=presenting.long_time(detail.entry.received_at, site.zone),
            events=[(presenting.long_time(e.at, site.zone), e)
                    for e in console.events(queue_id, who.scope)],
            headers=_header_text(data), verbs=self._verbs(any(
                r.state == "quarantined" for r in recipients)),
            back=f"/admin/m/{queue_id}", done=_done(request.query_params))

    def track(self, request: Request, form: FormData | None,
              session: WebSession | None) -> Response:
        site, who = _context(request, session)
        params = request.query_params
        errors: list[str] = []
        query = TrackingQuery(
            sender=params.get("sender", "")[:320], recipient=params.get("recipient", "")[:320],
            subject=params.get("subject", "")[:500], message_id=params.get("message_id", "")[:500],
            queue_id=params.get("queue_id", "")[:20], client_ip=params.get("client_ip", "")[:64],
            since=_when(params.get("since"), site.zone, errors, "From"),
            until=_when(params.get("until"), site.zone, errors, "Until"))
        results = [] if query.empty or errors else Console(site.store).track(query, who.scope)
        now = site.clock()
        return self.page(site, session, "admin_track.html", section="track", filters=params,
                         searched=not query.empty, errors=errors,
                         results=[(t, presenting.short_time(t.at, now, site.zone))
                                  for t in results])

    def audit(self, request: Request, form: FormData | None,
              session: WebSession | None) -> Response:
        site, who = _context(request, session)
        entries = AuditLog(site.store).recent(200, actor=None if who.is_admin else who.email)
        return self.page(site, session, "admin_audit.html", section="audit", entries=[
            (presenting.long_time(e.at, site.zone), e, is_queue_id(e.target)) for e in entries])

    # -- sender rules ------------------------------------------------------------------

    def senders(self, request: Request, form: FormData | None,
                session: WebSession | None) -> Response:
        """The sender rules of the operator's domains and of their domains' users."""
        site, who = _context(request, session)
        rules = [r for r in SenderRules(site.store).list()
                 if who.sees(r.scope.rpartition("@")[2])]
        return self.page(site, session, "admin_senders.html", section="senders", rules=[
            (r, presenting.long_time(r.created_at, site.zone)) for r in rules],
            removed=request.query_params.get("removed") == "1")

    def remove_sender(self, request: Request, form: FormData | None,
                      session: WebSession | None) -> Response:
        site, who = _context(request, session)
        assert form is not None
        rules = SenderRules(site.store)
        rule_id = _int(str(form.get("id", "")), -1)
        rule = next((r for r in rules.list() if r.id == rule_id
                     and who.sees(r.scope.rpartition("@")[2])), None)
        if rule is None or rules.remove(rule.id) is None:
            raise HTTPException(404, "There is no such rule.")
        actions.record(Queue(site.store, site.settings.node), who, f"sender.{rule.action}.remove",
                       rule.sender, f"{rule.scope_kind} {rule.scope}")
        return RedirectResponse("/admin/senders?removed=1", status_code=303)

    # -- the one action endpoint -------------------------------------------------------

    def act(self, request: Request, form: FormData | None,
            session: WebSession | None) -> Response:
        site, who = _context(request, session)
        assert form is not None
        verb = str(form.get("verb", ""))
        ids = list(dict.fromkeys(str(i) for i in form.getlist("id")))[:MAX_SELECTED]
        back = str(form.get("back", "/admin/queue"))
        if not back.startswith("/admin") or "//" in back or "\\" in back:
            back = "/admin/queue"
        if verb not in actions.VERBS or not ids:
            return _redirect(back, "none", 0, 0)
        if verb == "release-quarantine" and self.releaser is None:
            raise HTTPException(400, "Releasing from quarantine is not available here.")
        console, queue = Console(site.store), Queue(site.store, site.settings.node)
        done = refused = 0
        for queue_id in ids:
            if not is_queue_id(queue_id) or not console.in_scope(queue_id, who.scope):
                refused += 1
                continue
            if verb in actions.SENDER_VERBS:
                done += actions.list_sender(queue, who, verb, queue_id).count
                continue
            try:
                if verb == "release-quarantine":
                    done += self._release(queue, who, queue_id)
                else:
                    done += actions.act(self.settings, queue, who, verb, queue_id).count
            except actions.OutOfScope:
                refused += 1
        return _redirect(back, verb, done, refused)

    def _release(self, queue: Queue, who: Operator, queue_id: str) -> int:
        assert self.releaser is not None
        if not actions.check_whole_message(queue, who, queue_id):
            raise actions.OutOfScope(queue_id)
        count, note = anyio.from_thread.run(self.releaser, queue_id, who)
        actions.record(queue, who, "quarantine.release", queue_id, note)
        return count

    # -- rendering ---------------------------------------------------------------------

    def _verbs(self, quarantine: bool) -> list[tuple[str, str]]:
        if quarantine:
            names = ["release-quarantine", "delete"] if self.releaser else ["delete"]
            names += list(actions.SENDER_VERBS)
        else:
            names = ["flush", "hold", "release", "bounce", "delete"]
        return [(name, actions.VERBS[name]) for name in names]

    def page(self, site: Site, session: WebSession | None, name: str,
             **context: Any) -> HTMLResponse:
        common = {"user": session.email if session else None,
                  "csrf": session.csrf_token if session else "",
                  "hostname": site.settings.hostname, "folder": None, "notice": None,
                  "unread": 0, "console": True}
        html = self.env.get_template(name).render(**{**common, **context})
        return HTMLResponse(html)


def _context(request: Request, session: WebSession | None) -> tuple[Site, Operator]:
    assert session is not None
    site = site_of(request)
    return site, operator(site.accounts, session)


def _redirect(back: str, verb: str, done: int, refused: int) -> Response:
    path, _, query = back.partition("?")
    kept = [part for part in query.split("&") if part and not part.startswith(
        ("done=", "n=", "refused="))]
    kept += [f"done={verb}", f"n={done}", f"refused={refused}"]
    return RedirectResponse(f"{path}?{'&'.join(kept)}", status_code=303)


def _done(params) -> str | None:
    verb = params.get("done")
    if verb not in DONE:
        return None
    count, refused = _int(params.get("n"), 0), _int(params.get("refused"), 0)
    noun = "domain rule(s)" if verb in actions.SENDER_VERBS else "recipient(s)"
    text = f"{count} {noun} {DONE[verb]}."
    if refused:
        text += f" {refused} message(s) were not yours to act on, or are gone."
    return text


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _minutes(value: str | None) -> float | None:
    number = _int(value, -1) if value else -1
    return number * 60.0 if number >= 0 else None


def _when(value: str | None, zone: ZoneInfo, errors: list[str], label: str) -> float | None:
    """A "YYYY-MM-DD" or "YYYY-MM-DD HH:MM" (or the browser's "YYYY-MM-DDTHH:MM") in the
    console's time zone."""
    if not value:
        return None
    text = value.strip().replace("T", " ")
    for pattern in ("%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, pattern).replace(tzinfo=zone).timestamp()
        except ValueError:
            continue
    errors.append(f"{label}: write a date as 2026-11-28 or 2026-11-28 14:30.")
    return None


def _tick(at: float, span_name: str, zone: ZoneInfo) -> str:
    moment = dt.datetime.fromtimestamp(at, zone)
    return moment.strftime("%a %H:%M" if span_name == "week" else "%H:%M")


def _bucket_words(bucket: float) -> str:
    if bucket < 3600:
        return "minute" if bucket == 60 else f"{bucket / 60:g} minutes"
    return "hour" if bucket == 3600 else f"{bucket / 3600:g} hours"


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{int(seconds)} s"
    if seconds < 5400:
        return f"{int(seconds // 60)} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _header_text(data: bytes, limit: int = 64 * 1024) -> str:
    """The header section as text, for the detail page (escaped by the template)."""
    end = data.find(b"\r\n\r\n", 0, limit)
    return data[:end if end >= 0 else limit].decode("utf-8", "replace")
