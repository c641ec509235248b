"""Configuration: the TOML file turned into one frozen, validated settings object.

Every error names the file, the key and what is wrong, for example
``spoolgate.toml: [[domains]][1].route: unknown scheme 'smpt' (expected smtp or lmtp)``.
Unknown keys are errors too, so a typo never silently falls back to a default.
Relative paths are taken relative to the folder of the configuration file.
"""

from __future__ import annotations

import math
import socket
import tomllib
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
    name: str = field(default_factory=socket.gethostname)


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    listen: tuple[Endpoint, ...] = (Endpoint("127.0.0.1", 2525),)
    hostname: str = field(default_factory=socket.getfqdn)
    max_message_size: int = 26_214_400
    max_recipients: int = 100
    max_command_line: int = 512
    max_line_length: int = 1000
    max_sessions: int = 500
    max_sessions_per_ip: int = 20
    idle_timeout: float = 300.0
    max_errors: int = 20
    max_received_headers: int = 50
    workers: int = 1
    tls_cert: Path | None = None
    tls_key: Path | None = None


@dataclass(frozen=True, slots=True)
class StoreSettings:
    url: str = "sqlite:///spoolgate.db"
    group_commit_wait_ms: float = 0.0
    auto_migrate: bool = True


@dataclass(frozen=True, slots=True)
class WebSettings:
    listen: Endpoint = Endpoint("127.0.0.1", 8025)


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "info"
    format: str = "text"
    file: Path | None = None


@dataclass(frozen=True, slots=True)
class DomainSettings:
    name: str
    route: Route
    recipients: frozenset[str] | None = None  # local parts; None accepts any

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


def _domains(file: Path, raw: Any) -> tuple[DomainSettings, ...]:
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
        table.check_unknown()
        domains.append(DomainSettings(name=name, route=route, recipients=recipients))
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
    settings = Settings(
        source=path,
        node=_section(top, "node", lambda t: NodeSettings(t.get("name", str, NodeSettings().name))),
        smtp=_section(top, "smtp", _smtp),
        store=_section(top, "store", _store),
        web=_section(top, "web", lambda t: WebSettings(
            _listen(t, "listen", (WebSettings().listen,))[0])),
        log=_section(top, "log", lambda t: LogSettings(
            level=_choice(t, "level", "info", ("debug", "info", "warning", "error")),
            format=_choice(t, "format", "text", ("text", "json")),
            file=t.path("file"))),
        domains=_domains(path, top.get("domains", list, [])),
    )
    top.check_unknown()
    if not settings.domains:
        raise ConfigError(path, "domains", "no [[domains]] configured: the gateway would accept nothing")
    return settings
