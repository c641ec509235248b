"""Configuration: the TOML file turned into one frozen, validated settings object.

Every error names the file, the key and what is wrong, for example
``spoolgate.toml: [[domains]][1].route: unknown scheme 'smpt' (expected smtp or lmtp)``.
Unknown keys are errors too, so a typo never silently falls back to a default.
Relative paths are taken relative to the folder of the configuration file.
"""

from __future__ import annotations

import ipaddress
import math
import socket
import tomllib
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration mistake, located by file and key."""

    def __init__(self, file: Path | str, key: str, problem: str) -> None:
        self.file, self.key, self.problem = str(file), key, problem
        where = f"{self.file}: {key}: " if key else f"{self.file}: "
        super().__init__(where + problem)


@dataclass(frozen=True, slots=True)
class ConfigWarning:
    """A setting that is valid but probably not what the operator wants, located as a
    :class:`ConfigError` is: ``spoolgate.toml: [scan].scanners: ...``."""

    file: str
    key: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.problem}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Route:
    """Where a domain's mail goes: the company's own server, over SMTP or LMTP."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class NodeSettings:
    # this node in events and logs (several nodes may share a store)
    name: str = field(default_factory=socket.gethostname)


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """The SMTP listener: where it listens, how it names itself, and its limits."""

    enabled: bool = True             # false: a delivery-only node
    # host:port to listen on; IPv6 as [::1]:25
    listen: tuple[Endpoint, ...] = (Endpoint("127.0.0.1", 2525),)
    # the name in the greeting, the EHLO reply and Received: headers
    hostname: str = field(default_factory=socket.getfqdn)
    max_message_size: int = 26_214_400  # bytes; larger mail gets 552 5.3.4
    max_recipients: int = 100        # per message; more get 452 4.5.3
    max_command_line: int = 512      # octets; MAIL and RCPT get 512 more
    max_line_length: int = 1000      # octets per message line, CRLF included
    max_sessions: int = 500          # concurrent sessions per process
    max_sessions_per_ip: int = 20    # concurrent sessions per client IP per process
    idle_timeout: float = 300.0      # a session silent this long is closed
    max_errors: int = 20             # 4xx/5xx replies before the session is closed
    max_received_headers: int = 50   # more is a mail loop: 554 5.4.6
    refusal_log_days: float = 30.0   # in-session refusals kept for message tracking
    workers: int = 1                 # ingress processes sharing the listening sockets
    tls_cert: Path | None = None     # PEM certificate chain: EHLO offers STARTTLS
    tls_key: Path | None = None      # PEM private key of tls_cert


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Where messages and queue state live: SQLite (one node) or PostgreSQL (several)."""

    url: str = "sqlite:///spoolgate.db"  # sqlite:///PATH or postgresql://user@host/db
    group_commit_wait_ms: float = 0.0  # extra wait to gather more messages per commit
    auto_migrate: bool = True  # upgrade an older schema at start


@dataclass(frozen=True, slots=True)
class WebSettings:
    """The emergency webmail (served by ``spoolgate serve`` or apart by ``spoolgate web``)."""

    enabled: bool = True              # serve the webmail from spoolgate serve
    listen: Endpoint = Endpoint("127.0.0.1", 8025)  # the webmail's address
    session_idle: float = 30 * 60     # signed out after this long without a request
    session_max: float = 12 * 3600    # signed out after this long in any case
    secure_cookies: bool = False      # true behind a TLS proxy: cookies only over HTTPS
    timezone: str = "UTC"             # times shown to users
    # addresses of reverse proxies whose X-Forwarded-For / -Proto are believed
    trusted_proxies: tuple[str, ...] = ()
    max_recipients_per_hour: int = 300  # a user's webmail sending, over all their messages


@dataclass(frozen=True, slots=True)
class DigestSettings:
    """The daily quarantine digest, for webmail users who opt in (sent by the primary node)."""

    enabled: bool = True              # send digests to users who asked for one
    hour: int = 8                     # local hour (0-23, [web] timezone) when digests go out
    public_url: str | None = None     # the webmail's external base URL; no digests without it
    link_days: int = 7                # days a digest's one-click links stay valid


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """The monitoring listener (``/metrics``, ``/healthz``, ``/readyz``), apart from the
    webmail's: metrics reveal traffic, so it listens on loopback unless told otherwise."""

    enabled: bool = True  # serve the monitoring endpoints
    # their address, apart from the SMTP and webmail addresses
    listen: Endpoint = Endpoint("127.0.0.1", 9025)


@dataclass(frozen=True, slots=True)
class LogSettings:
    """Log lines: level, text or JSON, and the file (standard error when unset)."""

    level: str = "info"  # the least severe level written
    format: str = "text"  # text (queue ID first) or json (one object per line)
    file: Path | None = None  # None: standard error


