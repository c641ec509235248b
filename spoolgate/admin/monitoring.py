"""The monitoring listener: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz``.

Serves the gateway's :class:`~spoolgate.ops.metrics.Metrics` registry in the Prometheus
text format, plus :class:`StoreCollector`, which reads queue depth and route health from
the store at scrape time (so those figures cannot drift from the queue they describe).
It runs on a listener of its own (``[metrics] listen``, loopback by default), never on the
public webmail's, because metrics reveal traffic. uvicorn serves it inside the gateway's
event loop without signal handlers of its own.

``/healthz`` answers 200 as long as the event loop answers. ``/readyz`` answers 200 only
when the store answers a trivial query within :data:`STORE_TIMEOUT`, the SMTP
listeners are up and every configured scanning daemon (clamd, Rspamd, spamd) answers a
ping within :data:`~spoolgate.scan.engines.PING_BUDGET`, else 503 with a short plain
reason (no internal error text): a node whose scanner is down answers ``451 4.7.1`` to
every message, so a load balancer should send mail elsewhere. A scanner listed in
``rescan_on_error`` is the exception: mail still goes in (held for a rescan), so the node
stays ready and the body names the silent scanner on a second line. A store
failure during a scrape does not fail the scrape: ``spoolgate_store_up`` drops to 0 and
the store's gauges are left out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import uvicorn
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from spoolgate.config import Settings
from spoolgate.delivery.routes import RouteTable
from spoolgate.ops.metrics import Metrics
from spoolgate.ops.serving import serve_http
from spoolgate.scan.base import Scanner
from spoolgate.scan.engines import described, silent_engines
from spoolgate.store.console import Console
from spoolgate.store.queue import Queue
from spoolgate.store.store import Store, StoreError

log = logging.getLogger("spoolgate.monitoring")

# The classic text format (0.0.4) that every Prometheus server reads; our names need
# none of the newer format's escaping, so the bytes are the same.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STORE_TIMEOUT = 5.0
WAITING_STATES = ("queued", "deferred", "delivering", "held", "quarantined")
OTHER = "other"  # the domain label of waiting mail for domains we do not serve

ListenerCheck = Callable[[], str | None]
"""Returns None when the SMTP listeners are up, else why not (a short plain sentence)."""


class StoreCollector(Collector):
    """Queue depth per state, domain and route, and route up/down, read from the store.

    Runs its queries on every scrape (one grouped count, one read of the routes table);
    configured domains and routes are always present, at 0 when nothing waits. Mail for
    other domains (DSNs, alerts) is summed under ``domain="other"`` so that the number of
    series stays bounded by the configuration.
    """

    def __init__(self, store: Store, settings: Settings) -> None:
        self._console = Console(store)
        self._queue = Queue(store, settings.node.name)
        table = RouteTable(settings)
        self._route_of = {d.name: table.lookup(d.name).name for d in settings.domains}
        outbound = str(settings.outbound.route) if settings.outbound.route else None
        self._route_of[OTHER] = outbound or "mx"
        self._routes = sorted(set(self._route_of.values()) - {"mx"})

    def describe(self) -> Iterable[Metric]:
        """The families' names, for the registry's clash check, without asking the store."""
        return [GaugeMetricFamily(name, "") for name in (
            "spoolgate_store_up", "spoolgate_queue_recipients", "spoolgate_queue_oldest_seconds",
            "spoolgate_route_up")]

    def collect(self) -> Iterable[Metric]:
        store_up = GaugeMetricFamily("spoolgate_store_up",
                                     "1 when the store answered this scrape's queries, else 0")
        try:
            depth = self._console.depth(None)
            routes = {status.name: status for status in self._queue.routes()}
        except StoreError as error:
            log.warning("metrics: the store did not answer: %s", error)
            store_up.add_metric([], 0)
            return [store_up]
        store_up.add_metric([], 1)
        labels = ["state", "domain", "route"]
        waiting = GaugeMetricFamily(
            "spoolgate_queue_recipients", "Recipients waiting in the queue, by state, "
            "recipient domain and route", labels=labels)
        oldest = GaugeMetricFamily(
            "spoolgate_queue_oldest_seconds", "Age of the oldest waiting recipient, by state, "
            "recipient domain and route", labels=labels)
        found = {(domain, state): (0, 0.0) for domain in self._route_of
                 for state in WAITING_STATES}
        for domain, state, count, age in depth:
            key = (domain if domain in self._route_of else OTHER, state)
            before, older = found.get(key, (0, 0.0))
            found[key] = (before + count, max(older, age))
        for (domain, state), (count, age) in sorted(found.items()):
            key = [state, domain, self._route_of[domain]]
            waiting.add_metric(key, count)
            oldest.add_metric(key, age)
        up = GaugeMetricFamily(
            "spoolgate_route_up", "1 while a configured route is up (never failed, or "
            "answering again), 0 while it is down or recovering", labels=["route"])
        for name in self._routes:
            status = routes.get(name)
            up.add_metric([name], 1 if status is None or status.state == "up" else 0)
        return [store_up, waiting, oldest, up]


def create_monitoring_app(metrics: Metrics, store: Store, listeners: ListenerCheck,
                          scanners: Sequence[Scanner] = (),
                          rescan_on_error: frozenset[str] = frozenset()) -> Starlette:
    """The Starlette app of the monitoring listener (no sessions, no templates);
    *scanners* are pinged by ``/readyz``, those in *rescan_on_error* only reported."""

    async def scrape(request: Request) -> Response:
        body = await asyncio.to_thread(generate_latest, metrics.registry)  # queries the store
        return Response(body, media_type=CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        problem = await _store_problem(store) or listeners()
        if problem is not None:
            return PlainTextResponse(problem, status_code=503)
        silent = await silent_engines(scanners)
        blocking = [described(name) for name in silent if name not in rescan_on_error]
        if blocking:
            return PlainTextResponse("scanner not answering: " + ", ".join(blocking),
                                     status_code=503)
        if silent:
            return PlainTextResponse("ready\nscanner not answering, mail held for a rescan: "
                                     + ", ".join(described(name) for name in silent))
        return PlainTextResponse("ready")

    return Starlette(routes=[Route("/metrics", scrape), Route("/healthz", healthz),
                             Route("/readyz", readyz)])


async def _store_problem(store: Store) -> str | None:
    try:
        await asyncio.wait_for(asyncio.to_thread(store.ping), STORE_TIMEOUT)
    except TimeoutError:
        return f"store did not answer within {STORE_TIMEOUT:g}s"
    except StoreError as error:
        log.warning("readiness: the store did not answer: %s", error)
        return "store unavailable"
    return None


@dataclass
class MonitoringService:
    """The running monitoring listener."""

    server: uvicorn.Server
    serving: asyncio.Task[None]

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.serving


async def start_monitoring(settings: Settings, metrics: Metrics, store: Store,
                           listeners: ListenerCheck,
                           scanners: Sequence[Scanner] = ()) -> MonitoringService:
    """Listen on ``[metrics] listen``; return once the socket is bound (raises if it cannot).

    Registers a :class:`StoreCollector` in *metrics*' registry; *listeners* tells
    ``/readyz`` whether the SMTP listeners are up, and *scanners* (those of ``[scan]``)
    are pinged by it.
    """
    metrics.registry.register(StoreCollector(store, settings))
    app = create_monitoring_app(metrics, store, listeners, scanners,
                                frozenset(settings.scan.rescan_on_error))
    listen = settings.metrics.listen
    server, serving = await serve_http(app, listen.host, listen.port, "monitoring")
    log.info("monitoring listening metrics=%s", listen)
    return MonitoringService(server, serving)
