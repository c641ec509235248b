"""Scanning inside the SMTP transaction: findings, the domain's verdict, and its headers.

Runs the scan pipeline on a message before its 250 and applies the policy of its
recipients' domains (the strictest when there are several). Reject and
temporary-failure verdicts become SMTP errors with replies that say nothing about
which scanner or rule decided (that goes to the log and, for stored mail, to the
event log).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping

from spoolgate.mail.envelope import Envelope
from spoolgate.mail.reply import SmtpError
from spoolgate.mail.verdict import Action, Verdict
from spoolgate.mime.parse import addresses, parse_message
from spoolgate.scan.base import ScanRequest
from spoolgate.scan.pipeline import ScanPipeline
from spoolgate.scan.policy import ScanPolicy, decide, strictest

log = logging.getLogger("spoolgate.intake")

CONTENT_REJECTED = (550, "5.7.1", "Message rejected by content policy")
SCAN_UNAVAILABLE = (451, "4.7.1", "Message could not be scanned now, try again later")


class Scanning:
    """The scan pipeline and the policy of each domain."""

    def __init__(self, pipeline: ScanPipeline, policies: Mapping[str, ScanPolicy]) -> None:
        self._pipeline = pipeline
        self._policies = dict(policies)

    def policy(self, envelope: Envelope) -> ScanPolicy:
        """The strictest policy of the domains of *envelope*'s recipients."""
        domains = {r.domain for r in envelope.recipients}
        return strictest([self._policies[d] for d in sorted(domains) if d in self._policies])

    async def verdict(self, envelope: Envelope, data: bytes, queue_id: str) -> Verdict:
        """The verdict for one message under the strictest policy of its domains."""
        parsed = await asyncio.to_thread(parse_message, data)  # CPU: off the event loop
        findings = await self._pipeline.scan(ScanRequest(data, envelope, queue_id, parsed))
        senders = (envelope.sender, *(address for _, address in addresses(parsed.from_)[:1]))
        return decide(self.policy(envelope), findings, senders)

    async def judge(self, envelope: Envelope, data: bytes, queue_id: str) -> Verdict:
        """The verdict for one message; raises :class:`SmtpError` for reject and tempfail."""
        verdict = await self.verdict(envelope, data, queue_id)
        if verdict.action in (Action.REJECT, Action.TEMPFAIL):
            code = CONTENT_REJECTED if verdict.action == Action.REJECT else SCAN_UNAVAILABLE
            log.warning("%s: %s: %d %s from=<%s> (%s) %s", queue_id, verdict.action.value,
                        code[0], code[1], envelope.sender, verdict.reason, describe(verdict))
            raise SmtpError(*code)
        return verdict


def describe(verdict: Verdict) -> str:
    """``action=tag score=7 symbols=A(3),B(4) scanners=builtin:0.001s`` for logs and events."""
    symbols = ",".join(f"{s.name}({s.score:g})" for f in verdict.findings for s in f.symbols)
    scanners = ",".join(f"{f.scanner}:{f.seconds:.3f}s" for f in verdict.findings)
    viruses = ",".join(v for f in verdict.findings for v in f.viruses)
    unscannable = ";".join(f"{f.scanner}: {f.unscannable}" for f in verdict.findings
                           if f.unscannable)
    return (f"action={verdict.action.value} score={verdict.score:g} "
            f"symbols={symbols or '-'} viruses={viruses or '-'} scanners={scanners}"
            + (f" unscannable=({unscannable})" if unscannable else ""))


def spam_headers(verdict: Verdict) -> bytes:
    """``X-Spam-Score`` and ``X-Spam-Status`` for a tagged or quarantined message."""
    spam = verdict.action in (Action.TAG, Action.QUARANTINE)
    symbols = ",".join(s.name for f in verdict.findings for s in f.symbols) or "none"
    return (f"X-Spam-Score: {verdict.score:g}\r\n"
            f"X-Spam-Status: {'Yes' if spam else 'No'}, score={verdict.score:g} "
            f"tests={symbols}\r\n").encode("ascii", "replace")


_SUBJECT = re.compile(rb"(?im)^subject[ \t]*:[ \t]*")


def prefix_subject(data: bytes, prefix: str) -> bytes:
    """*data* with *prefix* (printable ASCII) before its Subject, or a Subject added.

    Only the top-level header block is touched; an encoded-word subject stays valid
    because the prefix is followed by a space.
    """
    if not prefix:
        return data
    end = _header_end(data)
    match = _SUBJECT.search(data, 0, end)
    tag = prefix.encode("ascii") + b" "
    if match is None:
        return b"Subject: " + tag.rstrip() + b"\r\n" + data
    if data[match.end():match.end() + len(tag)] == tag:
        return data  # already tagged (a release, a second pass)
    return data[:match.end()] + tag + data[match.end():]


def _header_end(data: bytes) -> int:
    """Where the top-level header block ends (the body's start, or the end of *data*)."""
    if data.startswith((b"\r\n", b"\n")):
        return 0
    found = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
    return min(found) if found else len(data)
