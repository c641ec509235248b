"""Rescanning mail that was let through while a scanner was failing.

With ``[scan] rescan_on_error``, a scanner that is down or times out does not make intake
answer 451: the message is accepted, marked ``rescan-needed`` and held
(:mod:`spoolgate.intake.pipeline`). This module owns what happens next. Every
``rescan_interval`` seconds the node that delivers scans the held messages again with
every scanner. Once all of them answer, a message goes to delivery, or to quarantine when
the verdict is quarantine, reject or a virus (it was accepted already: refusing it now
would mean a bounce to a sender who may be forged). A message still not fully scanned
after ``rescan_hold_minutes`` is delivered as scanned at receipt, as the administrator
chose mail flow over the failing scanner; its event says so. Each outcome is one
``rescanned`` event per recipient.

A round stops scanning at the first message that still cannot be fully scanned: the
scanner is still down, and a hung one would cost the whole scan budget per message.
Messages whose hold is over are then delivered without another try. Several nodes may
rescan the same message; only one moves its rows. A round that fails (the store, an
unexpected error) is logged and the next round tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from spoolgate.intake.scanning import Scanning, describe
from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mail.states import RecipientState as S
from spoolgate.mail.verdict import Action, Verdict
from spoolgate.store.queue import Queue
from spoolgate.store.store import StoreError

log = logging.getLogger("spoolgate.rescan")
BATCH = 200  # held messages looked at per round, oldest first


@dataclass(frozen=True, slots=True)
class RescanOutcome:
    """What one rescan did: the *state* its held rows went to ("queued", "quarantined"),
    or None while the message keeps waiting (or someone else moved it), and why."""

    queue_id: str
    state: str | None
    detail: str
    failing: str = ""  # the scanners that still failed, if any


class Rescanner:
    """Rescans held ``rescan-needed`` mail until its scanners answer or its hold is over."""

    def __init__(self, queue: Queue, scanning: Scanning, *, hold: float,
                 interval: float) -> None:
        self._queue = queue
        self._scanning = scanning
        self._hold = hold
        self._interval = interval

    async def run(self) -> None:
        """Rescan what is due every *interval* seconds, until cancelled."""
        while True:
            try:
                await self.rescan_due()
            except StoreError as error:  # reading the mail or the Bayes statistics
                log.warning("rescan round: the store failed; trying again in %gs: %s",
                            self._interval, error)
            except Exception:  # a background loop that died would hold mail silently
                log.exception("rescan round failed; trying again in %gs", self._interval)
            await asyncio.sleep(self._interval)

    async def rescan_due(self, now: float | None = None) -> list[RescanOutcome]:
        """Rescan the held messages waiting for it, oldest first, until one still cannot
        be fully scanned; then deliver those whose hold is over without another try."""
        now = time.time() if now is None else now
        outcomes: list[RescanOutcome] = []
        failing = ""
        for queue_id, received_at in await asyncio.to_thread(self._queue.awaiting_rescan,
                                                             BATCH):
            if not failing:
                outcome = await self.rescan(queue_id, received_at, now)
                failing = outcome.failing
            elif now >= received_at + self._hold:
                outcome = await self._settle_as(queue_id, S.QUEUED, self._expired(failing))
            else:
                break  # the rest arrived later: their hold is not over either
            outcomes.append(outcome)
        return outcomes

    async def rescan(self, queue_id: str, received_at: float,
                     now: float | None = None) -> RescanOutcome:
        """Scan one held message again and settle it if its scanners all answered or its
        hold is over."""
        store = self._queue.store
        detail = await asyncio.to_thread(store.show, queue_id)
        held = [r for r in detail.entry.recipients if r.state == S.HELD.value] if detail else []
        data = await asyncio.to_thread(store.message_data, queue_id) if held else None
        if detail is None or data is None or not held:
            return RescanOutcome(queue_id, None, "no longer held")
        envelope = Envelope(detail.entry.sender, tuple(Recipient(r.address) for r in held),
                            ClientInfo(detail.client_ip, detail.helo, detail.tls))
        verdict = await self._scanning.verdict(envelope, data, queue_id)
        failing = _failures(verdict)
        settled = self._settle(verdict, failing, received_at,
                               time.time() if now is None else now)
        if settled is None:
            return RescanOutcome(queue_id, None, failing, failing)
        outcome = await self._settle_as(queue_id, *settled)
        return RescanOutcome(outcome.queue_id, outcome.state, outcome.detail, failing)

    async def _settle_as(self, queue_id: str, to: S, note: str) -> RescanOutcome:
        moved = await asyncio.to_thread(self._queue.settle_rescan, queue_id, to, note)
        if not moved:
            return RescanOutcome(queue_id, None, "settled by another node")
        log.info("%s: rescanned: %s", queue_id, note)
        return RescanOutcome(queue_id, to.value, note)

    def _expired(self, failing: str) -> str:
        return (f"not fully rescanned within {self._hold / 60:g} min ({failing}); "
                "delivered as scanned at receipt")

    def _settle(self, verdict: Verdict, failing: str, received_at: float,
                now: float) -> tuple[S, str] | None:
        if failing:
            if now < received_at + self._hold:
                return None
            return S.QUEUED, self._expired(failing)
        if (verdict.action in (Action.QUARANTINE, Action.REJECT)
                or any(f.viruses for f in verdict.findings)):
            return S.QUARANTINED, f"quarantined after a rescan: {describe(verdict)}"
        return S.QUEUED, f"delivered after a rescan: {describe(verdict)}"


def _failures(verdict: Verdict) -> str:
    """The scanners that failed again, or the tempfail reason; "" when all answered."""
    failed = "; ".join(f"{f.scanner}: {f.error}" for f in verdict.findings if f.error)
    return failed or (verdict.reason if verdict.action == Action.TEMPFAIL else "")
