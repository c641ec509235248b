"""A real clamd in a subprocess on a loopback port, with an offline test signature database.

clamd itself never connects out (only freshclam does, and it is never run here): its only
database is the one-line ``test.ndb`` written below, matching the EICAR test string.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURE = "Spoolgate.Test.EICAR"
# What the test database matches without being the whole EICAR string, which the built-in
# scanner reports as well: a "virus" that only clamd finds.
CLAMD_ONLY = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE"
DETECTED_AS = SIGNATURE + ".UNOFFICIAL"  # clamd appends this to signatures from .ndb files


class Clamd:
    """clamd listening on ``127.0.0.1:port``, its config, database and log under *folder*."""

    def __init__(self, folder: Path, port: int, *, stream_max_length: str = "50M",
                 max_recursion: int | None = None, max_files: int | None = None,
                 alert_exceeds_max: bool = False, start_timeout: float = 60.0) -> None:
        self.folder = folder
        self.port = port
        self.address = f"tcp:127.0.0.1:{port}"
        self.start_timeout = start_timeout
        self.start_seconds = 0.0
        self._options = {"StreamMaxLength": stream_max_length,
                         "MaxRecursion": max_recursion, "MaxFiles": max_files,
                         "AlertExceedsMax": "yes" if alert_exceeds_max else "no"}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.folder / "clamd.log"

    def write_config(self) -> Path:
        """Write the test database and ``clamd.conf``; return the config path."""
        database = self.folder / "db"
        database.mkdir(parents=True, exist_ok=True)
        (database / "test.ndb").write_text(f"{SIGNATURE}:0:*:{CLAMD_ONLY.hex()}\n")
        lines = [f"DatabaseDirectory {database}", f"TCPSocket {self.port}",
                 "TCPAddr 127.0.0.1", "Foreground yes", f"LogFile {self.log}",
                 f"PidFile {self.folder / 'clamd.pid'}", "User root"]
        lines += [f"{key} {value}" for key, value in self._options.items() if value is not None]
        config = self.folder / "clamd.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self) -> None:
        """Start clamd and wait until it answers PING, or fail with its log."""
        config = self.write_config()
        began = time.monotonic()
        self._process = subprocess.Popen(["clamd", "-c", str(config)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = began + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"clamd exited with {self._process.returncode}: {self._log_tail()}")
            if self.ping():
                self.start_seconds = time.monotonic() - began
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"clamd not ready after {self.start_timeout}s: {self._log_tail()}")

    def ping(self) -> bool:
        """True if clamd answers ``zPING`` with ``PONG`` right now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"zPING\0")
                return sock.recv(64).rstrip(b"\0").strip() == b"PONG"
        except OSError:
            return False

    def stop(self) -> None:
        """Terminate clamd and reap it (killed if it has not exited after 10 s)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> Clamd:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
