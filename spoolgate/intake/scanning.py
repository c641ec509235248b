"""Scanning inside the SMTP transaction: findings, the domain's verdict, and its headers.

Runs the scan pipeline on a message before its 250 and applies the policy of its
recipients' domains (the strictest when there are several), with the sender rules kept in
the store on top of the config's lists: a domain's rules join that domain's lists, users'
rules count when every recipient agrees (:func:`~spoolgate.scan.policy.unanimous`). The
rules are cached for :data:`RULES_TTL` seconds and reloaded in a thread while the last
ones keep serving; a store failure keeps the last rules (logged once). Reject and
temporary-failure verdicts become SMTP errors with replies that say nothing about
which scanner or rule decided (that goes to the log and, for stored mail, to the
event log).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Mapping

from spoolgate.mail.envelope import Envelope
from spoolgate.mail.reply import SmtpError
from spoolgate.mail.verdict import Action, Verdict
from spoolgate.mime.parse import ParsedMessage, addresses, parse_message
from spoolgate.ops.metrics import Metrics
from spoolgate.scan.base import Scanner, ScanRequest
from spoolgate.scan.pipeline import ScanPipeline
from spoolgate.scan.policy import ScanPolicy, decide, strictest, unanimous
from spoolgate.store.senders import RuleSet
from spoolgate.store.store import StoreError

log = logging.getLogger("spoolgate.intake")

CONTENT_REJECTED = (550, "5.7.1", "Message rejected by content policy")
SCAN_UNAVAILABLE = (451, "4.7.1", "Message could not be scanned now, try again later")
RULES_TTL = 30.0  # seconds a snapshot of the sender rules serves before it is reloaded


class SenderRuleCache:
    """The store's sender rules, reloaded in a thread once *ttl* seconds old. The first
    call waits for the first load (awaiting, not blocking the loop); later calls get the
    last rules at once while a reload runs."""

    def __init__(self, load: Callable[[], RuleSet], ttl: float = RULES_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._load = load
        self._ttl = ttl
        self._clock = clock
        self._rules = RuleSet()
        self._loaded_at: float | None = None
        self._reloading: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def rules(self) -> RuleSet:
        """The last rules loaded (none before the first load)."""
        return self._rules

    async def current(self) -> RuleSet:
        stale = self._loaded_at is None or self._clock() - self._loaded_at >= self._ttl
        if stale and (self._reloading is None or self._reloading.done()):
            self._reloading = asyncio.get_running_loop().create_task(self._reload())
        if self._loaded_at is None and self._reloading is not None:
            await asyncio.shield(self._reloading)
        return self._rules

    async def _reload(self) -> None:
        try:
            self._rules = await asyncio.to_thread(self._load)
        except StoreError as error:
            if not self._failing:
                log.warning("loading the sender rules failed, the last ones stay in force "
                            "(logged once until it works again): %s", error)
            self._failing = True
        else:
            if self._failing:
                log.info("loading the sender rules works again")
            self._failing = False
        self._loaded_at = self._clock()  # after a failure too: retried after the TTL


class Scanning:
    """The scan pipeline and the policy of each domain."""

    def __init__(self, pipeline: ScanPipeline, policies: Mapping[str, ScanPolicy],
                 senders: Callable[[], RuleSet] | None = None,
                 rules_ttl: float = RULES_TTL) -> None:
        """*senders* loads the store's sender rules (none without it)."""
        self._pipeline = pipeline
        self._policies = dict(policies)
        self._rules = SenderRuleCache(senders, rules_ttl) if senders is not None else None

    @property
    def scanners(self) -> tuple[Scanner, ...]:
        """The scanners every message goes through, in configuration order."""
        return self._pipeline.scanners

    def policy(self, envelope: Envelope) -> ScanPolicy:
        """The strictest policy of the domains of *envelope*'s recipients, each with its
        domain's sender rules (as last loaded) added to its lists."""
        rules = self._rules.rules if self._rules is not None else RuleSet()
        domains = {r.domain for r in envelope.recipients}
        return strictest([_with_domain_rules(self._policies[d], rules, d)
                          for d in sorted(domains) if d in self._policies])

    async def verdict(self, envelope: Envelope, data: bytes, queue_id: str,
                      parsed: ParsedMessage | None = None) -> Verdict:
        """The verdict for one message under the strictest policy of its domains;
        *parsed* is the message's parse when the caller has it already."""
        if parsed is None:
            parsed = await asyncio.to_thread(parse_message, data)  # CPU: off the event loop
        findings = await self._pipeline.scan(ScanRequest(data, envelope, queue_id, parsed))
        senders = (envelope.sender, *(address for _, address in addresses(parsed.from_)[:1]))
        rules = await self._rules.current() if self._rules is not None else RuleSet()
        return decide(with_user_rules(self.policy(envelope), rules, envelope, senders),
                      findings, senders)

    async def judge(self, envelope: Envelope, data: bytes, queue_id: str,
                    metrics: Metrics | None = None,
                    parsed: ParsedMessage | None = None) -> Verdict:
        """The verdict for one message; raises :class:`SmtpError` for reject and tempfail.

        *metrics* counts the verdict, the scan time and, for a refusal, its reason.
        """
        started = time.perf_counter()
        verdict = await self.verdict(envelope, data, queue_id, parsed)
        if metrics is not None:
            metrics.scanned(verdict.action.value, time.perf_counter() - started)
        if verdict.action in (Action.REJECT, Action.TEMPFAIL):
            code = CONTENT_REJECTED if verdict.action == Action.REJECT else SCAN_UNAVAILABLE
            log.warning("%s: %s: %d %s from=<%s> (%s) %s", queue_id, verdict.action.value,
                        code[0], code[1], envelope.sender, verdict.reason, describe(verdict))
            refusal = ScanRefusal(verdict, *code)
            if metrics is not None:
                metrics.rejected(refusal.reason)
            raise refusal
        return verdict


def _with_domain_rules(policy: ScanPolicy, rules: RuleSet, domain: str) -> ScanPolicy:
    allow, block = rules.domain_allow.get(domain), rules.domain_block.get(domain)
    if not allow and not block:
        return policy
    return dataclasses.replace(policy, allow=policy.allow | (allow or frozenset()),
                               block=policy.block | (block or frozenset()))


def with_user_rules(policy: ScanPolicy, rules: RuleSet, envelope: Envelope,
                    senders: tuple[str, ...]) -> ScanPolicy:
    """*policy* with the users' allow and block entries that every recipient of
    *envelope* shares for one of *senders* (a user without a list blocks unanimity)."""
    users = sorted({r.address.lower() for r in envelope.recipients})
    if not users or not (rules.user_allow or rules.user_block):
        return policy
    allow = unanimous(senders, [rules.user_allow.get(u, frozenset()) for u in users])
    block = unanimous(senders, [rules.user_block.get(u, frozenset()) for u in users])
    if not allow and not block:
        return policy
    return dataclasses.replace(policy, allow=policy.allow | allow, block=policy.block | block)


class ScanRefusal(SmtpError):
    """A refusal because of the scan, with the verdict that caused it."""

    def __init__(self, verdict: Verdict, code: int, enhanced: str, text: str) -> None:
        super().__init__(code, enhanced, text)
        self.verdict = verdict

    @property
    def reason(self) -> str:
        """For message tracking: virus, spam, policy (a block list, DMARC) or tempfail."""
        if self.verdict.action == Action.TEMPFAIL:
            return "tempfail"
        if any(f.viruses for f in self.verdict.findings):
            return "virus"
        return "spam" if self.verdict.reason.startswith("spam score") else "policy"


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
