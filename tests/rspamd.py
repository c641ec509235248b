"""A real Rspamd (and the Redis its Bayes classifier uses) in subprocesses on loopback ports.

Rspamd runs on Debian's configuration (``/etc/rspamd/rspamd.conf``) with everything it
writes, and every local override, under *folder*: ``--var`` points ``LOCAL_CONFDIR``,
``DBDIR``, ``RUNDIR`` and ``LOGDIR`` there, so ``/etc/rspamd`` and ``/var/lib/rspamd`` are
never touched. The overrides bind the normal worker and the controller to 127.0.0.1 on the
given ports, turn the proxy off, send every DNS question (RBLs, SPF, and the names of the
remote maps at maps.rspamd.com) to the loopback DNS server given, which answers NXDOMAIN,
so nothing leaves the machine, and leave out ``fuzzy_check`` (RECIPES.md). Bayes statistics
go to a Redis started here on its own free port, with no persistence. ``greylist`` and
``ratelimit`` are off: with Redis present, greylisting would answer a message scanned twice
(as benchmarks do) with ``soft reject`` and score 0 instead of scanning it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from tests.gateway_process import free_port

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


class Redis:
    """redis-server on ``127.0.0.1:port``, in memory only, its log under *folder*."""

    def __init__(self, folder: Path, port: int, start_timeout: float = 20.0) -> None:
        self.folder = folder
        self.port = port
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.folder / "redis.log"

    def start(self) -> None:
        """Start redis-server and wait until it answers PING."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.folder),
             "--logfile", str(self.log), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        _wait(self._process, self.ping, self.start_timeout, "redis-server", self.log)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        process, self._process = self._process, None
        _terminate(process)


class Rspamd:
    """Rspamd's normal worker on ``127.0.0.1:port``, its controller on ``controller_port``.

    *bayes_min_learns* lowers how many spam and ham learns Bayes needs before it scores
    (Debian: 200). :attr:`url` is what :class:`~spoolgate.scan.rspamd.RspamdScanner` takes; :attr:`controller`
    is the ``HOST:PORT`` for ``rspamc -h``; :meth:`learn` trains Bayes through it.
    """

    def __init__(self, folder: Path, port: int, controller_port: int, dns: tuple[str, int],
                 *, bayes_min_learns: int | None = None, start_timeout: float = 90.0) -> None:
        self.folder = folder
        self.bayes_min_learns = bayes_min_learns
        self.port = port
        self.controller_port = controller_port
        self.dns = dns
        self.url = f"http://127.0.0.1:{port}"
        self.controller = f"127.0.0.1:{controller_port}"
        self.start_timeout = start_timeout
        self.start_seconds = 0.0
        self.redis = Redis(folder / "redis", free_port())
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.folder / "log" / "rspamd.log"

    def write_config(self) -> Path:
        """Write the local.d / override.d files under *folder*; return LOCAL_CONFDIR."""
        local = self.folder / "local"
        host, port = self.dns
        redis = f'servers = "127.0.0.1:{self.redis.port}";\n'
        files = {
            "local.d/options.inc": (
                f'dns {{\n  nameserver = ["{host}:{port}"];\n  timeout = 0.2s;\n'
                '  retransmits = 1;\n}\nfilters = "chartable,dkim,regexp";\n'),
            "local.d/logging.inc": 'level = "info";\n',
            "local.d/greylist.conf": "enabled = false;\n",
            "local.d/ratelimit.conf": "enabled = false;\n",
            "local.d/redis.conf": redis,
            "local.d/classifier-bayes.conf": redis + (
                f"min_learns = {self.bayes_min_learns};\n" if self.bayes_min_learns else ""),
            "override.d/worker-normal.inc": f'bind_socket = "127.0.0.1:{self.port}";\n',
            "override.d/worker-controller.inc":
                f'bind_socket = "127.0.0.1:{self.controller_port}";\n',
            "override.d/worker-proxy.inc": "count = 0;\n",
        }
        for name, text in files.items():
            (local / name).parent.mkdir(parents=True, exist_ok=True)
            (local / name).write_text(text)
        for sub in ("db", "run", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        return local

    def command(self) -> list[str]:
        local = self.write_config()
        variables = {"LOCAL_CONFDIR": local, "DBDIR": self.folder / "db",
                     "RUNDIR": self.folder / "run", "LOGDIR": self.folder / "log"}
        return ["rspamd", "-f", "-i", "-u", "root", "-g", "root",
                "-c", "/etc/rspamd/rspamd.conf",
                *(f"--var={name}={value}" for name, value in variables.items())]

    def start(self) -> None:
        """Start Redis and Rspamd; wait until both workers answer ``/ping``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)
        began = time.monotonic()
        self.redis.start()
        self._process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait(self._process, self.ping, self.start_timeout, "rspamd", self.log)
        except RuntimeError:
            self.redis.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def ping(self) -> bool:
        """True if both the normal worker and the controller answer ``/ping`` right now."""
        return all(_http_ping(f"http://127.0.0.1:{port}/ping")
                   for port in (self.port, self.controller_port))

    def learn(self, path: Path, spam: bool, timeout: float = 600.0) -> str:
        """Train Bayes on a message file or a folder of them; rspamc's output.

        ``Learn-Type: bulk`` makes Rspamd learn even messages it already classifies with
        confidence (RECIPES.md). Raises ``CalledProcessError`` if rspamc fails.
        """
        verb = "learn_spam" if spam else "learn_ham"
        done = subprocess.run(
            ["rspamc", "-h", self.controller, "-t", "60", "--header", "Learn-Type: bulk",
             verb, str(path)],
            capture_output=True, text=True, timeout=timeout, check=True)
        return done.stdout

    def stop(self) -> None:
        """Terminate Rspamd (its workers with it) and Redis."""
        process, self._process = self._process, None
        _terminate(process)
        self.redis.stop()

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Rspamd:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


def _http_ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as reply:
            return reply.status == 200
    except OSError:
        return False


def _wait(process: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float, what: str,
          log: Path) -> None:
    """Poll *ready* until it is true, the process exits or *timeout* passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {_tail(log)}")
        if ready():
            return
        time.sleep(0.1)
    _terminate(process)
    raise RuntimeError(f"{what} not ready after {timeout}s: {_tail(log)}")


def _terminate(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process (it was started in its own session), SIGKILL its group if stuck."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"
