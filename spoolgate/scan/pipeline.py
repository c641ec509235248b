"""Runs every configured scanner on a message at once, within one time budget.

A scanner that overruns the budget or raises is reported as failed (``error``),
never as clean, so the policy can answer ``451 4.7.1`` and the message is not
spooled unscanned. The one exception is the store: a scanner that reads it (the built-in
Bayes classifier) and gets :class:`~spoolgate.store.store.StoreError` has not crashed, the
store has, so the error propagates (the other scanners are cancelled) and intake answers
``452 4.3.1`` as for any store failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from spoolgate.mail.verdict import Findings
from spoolgate.scan.base import Scanner, ScanRequest
from spoolgate.store.store import StoreError

log = logging.getLogger("spoolgate.scan")


class ScanPipeline:
    def __init__(self, scanners: Sequence[Scanner], budget: float = 30.0) -> None:
        self.scanners = tuple(scanners)
        self.budget = budget

    async def scan(self, request: ScanRequest) -> tuple[Findings, ...]:
        """Findings of every scanner, in configuration order, within the budget; raises
        :class:`StoreError` when a scanner could not read the store."""
        tasks = [asyncio.ensure_future(self._one(s, request)) for s in self.scanners]
        try:
            return tuple(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            raise

    async def _one(self, scanner: Scanner, request: ScanRequest) -> Findings:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.budget):
                return await scanner.scan(request, self.budget)
        except TimeoutError:
            error = f"no answer within {self.budget:g}s"
        except StoreError:
            raise  # the store failed, not the scanner: intake answers 452 4.3.1
        except Exception as exc:  # a scanner bug must fail safe: tempfail, not pass
            log.exception("%s: scanner %s crashed", request.queue_id, scanner.name)
            error = f"internal error ({type(exc).__name__})"
        return Findings(scanner.name, error=error, seconds=time.monotonic() - started)