TLS_MODES = ("none", "opportunistic", "required")


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """When to try again, when to warn the sender and when to give up (seconds)."""

    min_backoff: float = 300.0         # first retry after a temporary failure; doubles
    max_backoff: float = 3600.0        # ... up to this
    lifetime: float = 5 * 86400.0      # then the message fails with a DSN
    delay_warning: float = 4 * 3600.0  # 0: never send a delay notice

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt after *attempts* failed ones (exponential)."""
        return min(self.max_backoff, self.min_backoff * 2 ** max(0, min(attempts - 1, 30)))


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """The delivery workers of this node and the defaults of every route."""

    enabled: bool = True             # false: this node only receives
    concurrency: int = 50            # transactions in flight on this node, all routes
    route_concurrency: int = 10      # the most connections to one route
    initial_concurrency: int = 2     # start of the ramp when a route comes back
    down_after: int = 3              # consecutive failed connections mark a route down
    down_after_minutes: float = 0.0  # and failing this long, too (0: at once)
    up_after: int = 1                # consecutive successes before it is reported up again
    lease: float = 900.0             # rows claimed by a worker return to the queue after this
    poll_interval: float = 0.25      # how often an idle worker looks for due mail
    connect_timeout: float = 30.0    # TCP connect to a route
    # RFC 5321 section 4.5.3.2: greeting 5 min, MAIL/RCPT 5 min, DATA 2 min, end of data 10 min.
    greeting_timeout: float = 300.0  # wait for the route's greeting
    command_timeout: float = 300.0   # wait for the reply to each command
    data_timeout: float = 600.0      # wait for the reply after the end of data
    retry: RetrySettings = RetrySettings()  # its keys sit in [delivery] itself
    retention_days: float = 30.0     # delivered messages stay readable this long (0: delete)
    failed_retention_days: float = 30.0  # failed and deleted messages stay this long
    purge_interval: float = 60.0     # how often the purge runs


@dataclass(frozen=True, slots=True)
class OutboundSettings:
    """How DSNs (and later webmail mail) leave: a smarthost, or direct MX delivery."""

    route: Route | None = None       # "mx" (None): deliver to the recipient domain's MX
    mx_port: int = 25                # port used for MX hosts (tests point it elsewhere)
    allow_private_mx: bool = False   # deliver to MX hosts on loopback/private addresses
    tls: str = "opportunistic"       # STARTTLS, as for a domain's route
    tls_ca: Path | None = None       # CA file of the smarthost; otherwise the system's
    username: str | None = None      # smarthost authentication, only over TLS
    password: str | None = None      # goes with username


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """Who hears about a route going down or up: admin mailboxes and a JSON webhook."""

    admins: tuple[str, ...] = ()     # sent through the outbound route, never the dead one
    webhook: str | None = None       # http(s) URL: one JSON POST per change, best effort
    webhook_timeout: float = 5.0     # per POST attempt


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """The resolver for every look-up Spoolgate makes (MX, SPF, DKIM, DMARC)."""

    nameservers: tuple[Endpoint, ...] = ()  # empty: the system's resolv.conf
    timeout: float = 10.0                   # per look-up


SCANNERS = ("builtin", "clamav", "rspamd", "spamassassin")


@dataclass(frozen=True, slots=True)
class ScanSettings:
    """Which scanners run on every message before its 250, and for how long at most."""

    scanners: tuple[str, ...] = ("builtin",)  # run on every message, their scores added up
    budget: float = 30.0               # all scanners together; an overrun counts as failed
    clamav: str = "tcp:127.0.0.1:3310"   # clamd address: tcp:HOST:PORT or unix:PATH
    rspamd: str = "http://127.0.0.1:11333"   # Rspamd's normal worker
    spamassassin: str = "tcp:127.0.0.1:783"  # spamd address: tcp:HOST:PORT or unix:PATH
    authentication: bool = True        # SPF, DKIM, DMARC in the built-in scanner
    bayes: bool = True                 # the built-in Bayes classifier and n-gram model (once trained)
    blocked_extensions: tuple[str, ...] | None = None  # None: the built-in list
    max_archive_depth: int = 3         # archives nested deeper are unscannable
    rescan_on_error: tuple[str, ...] = ()  # scanners whose failure lets mail through
    rescan_hold_minutes: float = 30.0  # how long that mail is held for a rescan (0: no hold)
    rescan_interval: float = 30.0      # seconds between rescans of the held mail
    quarantine_days: float = 30.0          # then quarantined mail is deleted


@dataclass(frozen=True, slots=True)
class SpamPolicySettings:
    """One domain's thresholds and actions (see spoolgate.scan.policy)."""

    tag: float = 5.0                 # score at which mail is tagged
    quarantine: float = 10.0         # ... quarantined (stored, not delivered)
    reject: float = 15.0             # ... refused with 550 5.7.1
    virus: str = "reject"            # a virus: reject or quarantine
    unscannable: str = "quarantine"  # not fully scanned: quarantine or tempfail
    allow_senders: frozenset[str] = frozenset()  # addresses or domains that skip the thresholds
    block_senders: frozenset[str] = frozenset()  # addresses or domains refused with 550
    subject_prefix: str = ""         # e.g. "[SPAM]" before the Subject of tagged mail
    dmarc_enforce: bool = True       # DMARC fail + p=reject/quarantine: do what it asks
    user_release: str = "spam"       # what users may release from quarantine: spam, none, all


