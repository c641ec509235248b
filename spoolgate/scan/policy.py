"""The policy: one domain's rules turning every scanner's findings into one verdict.

Scanners only report; this module decides (DESIGN.md). Order of precedence: a
scanner that failed (``error``) → temporary failure unless that scanner is marked
"accept and rescan"; a virus → reject (or quarantine); something that could not
be fully scanned → quarantine (or temporary failure), never pass; then the summed
score against the ``reject``, ``quarantine`` and ``tag`` thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from spoolgate.mail.verdict import Action, Findings, Verdict


@dataclass(frozen=True, slots=True)
class ScanPolicy:
    """Thresholds and actions of one domain (defaults follow SpamAssassin's scale)."""

    tag_score: float = 5.0
    quarantine_score: float = 10.0
    reject_score: float = 15.0
    virus_action: Action = Action.REJECT          # or QUARANTINE
    unscannable_action: Action = Action.QUARANTINE  # or TEMPFAIL
    rescan_on_error: frozenset[str] = frozenset()   # scanners whose failure lets mail through


def decide(policy: ScanPolicy, findings: Sequence[Findings]) -> Verdict:
    """The verdict for one message, with a reason fit for the log (not for the sender)."""
    found = tuple(findings)
    score = round(sum(f.score for f in found if f.error is None), 3)
    failed = [f for f in found if f.error is not None and f.scanner not in policy.rescan_on_error]
    if failed:
        names = ", ".join(f"{f.scanner}: {f.error}" for f in failed)
        return Verdict(Action.TEMPFAIL, score, f"scanner failed ({names})", found)
    viruses = [v for f in found for v in f.viruses]
    if viruses:
        return Verdict(policy.virus_action, score, "virus " + ", ".join(viruses), found)
    unscannable = [f for f in found if f.unscannable]
    if unscannable:
        names = ", ".join(f"{f.scanner}: {f.unscannable}" for f in unscannable)
        return Verdict(policy.unscannable_action, score, f"not fully scanned ({names})", found)
    for threshold, action in ((policy.reject_score, Action.REJECT),
                              (policy.quarantine_score, Action.QUARANTINE),
                              (policy.tag_score, Action.TAG)):
        if score >= threshold:
            return Verdict(action, score, f"spam score {score:g} >= {threshold:g}", found)
    return Verdict(Action.PASS, score, f"score {score:g}", found)


def strictest(policies: Sequence[ScanPolicy]) -> ScanPolicy:
    """One policy for a message to several domains: the strictest of theirs, so that
    listing a lenient domain first cannot carry spam past a strict one."""
    if not policies:
        return ScanPolicy()
    severity = {Action.TEMPFAIL: 2, Action.REJECT: 2, Action.QUARANTINE: 1}
    return ScanPolicy(
        tag_score=min(p.tag_score for p in policies),
        quarantine_score=min(p.quarantine_score for p in policies),
        reject_score=min(p.reject_score for p in policies),
        virus_action=max((p.virus_action for p in policies), key=severity.__getitem__),
        unscannable_action=max((p.unscannable_action for p in policies),
                               key=severity.__getitem__),
        rescan_on_error=frozenset.intersection(*(p.rescan_on_error for p in policies)))
