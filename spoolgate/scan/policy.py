"""The policy: one domain's rules turning every scanner's findings into one verdict.

Scanners only report; this module decides (DESIGN.md). Order of precedence: a
scanner that failed (``error``) → temporary failure unless that scanner is marked
"accept and rescan"; a virus → reject (or quarantine); a sender on the domain's block
list → reject; something that could not be fully scanned → quarantine (or temporary
failure), never pass; a DMARC fail under the From domain's ``p=reject`` or
``p=quarantine`` → that (unless our domain turns enforcement off; a score past the reject
threshold still rejects); a sender on its allow list → pass (unless DMARC says the From
is forged); then the summed score against the ``reject``, ``quarantine`` and ``tag``
thresholds.

List entries are ``user@example.org`` (that address), ``example.org`` (that domain and its
subdomains); they are matched against the envelope sender and the From address.

Users' own lists count only when they are unanimous (:func:`unanimous`): a message skips
the thresholds on a user's allow list only when every recipient allows that sender, and is
refused on a user's block list only when every recipient blocks it, so one user's list
never decides for a colleague on the same message.
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
    allow: frozenset[str] = frozenset()   # senders whose mail skips the spam thresholds
    block: frozenset[str] = frozenset()   # senders whose mail is refused
    subject_prefix: str = ""              # prepended to the Subject of tagged mail
    dmarc_enforce: bool = True            # a DMARC fail gets the From domain's p= policy


def listed(address: str, entries: frozenset[str]) -> str | None:
    """The entry of *entries* that *address* matches, if any (see the module docstring)."""
    address = address.strip().lower()
    if not address or not entries:
        return None
    if address in entries:
        return address
    domain = address.rpartition("@")[2]
    labels = domain.split(".")
    for start in range(len(labels) - 1):
        candidate = ".".join(labels[start:])
        if candidate in entries:
            return candidate
    return None


def unanimous(senders: Sequence[str], lists: Sequence[frozenset[str]]) -> frozenset[str]:
    """The entries of *lists* (one per recipient) matching one of *senders* that every
    list matches; empty unless all of them do (and when there are no lists)."""
    if not lists:
        return frozenset()
    for sender in senders:
        matches = [listed(sender, entries) for entries in lists]
        if all(matches):
            return frozenset(m for m in matches if m)
    return frozenset()


def decide(policy: ScanPolicy, findings: Sequence[Findings],
           senders: Sequence[str] = ()) -> Verdict:
    """The verdict for one message, with a reason fit for the log (not for the sender).

    *senders* are the addresses the lists are matched against: the envelope sender and
    the From address.
    """
    found = tuple(findings)
    score = round(sum(f.score for f in found if f.error is None), 3)
    failed = [f for f in found if f.error is not None and f.scanner not in policy.rescan_on_error]
    if failed:
        names = ", ".join(f"{f.scanner}: {f.error}" for f in failed)
        return Verdict(Action.TEMPFAIL, score, f"scanner failed ({names})", found)
    viruses = [v for f in found for v in f.viruses]
    if viruses:
        return Verdict(policy.virus_action, score, "virus " + ", ".join(viruses), found)
    blocked = next(filter(None, (listed(s, policy.block) for s in senders)), None)
    if blocked:
        return Verdict(Action.REJECT, score, f"sender on the block list ({blocked})", found)
    unscannable = [f for f in found if f.unscannable]
    if unscannable:
        names = ", ".join(f"{f.scanner}: {f.unscannable}" for f in unscannable)
        return Verdict(policy.unscannable_action, score, f"not fully scanned ({names})", found)
    enforced = _dmarc_policy(found) if policy.dmarc_enforce else None
    if enforced is not None and not (enforced == Action.QUARANTINE
                                     and score >= policy.reject_score):
        return Verdict(enforced, score, f"DMARC fail, the From domain's policy is "
                                        f"{enforced.value}", found)
    allowed = next(filter(None, (listed(s, policy.allow) for s in senders)), None)
    if allowed and not _dmarc_failed(found):
        return Verdict(Action.PASS, score, f"sender on the allow list ({allowed})", found)
    for threshold, action in ((policy.reject_score, Action.REJECT),
                              (policy.quarantine_score, Action.QUARANTINE),
                              (policy.tag_score, Action.TAG)):
        if score >= threshold:
            return Verdict(action, score, f"spam score {score:g} >= {threshold:g}", found)
    return Verdict(Action.PASS, score, f"score {score:g}", found)


def _dmarc_failed(findings: Sequence[Findings]) -> bool:
    """A forged From (DMARC fail) must not ride on an allow-listed address."""
    return any(a.method == "dmarc" and a.result == "fail"
               for f in findings for a in f.authentication)


def _dmarc_policy(findings: Sequence[Findings]) -> Action | None:
    """REJECT or QUARANTINE when DMARC failed under a domain policy that asks for it."""
    asked = {dict(a.properties).get("policy.dmarc") for f in findings
             for a in f.authentication if a.method == "dmarc" and a.result == "fail"}
    if "reject" in asked:
        return Action.REJECT
    if "quarantine" in asked:
        return Action.QUARANTINE
    return None


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
        rescan_on_error=frozenset.intersection(*(p.rescan_on_error for p in policies)),
        allow=frozenset.intersection(*(p.allow for p in policies)),
        block=frozenset.union(*(p.block for p in policies)),
        subject_prefix=next((p.subject_prefix for p in policies if p.subject_prefix), ""),
        dmarc_enforce=any(p.dmarc_enforce for p in policies))