@dataclass(frozen=True, slots=True)
class ImapSettings:
    """The company's IMAP server that proves webmail passwords for a domain. ``tls`` is
    "implicit" (imaps://), "starttls" (imap://, required) or "none" (loopback only)."""

    host: str                          # from the domain's imap URL
    port: int                          # from the domain's imap URL
    tls: str = "implicit"              # "none": imap:// without TLS, loopback only (tests)
    tls_ca: Path | None = None         # a private CA; otherwise the system's

    def __str__(self) -> str:
        scheme = "imaps" if self.tls == "implicit" else "imap"
        return f"{scheme}://{Endpoint(self.host, self.port)}"


@dataclass(frozen=True, slots=True)
class DomainSettings:
    """One company domain: where its mail goes, who may receive it, its policy."""

    name: str                                 # the domain; subdomains are separate entries
    route: Route                              # the company's server for this domain
    recipients: frozenset[str] | None = None  # local parts; None accepts any
    tls: str = "opportunistic"         # STARTTLS to the route: required verifies the certificate
    tls_ca: Path | None = None                # CA file of the route's certificate
    retry: RetrySettings = RetrySettings()    # its keys sit in the domain's table
    retention_days: float = 30.0              # delivered mail stays readable this long
    spam: SpamPolicySettings = SpamPolicySettings()  # its keys sit in the domain's table
    imap: ImapSettings | None = None   # webmail passwords are checked there first

    def accepts_local_part(self, local: str) -> bool:
        return self.recipients is None or local.lower() in self.recipients


@dataclass(frozen=True, slots=True)
class Settings:
    source: Path
    node: NodeSettings
    smtp: SmtpSettings
    store: StoreSettings
    web: WebSettings
    log: LogSettings
    domains: tuple[DomainSettings, ...]
    delivery: DeliverySettings = DeliverySettings()
    outbound: OutboundSettings = OutboundSettings()
    dns: DnsSettings = DnsSettings()
    alerts: AlertSettings = AlertSettings()
    scan: ScanSettings = ScanSettings()
    metrics: MetricsSettings = MetricsSettings()
    digest: DigestSettings = DigestSettings()

    def domain(self, name: str) -> DomainSettings | None:
        name = name.lower()
        for domain in self.domains:
            if domain.name == name:
                return domain
        return None


class _Table:
    """Typed, located access to one TOML table; remembers which keys were read."""

    def __init__(self, file: Path, prefix: str, data: Any) -> None:
        self.file, self.prefix = file, prefix
        if not isinstance(data, dict):
            raise ConfigError(file, prefix, f"expected a table, got {_kind(data)}")
        self.data = data
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), problem)

    def get(self, name: str, kind: type[T] | tuple[type, ...], default: Any) -> Any:
        self.seen.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(name, f"expected {_names(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise self.error(name, f"expected {_names(kinds)}, got {_kind(value)}")
        return value

    def number(self, name: str, default: float, minimum: float, integer: bool = True) -> Any:
        kinds: tuple[type, ...] = (int,) if integer else (int, float)
        value = self.get(name, kinds, default)
        if not math.isfinite(value):  # TOML has nan and inf
            raise self.error(name, f"must be a finite number, got {value}")
        if value < minimum:
            raise self.error(name, f"must be at least {minimum}, got {value}")
        return value

    def path(self, name: str) -> Path | None:
        value = self.get(name, str, None)
        if value is None:
            return None
        path = Path(value)
        return path if path.is_absolute() else (self.file.parent / path)

    def check_unknown(self) -> None:
        for name in self.data:
            if name not in self.seen:
                raise self.error(name, "unknown key")


def _kind(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", int: "an integer",
            float: "a number", bool: "a boolean"}.get(type(value), type(value).__name__)


def _names(kinds: tuple[type, ...]) -> str:
    words = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             list: "an array", dict: "a table"}
    return " or ".join(words.get(k, k.__name__) for k in kinds)


