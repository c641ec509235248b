"""The intake pipeline: from the bytes of one SMTP transaction to a durable message.

:meth:`Intake.accept` checks the hop count, scans the message (refusing it, or
marking it for quarantine, as the domain's policy says), prepends the
``Received:`` header, our ``Authentication-Results`` (removing incoming ones that claim
our authserv-id, RFC 8601 §5) and the spam headers and Subject tag of a tagged message,
and commits the message through the group committer. It returns the queue ID only once
the commit is durable; any failure raises :class:`SmtpError` with the
reply the client must get (``452 4.3.1`` when the store cannot take it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from spoolgate.intake.auth_results import authentication_results_header, strip_forged_results
from spoolgate.intake.received import count_received, received_header
from spoolgate.intake.scanning import Scanning, describe, prefix_subject, spam_headers
from spoolgate.mail.envelope import Envelope, IncomingMessage
from spoolgate.mail.queueid import new_queue_id
from spoolgate.mail.reply import STORAGE_FAILURE, TOO_MANY_HOPS, SmtpError
from spoolgate.mail.verdict import Action, Verdict
from spoolgate.store.groupcommit import GroupCommitter
from spoolgate.store.store import StoreError

log = logging.getLogger("spoolgate.intake")


@dataclass(frozen=True, slots=True)
class IntakeSettings:
    hostname: str
    node: str
    max_received_headers: int


class Intake:
    """Accepts messages for storage on behalf of the SMTP sessions."""

    def __init__(self, settings: IntakeSettings, committer: GroupCommitter,
                 scanning: Scanning | None = None) -> None:
        self._settings = settings
        self._committer = committer
        self._scanning = scanning

    async def accept(self, envelope: Envelope, data: bytes, esmtp: bool = True) -> str:
        """Store one message durably and return its queue ID."""
        queue_id = new_queue_id()
        hops = count_received(data)
        if hops > self._settings.max_received_headers:
            log.warning("%s: reject: too many hops (%d) from=<%s>", queue_id, hops, envelope.sender)
            raise SmtpError(TOO_MANY_HOPS.code, TOO_MANY_HOPS.enhanced, TOO_MANY_HOPS.text)
        started = time.perf_counter()
        events: list[tuple[str, str]] = []
        quarantined = False
        if self._scanning is not None:
            verdict = await self._scanning.judge(envelope, data, queue_id)  # may refuse
            events.append(("scanned", describe(verdict)))
            unscanned = [f"{f.scanner}: {f.error}" for f in verdict.findings if f.error]
            if unscanned:  # let through by rescan_on_error: marked for a later rescan
                events.append(("rescan-needed", "; ".join(unscanned)))
            quarantined = verdict.action == Action.QUARANTINE
            data = self._scan_headers(envelope, verdict, data)
        else:
            data = strip_forged_results(data, self._settings.hostname)
        now = time.time()
        stored = received_header(envelope, queue_id, self._settings.hostname, esmtp, now) + data
        message = IncomingMessage(
            queue_id=queue_id, envelope=envelope, data=stored, received_at=now,
            node=self._settings.node, quarantined=quarantined,
            events=(("accepted", _accept_detail(envelope, len(stored))), *events))
        try:
            await self._committer.commit(message)
        except StoreError as error:
            log.error("%s: store failure, answered 452: %s", queue_id, error)
            raise SmtpError(STORAGE_FAILURE.code, STORAGE_FAILURE.enhanced,
                            STORAGE_FAILURE.text) from error
        log.info("%s: accepted %s delay=%.4f%s", queue_id, message.events[0][1],
                 time.perf_counter() - started, " quarantined" if quarantined else "")
        return queue_id

    def _scan_headers(self, envelope: Envelope, verdict: Verdict, data: bytes) -> bytes:
        """Our Authentication-Results (forged ones removed) and the spam headers and tag."""
        authserv_id = self._settings.hostname
        data = strip_forged_results(data, authserv_id)  # downstream trusts our authserv-id
        if verdict.action in (Action.TAG, Action.QUARANTINE) and self._scanning is not None:
            data = prefix_subject(data, self._scanning.policy(envelope).subject_prefix)
        if verdict.action != Action.PASS:
            data = spam_headers(verdict) + data
        results = [a for f in verdict.findings for a in f.authentication]
        if results:
            data = authentication_results_header(authserv_id, results) + data
        return data


def _accept_detail(envelope: Envelope, size: int) -> str:
    client = envelope.client
    tls = f" tls={client.tls}" if client.tls else ""
    return (f"from=<{envelope.sender}> size={size} nrcpt={len(envelope.recipients)} "
            f"client=[{client.ip}] helo={client.helo!r}{tls}")
