"""spoolgate/scan/engines.py: which scanners are anti-virus, and which daemons are silent."""

from __future__ import annotations

import asyncio
import socket

from spoolgate.config import SCANNERS
from spoolgate.scan.builtin import BuiltinScanner
from spoolgate.scan.clamav import ClamavScanner
from spoolgate.scan.engines import ENGINES, described, silent_engines
from spoolgate.scan.rspamd import RspamdScanner
from spoolgate.scan.spamassassin import SpamAssassinScanner


def test_every_scanner_the_configuration_accepts_is_in_the_registry() -> None:
    assert set(ENGINES) == set(SCANNERS)
    assert [name for name, engine in ENGINES.items() if engine.antivirus] == ["clamav"]
    assert described("clamav") == "clamav (clamd)" and described("builtin") == "builtin"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def test_daemons_that_do_not_answer_are_named_and_the_builtin_is_never_pinged() -> None:
    port = _closed_port()
    scanners = [BuiltinScanner(), ClamavScanner(f"tcp:127.0.0.1:{port}"),
                RspamdScanner(f"http://127.0.0.1:{port}"),
                SpamAssassinScanner(f"tcp:127.0.0.1:{port}")]
    silent = asyncio.run(silent_engines(scanners, budget=2.0))
    assert silent == ["clamav", "rspamd", "spamassassin"]


class _Hung:
    name = "clamav"

    async def ping(self, budget: float = 2.0) -> bool:
        await asyncio.sleep(3600)
        return True


class _Broken:
    name = "spamassassin"

    async def ping(self, budget: float = 2.0) -> bool:
        raise RuntimeError("boom")


def test_a_ping_that_hangs_or_raises_counts_as_silent_within_the_budget() -> None:
    async def run() -> tuple[list[str], float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        silent = await silent_engines([_Hung(), _Broken()], budget=0.2)
        return silent, loop.time() - started

    silent, elapsed = asyncio.run(run())
    assert silent == ["clamav", "spamassassin"] and elapsed < 1.0