def parse_endpoint(text: str, default_port: int | None = None) -> Endpoint:
    """Parse ``host:port`` or ``[v6addr]:port``; raises ValueError with the reason."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"missing ']' in {text!r}")
        port_text = rest[1:] if rest.startswith(":") else rest
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after ']'")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, ""
        elif ":" in host:
            raise ValueError(f"write an IPv6 address in brackets: [{host}]:{port_text}")
    if not host:
        raise ValueError(f"no host in {text!r}")
    if not port_text:
        if default_port is None:
            raise ValueError(f"no port in {text!r} (expected host:port)")
        return Endpoint(host, default_port)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r} (expected 1-65535)")
    return Endpoint(host, int(port_text))


_ROUTE_PORTS = {"smtp": 25, "lmtp": 24}


def parse_route(text: str) -> Route:
    """Parse ``smtp://host[:port]`` or ``lmtp://host[:port]``; raises ValueError."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ValueError(f"expected smtp://host:port or lmtp://host:port, got {text!r}")
    if scheme not in _ROUTE_PORTS:
        raise ValueError(f"unknown scheme {scheme!r} (expected smtp or lmtp)")
    if "/" in rest or "@" in rest:
        raise ValueError(f"a route is scheme://host:port, nothing more: {text!r}")
    endpoint = parse_endpoint(rest, _ROUTE_PORTS[scheme])
    return Route(scheme, endpoint.host, endpoint.port)


def _listen(table: _Table, name: str, default: tuple[Endpoint, ...]) -> tuple[Endpoint, ...]:
    value = table.get(name, (str, list), None)
    if value is None:
        return default
    items = [value] if isinstance(value, str) else value
    if not items:
        raise table.error(name, "needs at least one host:port")
    endpoints = []
    for index, item in enumerate(items, 1):
        where = name if isinstance(value, str) else f"{name}[{index}]"
        if not isinstance(item, str):
            raise table.error(where, f"expected a string host:port, got {_kind(item)}")
        try:
            endpoints.append(parse_endpoint(item))
        except ValueError as error:
            raise table.error(where, str(error)) from None
    return tuple(endpoints)


