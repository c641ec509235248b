"""A real SpamAssassin spamd in a subprocess on a loopback port, its Bayes database under a folder.

spamd runs with ``--local`` (no DNSBL, Razor or Pyzor look-ups, so no DNS at all) and ``-x``
(no per-user config), as ``nobody`` because it refuses root. Everything it would write
outside the Debian rules goes under *folder*: the Bayes database (``bayes_path``), the
helper home directory (``-H``) and its log (``-s FILE``). :meth:`Spamd.learn` runs
``sa-learn`` as ``nobody`` too, on the same database, with ``HOME`` under *folder*;
``/root`` and ``/var/lib/spamassassin`` are never touched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


class Spamd:
    """spamd listening on ``127.0.0.1:port``, state and log under *folder*.

    *config* adds configuration lines (``--cf``) for spamd and sa-learn alike, e.g.
    ``bayes_min_spam_num 1``.
    """

    def __init__(self, folder: Path, port: int, *, config: tuple[str, ...] = (),
                 start_timeout: float = 60.0) -> None:
        self.folder = folder
        self.config = config
        self.port = port
        self.address = f"tcp:127.0.0.1:{port}"
        self.start_timeout = start_timeout
        self.start_seconds = 0.0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.folder / "spamd.log"

    @property
    def bayes_path(self) -> Path:
        """The ``bayes_path`` prefix: files ``bayes_toks``, ``bayes_seen`` beside it."""
        return self.folder / "bayes" / "bayes"

    def config_lines(self) -> list[str]:
        """The ``--cf`` lines spamd and sa-learn share."""
        return [f"bayes_path {self.bayes_path}", "bayes_file_mode 0666", *self.config]

    def prepare(self) -> None:
        """Make the folders, open to ``nobody`` (RECIPES.md: folder permissions)."""
        for path in (self.folder, self.folder / "bayes", self.folder / "home"):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)
        (self.folder / "user_prefs").touch()

    def command(self) -> list[str]:
        return ["spamd", f"--listen=127.0.0.1:{self.port}", "--allowed-ips=127.0.0.1",
                "--local", "-x", f"--pidfile={self.folder / 'spamd.pid'}", "-u", "nobody",
                "--max-children=2", f"--helper-home-dir={self.folder / 'home'}",
                f"--syslog={self.log}", *(f"--cf={line}" for line in self.config_lines())]

    def start(self) -> None:
        """Start spamd and wait until it answers PING, or fail with its log."""
        self.prepare()
        began = time.monotonic()
        self._process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = began + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"spamd exited with {self._process.returncode}: {self._log_tail()}")
            if self.ping():
                self.start_seconds = time.monotonic() - began
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"spamd not ready after {self.start_timeout}s: {self._log_tail()}")

    def ping(self) -> bool:
        """True if spamd answers ``PING`` with ``PONG`` right now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as sock:
                sock.sendall(b"PING SPAMC/1.5\r\n\r\n")
                return sock.recv(64).rstrip().endswith(b" 0 PONG")
        except OSError:
            return False

    def learn(self, path: Path, spam: bool, timeout: float = 1800.0) -> str:
        """Train the Bayes database on a message file or folder; sa-learn's output.

        sa-learn runs as ``nobody`` like spamd (so *path* must be readable by it): as root
        it would create ``/root/.spamassassin`` whatever ``HOME`` says. ``--max-size 0``
        learns messages of any size. Raises ``CalledProcessError`` if sa-learn fails.
        """
        command = ["sa-learn", "--local", f"--dbpath={self.bayes_path}",
                   f"--prefspath={self.folder / 'user_prefs'}", "--max-size=0",
                   *(f"--cf={line}" for line in self.config_lines()),
                   "--spam" if spam else "--ham", str(path)]
        environment = {**os.environ, "HOME": str(self.folder / "home")}
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=True, env=environment, cwd=self.folder,
                              user="nobody", group="nogroup")
        return done.stdout

    def stop(self) -> None:
        """Terminate spamd (it stops its children) and reap it; SIGKILL its group if stuck."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def _log_tail(self) -> str:
        return self.log_text()[-2000:] or "(no log)"

    def __enter__(self) -> Spamd:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
