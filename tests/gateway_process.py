"""A real Spoolgate server in a subprocess, for tests that talk to it over sockets."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"\[(\d+)\] INFO listening smtp=")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(sections: dict[str, dict[str, Any]], domains: Iterable[dict[str, Any]]) -> str:
    """TOML text for *sections* (``{"smtp": {...}}``) and ``[[domains]]`` tables."""
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    for domain in domains:
        lines.append("[[domains]]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in domain.items()]
        lines.append("")
    return "\n".join(lines)


class GatewayProcess:
    """``spoolgate serve`` on a free loopback port, with its own config and log file."""

    def __init__(self, folder: Path, store_url: str, smtp: dict[str, Any] | None = None,
                 domains: list[dict[str, Any]] | None = None, extra: dict[str, dict] | None = None,
                 wrapper: list[str] | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.store_url = store_url
        self.log_path = folder / "spoolgate.log"
        smtp_section = {"listen": f"127.0.0.1:{self.port}", "hostname": "mx.test.example"}
        smtp_section.update(smtp or {})
        self.workers = int(smtp_section.get("workers", 1))
        # Ingress tests look at mail as it was stored: no delivery unless a test asks for it.
        # No SPF/DKIM/DMARC look-ups unless a test asks (with a DNS server on loopback):
        # the system resolver is off this machine. No webmail unless a test asks (on a
        # free port of its own); the same for the metrics listener.
        sections = {"node": {"name": "test"}, "smtp": smtp_section,
                    "store": {"url": store_url}, "log": {"file": str(self.log_path)},
                    "delivery": {"enabled": False}, "scan": {"authentication": False},
                    "web": {"enabled": False}, "metrics": {"enabled": False}}
        for name, values in (extra or {}).items():  # merged key by key into the defaults
            sections[name] = {**sections.get(name, {}), **values}
        self.config = folder / "spoolgate.toml"
        self.config.write_text(render_config(sections, domains or [
            {"name": "example.test", "route": "smtp://127.0.0.1:2526"}]))
        self.wrapper = wrapper or []
        self.proc: subprocess.Popen | None = None
        self._stderr = None

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        """Start the gateway; return once every ingress process listens and one answers 220."""
        log_start = len(self.log)
        self._stderr = (self.folder / "stderr.log").open("ab")
        self.proc = subprocess.Popen(
            [*self.wrapper, sys.executable, "-m", "spoolgate", "serve", "--config", str(self.config)],
            cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=self._stderr)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"spoolgate exited with {self.proc.returncode}: "
                                   + (self.folder / "stderr.log").read_text()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    answered = sock.recv(100).startswith(b"220")
            except OSError:
                answered = False
            # The first 220 may come from the primary before the extra workers listen.
            if answered and len(set(LISTENING.findall(self.log[log_start:]))) >= self.workers:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"spoolgate ({self.workers} process(es)) not all listening on port "
                           f"{self.port} within {timeout}s")

    def stop(self) -> int | None:
        """SIGTERM the process group and wait; return the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            self._close_stderr()

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def kill(self) -> None:
        """SIGKILL every process of the gateway at once, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self._close_stderr()

    @property
    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        """Run ``spoolgate ARGS --config <this config>`` (with *input* on its stdin)."""
        return subprocess.run([sys.executable, "-m", "spoolgate", *args, "--config", str(self.config)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60, input=input)