def _choice(table: _Table, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = table.get(name, str, default)
    if value not in choices:
        raise table.error(name, f"unknown value {value!r} (expected {' or '.join(choices)})")
    return value


def _smtp(table: _Table) -> SmtpSettings:
    d = SmtpSettings()
    smtp = SmtpSettings(
        enabled=table.get("enabled", bool, d.enabled),
        listen=_listen(table, "listen", d.listen),
        hostname=table.get("hostname", str, d.hostname),
        max_message_size=table.number("max_message_size", d.max_message_size, 1024),
        max_recipients=table.number("max_recipients", d.max_recipients, 1),
        max_command_line=table.number("max_command_line", d.max_command_line, 512),
        max_line_length=table.number("max_line_length", d.max_line_length, 1000),
        max_sessions=table.number("max_sessions", d.max_sessions, 1),
        max_sessions_per_ip=table.number("max_sessions_per_ip", d.max_sessions_per_ip, 1),
        idle_timeout=float(table.number("idle_timeout", d.idle_timeout, 1, integer=False)),
        max_errors=table.number("max_errors", d.max_errors, 1),
        max_received_headers=table.number("max_received_headers", d.max_received_headers, 1),
        refusal_log_days=float(table.number("refusal_log_days", d.refusal_log_days, 0,
                                            integer=False)),
        workers=table.number("workers", d.workers, 1),
        tls_cert=table.path("tls_cert"),
        tls_key=table.path("tls_key"),
    )
    if not smtp.hostname or any(c.isspace() for c in smtp.hostname):
        raise table.error("hostname", f"not a host name: {smtp.hostname!r}")
    if (smtp.tls_cert is None) != (smtp.tls_key is None):
        missing = "tls_key" if smtp.tls_key is None else "tls_cert"
        raise table.error(missing, "tls_cert and tls_key go together; this one is missing")
    for name in ("tls_cert", "tls_key"):
        path = getattr(smtp, name)
        if path is not None and not path.is_file():
            raise table.error(name, f"no such file: {path}")
    return smtp


def _store(table: _Table) -> StoreSettings:
    d = StoreSettings()
    url = table.get("url", str, d.url)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_absolute():
            url = "sqlite:///" + str(table.file.parent / path)
        if not Path(url.removeprefix("sqlite:///")).parent.is_dir():
            raise table.error("url", f"folder does not exist: {Path(url[10:]).parent}")
    elif not url.startswith(("postgresql://", "postgresql+psycopg://")):
        raise table.error("url", f"unsupported store {url.split(':', 1)[0]!r} "
                                 "(expected sqlite:///PATH or postgresql://...)")
    return StoreSettings(
        url=url,
        group_commit_wait_ms=float(table.number("group_commit_wait_ms", d.group_commit_wait_ms,
                                                0, integer=False)),
        auto_migrate=table.get("auto_migrate", bool, d.auto_migrate),
    )


def _seconds(table: _Table, name: str, default: float, minimum: float = 0) -> float:
    return float(table.number(name, default, minimum, integer=False))


def _retry(table: _Table, base: RetrySettings) -> RetrySettings:
    retry = RetrySettings(
        min_backoff=_seconds(table, "min_backoff", base.min_backoff, 0.01),
        max_backoff=_seconds(table, "max_backoff", base.max_backoff, 0.01),
        lifetime=_seconds(table, "lifetime", base.lifetime, 0),
        delay_warning=_seconds(table, "delay_warning", base.delay_warning, 0),
    )
    if retry.max_backoff < retry.min_backoff:
        raise table.error("max_backoff", f"must be at least min_backoff ({retry.min_backoff:g}), "
                                         f"got {retry.max_backoff:g}")
    return retry


def _delivery(table: _Table) -> DeliverySettings:
    d = DeliverySettings()
    delivery = DeliverySettings(
        enabled=table.get("enabled", bool, d.enabled),
        concurrency=table.number("concurrency", d.concurrency, 1),
        route_concurrency=table.number("route_concurrency", d.route_concurrency, 1),
        initial_concurrency=table.number("initial_concurrency", d.initial_concurrency, 1),
        down_after=table.number("down_after", d.down_after, 1),
        down_after_minutes=_seconds(table, "down_after_minutes", d.down_after_minutes, 0),
        up_after=table.number("up_after", d.up_after, 1),
        lease=_seconds(table, "lease", d.lease, 1),
        poll_interval=_seconds(table, "poll_interval", d.poll_interval, 0.01),
        connect_timeout=_seconds(table, "connect_timeout", d.connect_timeout, 0.1),
        greeting_timeout=_seconds(table, "greeting_timeout", d.greeting_timeout, 0.1),
        command_timeout=_seconds(table, "command_timeout", d.command_timeout, 0.1),
        data_timeout=_seconds(table, "data_timeout", d.data_timeout, 0.1),
        retry=_retry(table, d.retry),
        retention_days=_seconds(table, "retention_days", d.retention_days, 0),
        failed_retention_days=_seconds(table, "failed_retention_days", d.failed_retention_days, 0),
        purge_interval=_seconds(table, "purge_interval", d.purge_interval, 0.1),
    )
    if delivery.initial_concurrency > delivery.route_concurrency:
        raise table.error("initial_concurrency", "must not exceed route_concurrency "
                          f"({delivery.route_concurrency})")
    return delivery


def _tls(table: _Table, default: str) -> tuple[str, Path | None]:
    mode = _choice(table, "tls", default, TLS_MODES)
    ca = table.path("tls_ca")
    if ca is not None and not ca.is_file():
        raise table.error("tls_ca", f"no such file: {ca}")
    return mode, ca


def _web(table: _Table) -> WebSettings:
    d = WebSettings()
    web = WebSettings(
        enabled=table.get("enabled", bool, d.enabled),
        listen=_listen(table, "listen", (d.listen,))[0],
        session_idle=_seconds(table, "session_idle", d.session_idle, 60),
        session_max=_seconds(table, "session_max", d.session_max, 60),
        secure_cookies=table.get("secure_cookies", bool, d.secure_cookies),
        timezone=table.get("timezone", str, d.timezone),
        trusted_proxies=_addresses(table, "trusted_proxies"),
        max_recipients_per_hour=table.number("max_recipients_per_hour",
                                             d.max_recipients_per_hour, 1))
    try:
        zoneinfo.ZoneInfo(web.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise table.error("timezone", f"unknown time zone {web.timezone!r} "
                                      "(e.g. \"Europe/Paris\" or \"UTC\")") from None
    if web.session_max < web.session_idle:
        raise table.error("session_max", f"must be at least session_idle ({web.session_idle:g})")
    return web


def _addresses(table: _Table, name: str) -> tuple[str, ...]:
    """A list of IP addresses or networks (``"10.0.0.0/8"``)."""
    values = table.get(name, list, [])
    for index, value in enumerate(values, 1):
        try:
            ipaddress.ip_network(value)
        except (TypeError, ValueError):
            raise table.error(f"{name}[{index}]", f"expected an IP address or network, "
                                                  f"got {value!r}") from None
    return tuple(values)


def _digest(table: _Table) -> DigestSettings:
    d = DigestSettings()
    hour = table.number("hour", d.hour, 0)
    if hour > 23:
        raise table.error("hour", f"must be an hour of the day, 0 to 23, got {hour}")
    url = table.get("public_url", str, None)
    if url is not None:
        scheme, _, rest = url.partition("://")
        host = rest.split("/", 1)[0]
        if scheme not in ("http", "https") or not host or any(
                c.isspace() or c in "\"<>" for c in url):
            raise table.error("public_url", "expected the webmail's address as users reach "
                                            f"it, like \"https://mail-gw.example.com\", got "
                                            f"{url!r}")
        url = url.rstrip("/")
    return DigestSettings(enabled=table.get("enabled", bool, d.enabled), hour=hour,
                          public_url=url, link_days=table.number("link_days", d.link_days, 1))


def _metrics(table: _Table) -> MetricsSettings:
    d = MetricsSettings()
    return MetricsSettings(enabled=table.get("enabled", bool, d.enabled),
                           listen=_listen(table, "listen", (d.listen,))[0])


def _outbound(table: _Table) -> OutboundSettings:
    d = OutboundSettings()
    text = table.get("route", str, "mx")
    route = None
    if text != "mx":
        try:
            route = parse_route(text)
        except ValueError as error:
            raise table.error("route", f"{error} (or \"mx\" for direct delivery)") from None
        if route.scheme != "smtp":
            raise table.error("route", "the outbound route must be smtp:// (or \"mx\")")
    tls, ca = _tls(table, d.tls)
    outbound = OutboundSettings(
        route=route, mx_port=table.number("mx_port", d.mx_port, 1),
        allow_private_mx=table.get("allow_private_mx", bool, d.allow_private_mx),
        tls=tls, tls_ca=ca,
        username=table.get("username", str, None), password=table.get("password", str, None))
    if (outbound.username is None) != (outbound.password is None):
        raise table.error("password" if outbound.password is None else "username",
                          "username and password go together; this one is missing")
    if outbound.username is not None and route is None:
        raise table.error("username", "authentication needs a smarthost route, not \"mx\"")
    return outbound


def _alerts(table: _Table) -> AlertSettings:
    admins = table.get("admins", list, [])
    for index, address in enumerate(admins, 1):
        local, at, domain = address.rpartition("@") if isinstance(address, str) else ("", "", "")
        if not at or not local or "." not in domain or any(
                c.isspace() or c in "<>,;\"" or ord(c) < 32 for c in address):
            raise table.error(f"admins[{index}]", f"expected an address like ops@example.org, "
                                                  f"got {address!r}")
    webhook = table.get("webhook", str, None)
    if webhook is not None:
        scheme, _, rest = webhook.partition("://")
        host = rest.split("/", 1)[0].rpartition("@")[2]
        if scheme not in ("http", "https") or not host or any(c.isspace() for c in webhook):
            raise table.error("webhook", f"expected an http:// or https:// URL, got {webhook!r}")
    return AlertSettings(
        admins=tuple(address.strip() for address in admins), webhook=webhook,
        webhook_timeout=_seconds(table, "webhook_timeout", AlertSettings().webhook_timeout, 0.1))


def _dns(table: _Table) -> DnsSettings:
    servers = table.get("nameservers", list, [])
    endpoints = []
    for index, item in enumerate(servers, 1):
        if not isinstance(item, str):
            raise table.error(f"nameservers[{index}]", f"expected a string, got {_kind(item)}")
        try:
            endpoints.append(parse_endpoint(item, default_port=53))
        except ValueError as error:
            raise table.error(f"nameservers[{index}]", str(error)) from None
    return DnsSettings(tuple(endpoints), _seconds(table, "timeout", DnsSettings().timeout, 0.1))


def _scanner_list(table: _Table, name: str, default: tuple[str, ...],
                  choices: tuple[str, ...]) -> tuple[str, ...]:
    values = table.get(name, list, list(default))
    for index, value in enumerate(values, 1):
        if value not in choices:
            raise table.error(f"{name}[{index}]", f"unknown scanner {value!r} (expected "
                                                  f"{' or '.join(choices)})")
    return tuple(values)


def _scan(table: _Table) -> ScanSettings:
    d = ScanSettings()
    extensions = table.get("blocked_extensions", list, None)
    if extensions is not None:
        for index, value in enumerate(extensions, 1):
            if not isinstance(value, str) or not value.strip(". ") or "/" in value:
                raise table.error(f"blocked_extensions[{index}]",
                                  f"expected a file extension such as \".exe\", got {value!r}")
        extensions = tuple("." + v.strip(". ").lower() for v in extensions)
    scan = ScanSettings(
        scanners=_scanner_list(table, "scanners", d.scanners, SCANNERS),
        budget=_seconds(table, "budget", d.budget, 0.1),
        clamav=_daemon_address(table, "clamav", d.clamav),
        rspamd=_http_url(table, "rspamd", d.rspamd),
        spamassassin=_daemon_address(table, "spamassassin", d.spamassassin),
        authentication=table.get("authentication", bool, d.authentication),
        bayes=table.get("bayes", bool, d.bayes),
        blocked_extensions=extensions,
        max_archive_depth=table.number("max_archive_depth", d.max_archive_depth, 1),
        rescan_on_error=_scanner_list(table, "rescan_on_error", d.rescan_on_error, SCANNERS),
        rescan_hold_minutes=_seconds(table, "rescan_hold_minutes", d.rescan_hold_minutes, 0),
        rescan_interval=_seconds(table, "rescan_interval", d.rescan_interval, 0.1),
        quarantine_days=_seconds(table, "quarantine_days", d.quarantine_days, 0))
    return scan


def _daemon_address(table: _Table, name: str, default: str) -> str:
    """``tcp:HOST:PORT`` or ``unix:PATH``, checked here so a typo is not a traceback later."""
    value = table.get(name, str, default)
    kind, _, where = value.partition(":")
    if kind == "tcp":
        try:
            parse_endpoint(where)
        except ValueError as error:
            raise table.error(name, f"tcp:HOST:PORT: {error}") from None
    elif kind != "unix" or not where:
        raise table.error(name, f"expected tcp:HOST:PORT or unix:PATH, got {value!r}")
    return value


def _http_url(table: _Table, name: str, default: str) -> str:
    value = table.get(name, str, default)
    scheme, _, rest = value.partition("://")
    if scheme != "http" or not rest:
        raise table.error(name, f"expected http://HOST:PORT, got {value!r}")
    try:
        parse_endpoint(rest.rstrip("/"), 80)
    except ValueError as error:
        raise table.error(name, f"http://HOST:PORT: {error}") from None
    return value.rstrip("/")


def _spam_policy(table: _Table) -> SpamPolicySettings:
    d = SpamPolicySettings()
    policy = SpamPolicySettings(
        tag=float(table.number("spam_tag", d.tag, -1000, integer=False)),
        quarantine=float(table.number("spam_quarantine", d.quarantine, -1000, integer=False)),
        reject=float(table.number("spam_reject", d.reject, -1000, integer=False)),
        virus=_choice(table, "virus", d.virus, ("reject", "quarantine")),
        unscannable=_choice(table, "unscannable", d.unscannable, ("quarantine", "tempfail")),
        allow_senders=_sender_list(table, "allow_senders"),
        block_senders=_sender_list(table, "block_senders"),
        subject_prefix=table.get("spam_subject_prefix", str, d.subject_prefix).strip(),
        dmarc_enforce=table.get("dmarc_enforce", bool, d.dmarc_enforce),
        user_release=_choice(table, "user_release", d.user_release, ("spam", "none", "all")))
    if not all(" " <= c <= "~" for c in policy.subject_prefix):
        raise table.error("spam_subject_prefix", "must be printable ASCII, e.g. \"[SPAM]\"")
    if not policy.tag <= policy.quarantine <= policy.reject:
        raise table.error("spam_quarantine", "thresholds must rise: spam_tag <= "
                                             "spam_quarantine <= spam_reject")
    return policy


def _sender_list(table: _Table, name: str) -> frozenset[str]:
    """Addresses (``user@example.org``) and domains (``example.org``), lower-cased."""
    entries = table.get(name, list, [])
    for index, entry in enumerate(entries, 1):
        local, at, domain = entry.rpartition("@") if isinstance(entry, str) else ("", "", "")
        if not domain or "." not in domain or " " in entry or (at and not local):
            raise table.error(f"{name}[{index}]",
                              f"expected user@example.org or example.org, got {entry!r}")
    return frozenset(entry.strip().lower() for entry in entries)


def _domain_name(table: _Table) -> str:
    name = table.get("name", str, None)
    if name is None:
        raise table.error("name", "missing (every [[domains]] entry needs a name)")
    name = name.strip().lower().rstrip(".")
    labels = name.split(".")
    if len(labels) < 2 or not all(labels) or any(
            not all(c.isalnum() or c == "-" for c in label) or label.startswith("-")
            for label in labels):
        raise table.error("name", f"not a domain name: {name!r}")
    return name


_IMAP_PORTS = {"imaps": 993, "imap": 143}


def _imap(table: _Table) -> ImapSettings | None:
    """``imap = "imaps://host:993"`` or ``"imap://host:143"`` (STARTTLS unless
    ``imap_tls = "none"``, allowed on loopback only), ``imap_tls_ca = PATH``."""
    text = table.get("imap", str, None)
    mode = _choice(table, "imap_tls", "required", ("required", "none"))
    ca = table.path("imap_tls_ca")
    if text is None:
        for name in ("imap_tls", "imap_tls_ca"):
            if name in table.data:
                raise table.error(name, "needs imap = \"imaps://host:993\" in the same entry")
        return None
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in _IMAP_PORTS or not rest or "/" in rest or "@" in rest:
        raise table.error("imap", f"expected imaps://host:port or imap://host:port, got {text!r}")
    try:
        endpoint = parse_endpoint(rest, _IMAP_PORTS[scheme])
    except ValueError as error:
        raise table.error("imap", str(error)) from None
    if ca is not None and not ca.is_file():
        raise table.error("imap_tls_ca", f"no such file: {ca}")
    tls = "implicit" if scheme == "imaps" else "starttls"
    if mode == "none":
        if scheme == "imaps":
            raise table.error("imap_tls", "\"none\" is only for imap://, not imaps://")
        if not _is_loopback(endpoint.host):
            raise table.error("imap_tls", "\"none\" would send passwords in clear text: "
                                          "allowed only for a loopback address (tests)")
        tls = "none"
    return ImapSettings(endpoint.host, endpoint.port, tls, ca)


def _is_loopback(host: str) -> bool:
    try:
        return socket.inet_pton(socket.AF_INET, host)[0] == 127
    except OSError:
        return host == "::1"


def _domains(file: Path, raw: Any, delivery: DeliverySettings) -> tuple[DomainSettings, ...]:
    if not isinstance(raw, list):
        raise ConfigError(file, "domains", "expected [[domains]] tables")
    domains: list[DomainSettings] = []
    for index, item in enumerate(raw, 1):
        table = _Table(file, f"[[domains]][{index}]", item)
        name = _domain_name(table)
        if any(d.name == name for d in domains):
            raise table.error("name", f"domain {name!r} is configured twice")
        route_text = table.get("route", str, None)
        if route_text is None:
            raise table.error("route", "missing (where should mail for this domain go?)")
        try:
            route = parse_route(route_text)
        except ValueError as error:
            raise table.error("route", str(error)) from None
        recipients = table.get("recipients", list, None)
        if recipients is not None:
            for number, local in enumerate(recipients, 1):
                if not isinstance(local, str) or not local or "@" in local:
                    raise table.error(f"recipients[{number}]",
                                      f"expected a local part without '@', got {local!r}")
            recipients = frozenset(local.lower() for local in recipients)
        tls, ca = _tls(table, "opportunistic")
        retry = _retry(table, delivery.retry)
        retention = _seconds(table, "retention_days", delivery.retention_days, 0)
        spam = _spam_policy(table)
        imap = _imap(table)
        table.check_unknown()
        domains.append(DomainSettings(name=name, route=route, recipients=recipients, tls=tls,
                                      tls_ca=ca, retry=retry, retention_days=retention,
                                      spam=spam, imap=imap))
    return tuple(domains)


def _section(top: _Table, name: str, build: Callable[[_Table], T]) -> T:
    table = _Table(top.file, f"[{name}]", top.get(name, dict, {}))
    value = build(table)
    table.check_unknown()
    return value


def load_settings(path: Path | str) -> Settings:
    """Read and validate *path*; raise :class:`ConfigError` naming the key on any mistake."""
    path = Path(path).resolve()
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(path, "", "no such file") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, "", f"not valid TOML: {error}") from None
    top = _Table(path, "", raw)
    delivery = _section(top, "delivery", _delivery)
    settings = Settings(
        source=path,
        node=_section(top, "node", lambda t: NodeSettings(t.get("name", str, NodeSettings().name))),
        smtp=_section(top, "smtp", _smtp),
        store=_section(top, "store", _store),
        web=_section(top, "web", _web),
        log=_section(top, "log", lambda t: LogSettings(
            level=_choice(t, "level", "info", ("debug", "info", "warning", "error")),
            format=_choice(t, "format", "text", ("text", "json")),
            file=t.path("file"))),
        domains=_domains(path, top.get("domains", list, []), delivery),
        delivery=delivery,
        outbound=_section(top, "outbound", _outbound),
        dns=_section(top, "dns", _dns),
        alerts=_section(top, "alerts", _alerts),
        scan=_section(top, "scan", _scan),
        metrics=_section(top, "metrics", _metrics),
        digest=_section(top, "digest", _digest),
    )
    top.check_unknown()
    if not settings.domains:
        raise ConfigError(path, "domains", "no [[domains]] configured: the gateway would accept nothing")
    metrics = settings.metrics
    if metrics.enabled and (metrics.listen in settings.smtp.listen
                            or (settings.web.enabled and metrics.listen == settings.web.listen)):
        raise ConfigError(path, "[metrics].listen", f"{metrics.listen} is already the SMTP or "
                          "webmail address; the metrics need a listener of their own")
    return settings
