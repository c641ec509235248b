"""What an operator does to queued and quarantined mail from the console.

Owns the verbs (flush, hold, release, delete, bounce, release from quarantine, allow or
block the sender) applied to one message within the operator's scope, and the audit entry
each one leaves. The same queue functions as the CLI's do the work; a sender rule goes to
the store's sender rules, per domain. A domain admin acts on their domains' recipient
rows only; bounce, which answers the sender for every waiting recipient at once, and the
quarantine release, which rescans the whole message, need every waiting recipient of the
message in scope.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from spoolgate.admin.access import Operator
from spoolgate.config import Settings
from spoolgate.delivery.control import bounce
from spoolgate.intake.release import ReleaseOutcome, release_quarantined
from spoolgate.intake.scanning import Scanning
from spoolgate.store.audit import AuditLog
from spoolgate.store.queue import WAITING, Queue
from spoolgate.store.senders import SenderRules

VERBS = {
    "flush": "Deliver now",
    "hold": "Hold",
    "release": "Release from hold",
    "delete": "Delete",
    "bounce": "Bounce to sender",
    "release-quarantine": "Release from quarantine",
    "allow-sender": "Always allow sender",
    "block-sender": "Block sender",
}
SENDER_VERBS = ("allow-sender", "block-sender")  # see list_sender
# Rescans a quarantined message and releases it; returns (rows released, what happened).
Releaser = Callable[[str, Operator], Awaitable[tuple[int, str]]]


@dataclass(frozen=True, slots=True)
class ActionResult:
    queue_id: str
    verb: str
    count: int          # recipient rows changed
    note: str = ""      # why nothing changed, or what the rescan said


class OutOfScope(Exception):
    """The message has a waiting recipient outside the operator's domains."""


def act(settings: Settings, queue: Queue, who: Operator, verb: str, queue_id: str,
        now: float | None = None) -> ActionResult:
    """Apply *verb* (not the quarantine release: see :func:`release`) to *queue_id*."""
    if verb not in VERBS or verb == "release-quarantine" or verb in SENDER_VERBS:
        raise ValueError(f"unknown verb {verb!r}")
    detail = f"by {who.email} (console)"
    domains: list[str | None] = [None] if who.scope is None else sorted(who.scope)
    if verb == "bounce":
        _require_whole_message(queue, who, queue_id)
        count = bounce(settings, queue, queue_id)
    elif verb == "delete":
        retention = settings.delivery.failed_retention_days * 86400
        count = sum(queue.delete(queue_id, retention, domain=d, detail=detail) for d in domains)
    elif verb == "flush":
        count = sum(queue.flush(domain=d, queue_id=queue_id) for d in domains)
    elif verb == "hold":
        count = sum(queue.hold(domain=d, queue_id=queue_id, detail=detail) for d in domains)
    else:
        count = sum(queue.release(domain=d, queue_id=queue_id, detail=detail) for d in domains)
    record(queue, who, f"queue.{verb}", queue_id, f"{count} recipient(s)", now)
    return ActionResult(queue_id, verb, count, "" if count else "nothing to do in that state")


def list_sender(queue: Queue, who: Operator, verb: str, queue_id: str,
                now: float | None = None) -> ActionResult:
    """Allow or block (*verb* "allow-sender" / "block-sender") the message's sender in each
    of its recipients' domains the operator administers (an admin: all of them); one
    audit entry per rule. Returns the number of domain rules written."""
    if verb not in SENDER_VERBS:
        raise ValueError(f"unknown verb {verb!r}")
    detail = queue.store.show(queue_id)
    if detail is None:
        return ActionResult(queue_id, verb, 0, "no such message")
    # The envelope sender, not the From: it is what the domain's SPF vouches for and what
    # bounces go to, while a From is free text a spammer writes; a rule on a forged From
    # would also let through whoever copies it (the policy still matches both, as the
    # config's lists do, and a DMARC fail still overrides an allow).
    sender = detail.entry.sender
    if not sender:
        return ActionResult(queue_id, verb, 0, "a bounce has no sender to list")
    action = "allow" if verb == "allow-sender" else "block"
    domains = sorted({r.address.rpartition("@")[2].lower() for r in detail.entry.recipients
                      if who.sees(r.address.rpartition("@")[2])})
    at = time.time() if now is None else now
    rules = SenderRules(queue.store)
    for domain in domains:
        rule = rules.add("domain", domain, sender, action, who.email, at)
        record(queue, who, f"sender.{action}", rule.sender,
               f"domain {domain} (from message {queue_id})", at)
    return ActionResult(queue_id, verb, len(domains),
                        "" if domains else "no recipient in your domains")


def check_whole_message(queue: Queue, who: Operator, queue_id: str) -> bool:
    """Whether every waiting recipient of *queue_id* is in the operator's scope."""
    try:
        _require_whole_message(queue, who, queue_id)
    except OutOfScope:
        return False
    return True


def _require_whole_message(queue: Queue, who: Operator, queue_id: str) -> None:
    if who.scope is None:
        return
    detail = queue.store.show(queue_id)
    waiting = [r for r in detail.entry.recipients if r.state in WAITING] if detail else []
    if any(not who.sees(r.address.rpartition("@")[2]) for r in waiting):
        raise OutOfScope(queue_id)


def make_releaser(queue: Queue, scanning: Scanning | None) -> Releaser:
    """The console's quarantine release: a rescan (when scanning is configured), then the
    message's quarantined rows go to the queue; a virus found again keeps it there."""

    async def release(queue_id: str, who: Operator) -> tuple[int, str]:
        result = await release_quarantined(queue, queue_id, scanning,
                                           actor=f"{who.email} (console)")
        if result.outcome == ReleaseOutcome.RELEASED:
            return result.released, result.note
        return 0, f"not released ({result.outcome.value}) {result.reason}".strip()
    return release


def record(queue: Queue, who: Operator, action: str, target: str, detail: str = "",
           now: float | None = None) -> None:
    """One audit entry for an operator's action."""
    AuditLog(queue.store).record(time.time() if now is None else now, who.email,
                                 who.client_ip, action, target, detail)
