"""Listening sockets and the SMTP service built on them.

With ``[smtp] workers = N`` the primary process and N-1 ingress-only worker
processes each bind the listening addresses with ``SO_REUSEPORT``; the kernel
spreads connections across them, and each has its own group committer (SQLite
writers serialise through the store's lock file; PostgreSQL takes them all).
Session limits count per process.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass

from spoolgate.config import Endpoint, Settings
from spoolgate.ingress.limits import ConnectionLimiter
from spoolgate.ingress.recipients import RecipientPolicy
from spoolgate.ingress.session import Intake, SessionSettings, SmtpSession
from spoolgate.ingress.tls import server_context
from spoolgate.ops.metrics import Metrics

log = logging.getLogger("spoolgate.smtp")


def session_settings(settings: Settings) -> SessionSettings:
    smtp = settings.smtp
    tls = server_context(smtp.tls_cert, smtp.tls_key) if smtp.tls_cert and smtp.tls_key else None
    return SessionSettings(hostname=smtp.hostname, max_message_size=smtp.max_message_size,
                           max_recipients=smtp.max_recipients,
                           max_command_line=smtp.max_command_line,
                           max_line_length=smtp.max_line_length, idle_timeout=smtp.idle_timeout,
                           max_errors=smtp.max_errors, tls_context=tls)


def recipient_policy(settings: Settings) -> RecipientPolicy:
    return RecipientPolicy({domain.name: domain.recipients for domain in settings.domains})


def bind(endpoint: Endpoint, reuse_port: bool) -> socket.socket:
    """A listening TCP socket on *endpoint*."""
    family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        # "[::]:25" beside "0.0.0.0:25" must not collide: each socket gets its own family.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((endpoint.host, endpoint.port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


@dataclass
class SmtpService:
    """The SMTP listeners of one process."""

    servers: list[asyncio.Server]
    limiter: ConnectionLimiter

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            await server.wait_closed()


async def start_smtp(settings: Settings, intake: Intake,
                     metrics: Metrics | None = None) -> SmtpService:
    """Start listening on every ``[smtp] listen`` address of *settings*; the sessions count
    themselves and their replies in *metrics*."""
    metrics = metrics if metrics is not None else Metrics()
    loop = asyncio.get_running_loop()
    session = session_settings(settings)
    policy = recipient_policy(settings)
    limiter = ConnectionLimiter(settings.smtp.max_sessions, settings.smtp.max_sessions_per_ip)
    reuse_port = settings.smtp.workers > 1
    servers = []
    for endpoint in settings.smtp.listen:
        sock = bind(endpoint, reuse_port)
        servers.append(await loop.create_server(
            lambda: SmtpSession(session, policy, intake, limiter, loop, metrics), sock=sock))
        log.info("listening smtp=%s", endpoint)
    return SmtpService(servers, limiter)
