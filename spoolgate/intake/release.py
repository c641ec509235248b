"""Releasing a quarantined message: rescan, check, then let its rows go to delivery.

Owns the one release path the CLI (``spoolgate quarantine release``), the webmail (a user
releasing their own copy) and the admin console share. The scanners may have learned
since the message arrived, so it is scanned again first: a virus still found keeps it in
quarantine (unless an operator forces it), and so does a rescan that could not run. A
user may release only what their domain's ``user_release`` allows, judged from why the
message was quarantined (the ``scanned`` event intake recorded). Every release is one
event per row whose note names who released it and what the rescan said; a refused rescan
is recorded too. Refusals are results, not exceptions; a failing store raises
:class:`~spoolgate.store.store.StoreError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

from spoolgate.intake.scanning import Scanning, describe
from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mail.verdict import Action, Verdict
from spoolgate.store.queue import Queue
from spoolgate.store.store import Event

USER_RELEASE_MODES = ("spam", "none", "all")
"""``[[domains]] user_release``: spam (not a virus), none, all."""


class Cause(StrEnum):
    """Why a message was quarantined, as far as a user's release is concerned."""

    VIRUS = "virus"      # a scanner found malware (the domain quarantines viruses)
    SPAM = "spam"        # the score, DMARC, or part of it could not be scanned
    UNKNOWN = "unknown"  # no scan event recorded: treated as the strictest


class ReleaseOutcome(StrEnum):
    RELEASED = "released"
    NOT_QUARANTINED = "not-quarantined"  # nothing (of those recipients) is in quarantine
    NOT_ALLOWED = "not-allowed"          # the domain's user_release forbids it
    INFECTED = "infected"                # the rescan still finds a virus
    SCAN_FAILED = "scan-failed"          # the rescan could not run: try again later


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    """What :func:`release_quarantined` did: *released* rows, the event *note* it wrote,
    and for a refusal the *reason* (the rescan verdict's, fit for an operator)."""

    outcome: ReleaseOutcome
    released: int = 0
    note: str = ""
    reason: str = ""
    verdict: Verdict | None = None


def quarantine_cause(scan_detail: str | None) -> Cause:
    """The cause from a ``scanned`` event's detail (``action=quarantine ... viruses=X``)."""
    if scan_detail is None:
        return Cause.UNKNOWN
    fields = dict(word.partition("=")[::2] for word in scan_detail.split() if "=" in word)
    viruses = fields.get("viruses", "-")
    return Cause.SPAM if viruses in ("", "-") else Cause.VIRUS


def user_may_release(mode: str, cause: Cause) -> bool:
    """Whether a user of a domain whose ``user_release`` is *mode* may release a message
    quarantined for *cause* (a rescan still has the last word)."""
    if mode == "all":
        return True
    return mode == "spam" and cause is Cause.SPAM


def last_scan_detail(events: Sequence[Event]) -> str | None:
    """The detail of the last ``scanned`` event: why intake decided what it did."""
    scans = [e.detail for e in events if e.kind == "scanned"]
    return scans[-1] if scans else None


async def release_quarantined(queue: Queue, queue_id: str, scanning: Scanning | None, *,
                              actor: str = "operator",
                              addresses: Collection[str] | None = None,
                              user_release: str | None = None,
                              force: bool = False) -> ReleaseResult:
    """Rescan *queue_id* and release its quarantined rows (only those of *addresses* when
    given). *actor* names who asked, in the event note; *user_release* is the user's
    domain policy (None: an operator, no such limit); *force* releases despite a virus or
    a failed rescan (operators only). Without *scanning* the release is not rescanned."""
    store = queue.store
    detail = await asyncio.to_thread(store.show, queue_id)
    wanted = None if addresses is None else {a.lower() for a in addresses}
    waiting = [r for r in detail.entry.recipients if r.state == "quarantined"
               and (wanted is None or r.address.lower() in wanted)] if detail else []
    data = await asyncio.to_thread(store.message_data, queue_id) if waiting else None
    if detail is None or data is None or not waiting:
        return ReleaseResult(ReleaseOutcome.NOT_QUARANTINED)
    if user_release is not None and not user_may_release(
            user_release, quarantine_cause(last_scan_detail(detail.events))):
        return ReleaseResult(ReleaseOutcome.NOT_ALLOWED)
    note = f"released by {actor} without a rescan (scanning is off)"
    verdict = None
    if scanning is not None:
        envelope = Envelope(detail.entry.sender, tuple(Recipient(r.address) for r in waiting),
                            ClientInfo(detail.client_ip, detail.helo, detail.tls))
        verdict = await scanning.verdict(envelope, data, queue_id)
        note = f"released by {actor} after a rescan: {describe(verdict)}"
        refused = _refusal(verdict)
        if refused is not None and not force:
            await asyncio.to_thread(
                queue.note, queue_id, "rescanned",
                f"release asked by {actor} refused ({refused.value}): {describe(verdict)}",
                waiting[0].address if addresses is not None else None)
            return ReleaseResult(refused, note=note, reason=verdict.reason, verdict=verdict)
    count = await asyncio.to_thread(queue.release_quarantine, queue_id, note,
                                    None if wanted is None else sorted(wanted))
    if not count:  # released (or deleted) by someone else meanwhile
        return ReleaseResult(ReleaseOutcome.NOT_QUARANTINED, note=note, verdict=verdict)
    return ReleaseResult(ReleaseOutcome.RELEASED, count, note,
                         verdict.reason if verdict else "", verdict)


def _refusal(verdict: Verdict) -> ReleaseOutcome | None:
    if any(f.viruses for f in verdict.findings):
        return ReleaseOutcome.INFECTED
    if verdict.action == Action.TEMPFAIL:
        return ReleaseOutcome.SCAN_FAILED
    return None
