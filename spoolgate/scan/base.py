"""The scanner interface every scanner implements: built-in, ClamAV, Rspamd, SpamAssassin.

A scanner is given the message bytes and its envelope and returns
:class:`~spoolgate.mail.verdict.Findings`. It must not raise for anything the
message contains (malformed MIME is a finding); a scanner that cannot do its
work (daemon down, timeout) returns findings with ``error`` set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from spoolgate.mail.envelope import Envelope
from spoolgate.mail.verdict import Findings
from spoolgate.mime.parse import ParsedMessage


@dataclass(frozen=True, slots=True)
class ScanRequest:
    """One message to scan: the bytes as they will be stored, and who sent it how.

    ``parsed`` is the one parse of ``data`` (:mod:`spoolgate.mime`) made once per message
    for every scanner and the policy; scanners that read MIME use it, never a parse of
    their own.
    """

    data: bytes
    envelope: Envelope
    queue_id: str = ""
    parsed: ParsedMessage | None = None


class Scanner(Protocol):
    """Anything that can scan a message within a time budget."""

    name: str

    async def scan(self, request: ScanRequest, budget: float) -> Findings:
        """Findings for *request*, within *budget* seconds (``error`` set on failure)."""
        ...
