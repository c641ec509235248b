"""Where each recipient domain's mail goes, and how hard this node may push each route.

A :class:`Destination` is built from the settings once: a configured domain goes
to its route (the company's server); any other domain (a DSN to a sender on the
internet), and any row marked for the outbound route (an outage alert to an admin
whose own domain's server is the one down), goes through the outbound route, a
smarthost or the domain's MX.
A :class:`RouteGate` is this node's live view of one destination: its
connection slots (an additive-increase, multiplicative-decrease limit that ramps
up after an outage and backs off on temporary failures or rising latency), its
idle connections for reuse, and its health as last read from the store.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

from spoolgate.config import DomainSettings, RetrySettings, Settings
from spoolgate.delivery.client import MailClient
from spoolgate.store.queue import OUTBOUND

IDLE_CONNECTION_SECONDS = 2.0  # as Postfix's smtp_connection_cache_time_limit


@dataclass(frozen=True, slots=True)
class Destination:
    """One downstream: a route of configured domains, a smarthost, or an MX domain."""

    name: str                     # "smtp://host:port", "lmtp://...", or "mx:domain"
    host: str | None              # None: look up the MX of ``mx_domain``
    port: int
    lmtp: bool
    tls_mode: str
    tls_ca: Path | None
    retry: RetrySettings
    retention: float              # seconds a delivered message stays readable
    domains: tuple[str, ...] = ()
    mx_domain: str | None = None
    auth: tuple[str, str] | None = None  # smarthost credentials

    def __repr__(self) -> str:  # keep the password out of logs and tracebacks
        return f"Destination({self.name})"

    def tls_context(self) -> ssl.SSLContext | None:
        """Verified TLS (configured CA or the system store) for ``required``, and for any
        route we send a password to unless its tls is ``none``; else None (unverified)."""
        if self.tls_mode == "none" or (self.tls_mode != "required" and self.auth is None):
            return None
        context = ssl.create_default_context(cafile=str(self.tls_ca) if self.tls_ca else None)
        return context


class RouteTable:
    """Maps a recipient domain to its :class:`Destination`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._by_domain: dict[str, Destination] = {}
        by_route: dict[str, list[DomainSettings]] = {}
        for domain in settings.domains:
            by_route.setdefault(str(domain.route), []).append(domain)
        for name, domains in by_route.items():
            first = domains[0]
            destination = Destination(
                name=name, host=first.route.host, port=first.route.port,
                lmtp=first.route.scheme == "lmtp", tls_mode=first.tls, tls_ca=first.tls_ca,
                retry=first.retry, retention=max(d.retention_days for d in domains) * 86400,
                domains=tuple(d.name for d in domains))
            for domain in domains:
                self._by_domain[domain.name] = _with_domain_policy(destination, domain)
        outbound = settings.outbound
        self._outbound = None if outbound.route is None else Destination(
            name=str(outbound.route), host=outbound.route.host, port=outbound.route.port,
            lmtp=False, tls_mode=outbound.tls, tls_ca=outbound.tls_ca,
            retry=settings.delivery.retry,
            retention=settings.delivery.retention_days * 86400,
            auth=(outbound.username, outbound.password)
            if outbound.username is not None and outbound.password is not None else None)

    def lookup(self, domain: str, route: str | None = None) -> Destination:
        """The destination of *domain*; with *route* ``OUTBOUND``, the outbound one whatever
        the domain."""
        domain = domain.lower()
        found = self._by_domain.get(domain) if route != OUTBOUND else None
        if found is not None:
            return found
        if self._outbound is not None:
            return self._outbound
        delivery, outbound = self._settings.delivery, self._settings.outbound
        return Destination(name=f"mx:{domain}", host=None, port=outbound.mx_port, lmtp=False,
                           tls_mode=outbound.tls, tls_ca=outbound.tls_ca, retry=delivery.retry,
                           retention=delivery.retention_days * 86400, mx_domain=domain)

    def domains_of(self, route_name: str) -> tuple[str, ...]:
        for destination in self._by_domain.values():
            if destination.name == route_name:
                return destination.domains
        return ()


def _with_domain_policy(destination: Destination, domain: DomainSettings) -> Destination:
    """The route's destination with this domain's own retry schedule and retention."""
    return Destination(
        name=destination.name, host=destination.host, port=destination.port,
        lmtp=destination.lmtp, tls_mode=destination.tls_mode, tls_ca=destination.tls_ca,
        retry=domain.retry, retention=domain.retention_days * 86400,
        domains=destination.domains)


@dataclass
class RouteGate:
    """This node's slots, idle connections and last known health for one destination."""

    name: str
    maximum: int
    initial: int
    limit: float = 0.0
    in_use: int = 0
    down: bool = False
    latency: float = 0.0          # moving average of transaction time, seconds
    idle: list[tuple[float, MailClient]] = field(default_factory=list)
    _waiters: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)

    def __post_init__(self) -> None:
        self.limit = float(self.initial)

    async def acquire(self) -> None:
        """Wait for a slot: one while the route is down (the probe), else the ramp's limit.

        Waiters queue in order and a released slot goes to the first of them, so a
        release wakes one task, not every waiting one.
        """
        if self.in_use < self.allowed and not self._waiters:
            self.in_use += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # granted, then cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    async def release(self) -> None:
        self._release_slot()

    def _release_slot(self) -> None:
        self.in_use -= 1
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.in_use < self.allowed:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_use += 1
                waiter.set_result(None)

    @property
    def allowed(self) -> int:
        return 1 if self.down else max(1, int(self.limit))

    def succeeded(self, seconds: float) -> None:
        """Additive increase, unless the server is slowing down."""
        rising = self.latency > 0 and seconds > 2 * self.latency + 0.05
        self.latency = seconds if self.latency == 0 else 0.9 * self.latency + 0.1 * seconds
        if not rising:
            self.limit = min(self.maximum, self.limit + 1 / max(1.0, self.limit))
            self._grant()

    def backed_off(self) -> None:
        """Multiplicative decrease after a temporary failure."""
        self.limit = max(1.0, self.limit / 2)

    async def set_down(self, down: bool) -> None:
        if self.down and not down:
            self.limit = float(self.initial)  # ramp up again after an outage
        self.down = down
        self._grant()

    def take_idle(self) -> MailClient | None:
        while self.idle:
            _, client = self.idle.pop()
            if not client.broken:
                return client
        return None

    def put_idle(self, client: MailClient) -> None:
        if not client.broken:
            self.idle.append((time.monotonic(), client))

    def expired_idle(self, now: float) -> list[MailClient]:
        old = [c for t, c in self.idle if now - t > IDLE_CONNECTION_SECONDS]
        self.idle = [(t, c) for t, c in self.idle if now - t <= IDLE_CONNECTION_SECONDS]
        return old
