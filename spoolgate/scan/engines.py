"""What each scanner named in ``[scan] scanners`` is: an anti-virus engine or not, and the
daemon it needs, with the checks built on that (a configuration with no anti-virus engine;
daemons that do not answer).

Owns one registry, :data:`ENGINES`, keyed by the names the configuration accepts. Only
ClamAV counts as anti-virus: the built-in scanner's EICAR check
(:mod:`spoolgate.scan.signatures`) proves the virus path works but detects no real malware,
and Rspamd and SpamAssassin score spam. ``spoolgate check-config`` and the console's
dashboard show :func:`antivirus_warning`; ``/readyz`` uses :func:`silent_engines`.
A ping that fails for any reason counts as "does not answer"; nothing here raises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from spoolgate.config import ConfigWarning, Settings
from spoolgate.scan.base import Scanner

PING_BUDGET = 2.0  # seconds a daemon has to answer a readiness ping


@dataclass(frozen=True, slots=True)
class Engine:
    """One kind of scanner: whether it finds malware, and the daemon it talks to."""

    antivirus: bool
    daemon: str | None = None  # None: runs inside Spoolgate


ENGINES: dict[str, Engine] = {
    "builtin": Engine(antivirus=False),  # EICAR only: a test of the path, not anti-virus
    "clamav": Engine(antivirus=True, daemon="clamd"),
    "rspamd": Engine(antivirus=False, daemon="rspamd"),
    "spamassassin": Engine(antivirus=False, daemon="spamd"),
}


@runtime_checkable
class Pingable(Protocol):
    """A scanner whose daemon can be asked whether it is there."""

    async def ping(self, budget: float = PING_BUDGET) -> bool:
        """True if the daemon answers within *budget* seconds."""
        ...


def antivirus_warning(settings: Settings,
                      domains: Sequence[str] | None = None) -> ConfigWarning | None:
    """A warning when no anti-virus engine scans the mail of the configured domains
    (*domains* names those a reader may see; all of them when None)."""
    scanners = settings.scan.scanners
    if any(ENGINES[name].antivirus for name in scanners):
        return None
    if domains is None:
        domains = [d.name for d in settings.domains]
    domains = ", ".join(domains) or "the configured domains"
    return ConfigWarning(str(settings.source), "[scan].scanners",
                         f"no anti-virus engine scans the mail of {domains} "
                         f"({_why(scanners)}); add \"clamav\" with clamd running "
                         "(docs/installing.md)")


def _why(scanners: Sequence[str]) -> str:
    if not scanners:
        return "scanning is off"
    if "builtin" in scanners:
        return "the built-in scanner detects only the EICAR test file"
    return "the configured scanners score spam"


async def silent_engines(scanners: Sequence[Scanner],
                         budget: float = PING_BUDGET) -> list[str]:
    """The names of those of *scanners* whose daemon does not answer a ping within
    *budget* seconds; the pings run at once."""
    pinged = [s for s in scanners if isinstance(s, Pingable)]
    answers = await asyncio.gather(*(_answers(s, budget) for s in pinged))
    return [s.name for s, ok in zip(pinged, answers, strict=True) if not ok]


def described(name: str) -> str:
    """``clamav (clamd)``: a scanner's name with the daemon it needs, for operators."""
    engine = ENGINES.get(name)
    return f"{name} ({engine.daemon})" if engine is not None and engine.daemon else name


async def _answers(scanner: Pingable, budget: float) -> bool:
    try:
        async with asyncio.timeout(budget):
            return await scanner.ping(budget)
    except Exception:  # a ping that cannot even be sent is an engine that does not answer
        return False
