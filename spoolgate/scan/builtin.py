"""The built-in scanner, which needs no daemon (the embedded default).

So far it knows GTUBE, the standard test string that every spam filter must score
as spam. Header and structure heuristics, SPF/DKIM/DMARC, the Bayes classifier
and attachment rules join it as issue 4 goes on; they will read the message
through :mod:`spoolgate.mime` so that every component sees the same parse.
"""

from __future__ import annotations

import time

from spoolgate.mail.verdict import Findings, Symbol
from spoolgate.scan.base import ScanRequest

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_SCORE = 1000.0  # as SpamAssassin: decisive whatever the thresholds


class BuiltinScanner:
    name = "builtin"

    async def scan(self, request: ScanRequest, budget: float) -> Findings:
        started = time.monotonic()
        symbols = []
        if GTUBE in request.data:
            symbols.append(Symbol("GTUBE", GTUBE_SCORE, "Generic Test for Unsolicited Bulk Email"))
        return Findings(self.name, score=sum(s.score for s in symbols), symbols=tuple(symbols),
                        seconds=time.monotonic() - started)
