"""The built-in scanner, which needs no daemon (the embedded default).

It reads the message through the one parse of :mod:`spoolgate.mime` and adds up:
GTUBE (in the raw bytes or any decoded text part), the header and structure heuristics of
:mod:`spoolgate.scan.heuristics`, the content rules of :mod:`spoolgate.scan.content` (what
spam says, how it hides it, the shapes of its links), the marks of bulk-mailing software
of :mod:`spoolgate.scan.ratware`, the botnet marks of the client that handed the message to
the receiving site (:mod:`spoolgate.scan.origin`), the attachment rules of :mod:`spoolgate.scan.attachments`,
SPF/DKIM/DMARC from :mod:`spoolgate.scan.authentication` (also returned as
authentication results for the ``Authentication-Results`` header), and the Bayes
classifier of :mod:`spoolgate.scan.bayes` with its n-gram model once they have been trained.
It also reports the EICAR anti-virus test file (:mod:`spoolgate.scan.signatures`) in the
raw bytes, any decoded part or an archive member as a virus, ``Eicar-Test-Signature``, as
ClamAV would, so the domain's virus action applies; it detects no real virus.

The work is CPU (parsing, rules, tokens), blocking DNS and store reads, so it runs on a
thread pool and never on the event loop. A parse that a limit cut short is reported as
``unscannable`` (part of the message was not looked at), never as clean, and so is a
structure MIME parsers read differently (:mod:`spoolgate.mime.ambiguity`).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor

from spoolgate.mail.verdict import AuthResult, Findings, Symbol
from spoolgate.mime.ambiguity import unscannable_reason
from spoolgate.mime.parse import Limits, ParsedMessage, parse_message
from spoolgate.scan.attachments import AttachmentRules, inspect_attachments
from spoolgate.scan.authentication import Authenticator, auth_symbols
from spoolgate.scan.base import ScanRequest
from spoolgate.scan.bayes import BayesClassifier
from spoolgate.scan.content import content_symbols
from spoolgate.scan.heuristics import HeuristicsContext, header_symbols
from spoolgate.scan.origin import origin_symbols
from spoolgate.scan.ratware import ratware_symbols
from spoolgate.scan.signatures import message_hits, virus_findings

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_SCORE = 1000.0  # as SpamAssassin: decisive whatever the thresholds


class BuiltinScanner:
    """GTUBE and EICAR, heuristics, attachment rules, email authentication and Bayes, on a
    thread pool."""

    name = "builtin"

    def __init__(self, *, context: HeuristicsContext | None = None,
                 attachments: AttachmentRules | None = None,
                 authenticator: Authenticator | None = None,
                 bayes: BayesClassifier | None = None,
                 executor: Executor | None = None, limits: Limits | None = None) -> None:
        self._context = context or HeuristicsContext()
        self._attachments = attachments or AttachmentRules()
        self._authenticator = authenticator
        self._bayes = bayes
        self._executor = executor
        self._limits = limits or Limits()

    async def scan(self, request: ScanRequest, budget: float) -> Findings:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.scan_now, request)

    def scan_now(self, request: ScanRequest) -> Findings:
        """The findings for *request*, computed on the calling thread."""
        started = time.monotonic()
        parsed = request.parsed or parse_message(request.data, self._limits)
        symbols = [*_gtube(request.data, parsed),
                   *header_symbols(parsed, request.envelope, self._context),
                   *content_symbols(parsed), *ratware_symbols(parsed),
                   *origin_symbols(parsed.headers)]
        unscannable = _truncation(parsed) or unscannable_reason(request.data, self._limits)
        found = inspect_attachments(parsed, self._attachments)
        symbols.extend(found.symbols)
        unscannable = unscannable or found.unscannable
        viruses, virus_symbols = virus_findings(
            [*message_hits(request.data, parsed), *found.test_files])
        symbols.extend(virus_symbols)
        authentication: tuple[AuthResult, ...] = ()
        if self._authenticator is not None:
            authentication = self._authenticator.check(request.data, request.envelope, parsed)
            symbols.extend(auth_symbols(authentication))
        if self._bayes is not None:
            symbols.extend(self._bayes.symbols(parsed, request.data))
        return Findings(self.name, score=round(sum(s.score for s in symbols), 3),
                        symbols=tuple(symbols), viruses=viruses, unscannable=unscannable,
                        authentication=authentication, seconds=time.monotonic() - started)


def _gtube(data: bytes, parsed: ParsedMessage) -> list[Symbol]:
    text = GTUBE.decode("ascii")
    if GTUBE in data or any(text in (p.text or "") for p in parsed.parts):
        return [Symbol("GTUBE", GTUBE_SCORE, "Generic Test for Unsolicited Bulk Email")]
    return []


def _truncation(parsed: ParsedMessage) -> str | None:
    if not parsed.truncated:
        return None
    limits = ",".join(d for d in parsed.defects if d in _LIMIT_DEFECTS) or "parse limits"
    return f"message structure exceeds what is inspected ({limits})"


_LIMIT_DEFECTS = frozenset({"too-deep", "too-many-parts", "too-many-headers", "header-too-long",
                            "payload-truncated"})
