"""Runs every configured scanner on a message at once, within one time budget.

A scanner that overruns the budget or raises is reported as failed (``error``),
never as clean, so the policy can answer ``451 4.7.1`` and the message is not
spooled unscanned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from spoolgate.mail.verdict import Findings
from spoolgate.scan.base import Scanner, ScanRequest

log = logging.getLogger("spoolgate.scan")


class ScanPipeline:
    def __init__(self, scanners: Sequence[Scanner], budget: float = 30.0) -> None:
        self.scanners = tuple(scanners)
        self.budget = budget

    async def scan(self, request: ScanRequest) -> tuple[Findings, ...]:
        """Findings of every scanner, in configuration order, within the budget."""
        return tuple(await asyncio.gather(*(self._one(s, request) for s in self.scanners)))

    async def _one(self, scanner: Scanner, request: ScanRequest) -> Findings:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.budget):
                return await scanner.scan(request, self.budget)
        except TimeoutError:
            error = f"no answer within {self.budget:g}s"
        except Exception as exc:  # a scanner bug must fail safe: tempfail, not pass
            log.exception("%s: scanner %s crashed", request.queue_id, scanner.name)
            error = f"internal error ({type(exc).__name__})"
        return Findings(scanner.name, error=error, seconds=time.monotonic() - started)
