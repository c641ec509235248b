"""The intake pipeline: from the bytes of one SMTP transaction to a durable message.

:meth:`Intake.accept` checks the hop count, scans the message (refusing it, or
marking it for quarantine, as the domain's policy says; mail a scanner allowed to fail
could not fully scan is held for :mod:`spoolgate.intake.rescan`), prepends the
``Received:`` header, our ``Authentication-Results`` (removing incoming ones that claim
our authserv-id, RFC 8601 §5) and the spam headers and Subject tag of a tagged message,
and commits the message through the group committer. It returns the queue ID only once
the commit is durable; any failure raises :class:`SmtpError` with the
reply the client must get: ``452 4.3.1`` when the store cannot take the message, or could
not be read while scanning it (the Bayes statistics live there), logged in one line and
counted and recorded as a ``store`` refusal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from spoolgate.intake.auth_results import authentication_results_header, strip_forged_results
from spoolgate.intake.received import count_received, received_header
from spoolgate.intake.refusals import RefusalRecorder
from spoolgate.intake.scanning import Scanning, ScanRefusal, describe, prefix_subject, spam_headers
from spoolgate.mail.envelope import Envelope, IncomingMessage
from spoolgate.mail.queueid import new_queue_id
from spoolgate.mail.reply import STORAGE_FAILURE, TOO_MANY_HOPS, SmtpError
from spoolgate.mail.verdict import Action, Verdict
from spoolgate.mime.parse import header_summary, parse_message, summary_of
from spoolgate.ops.metrics import Metrics
from spoolgate.store.groupcommit import GroupCommitter
from spoolgate.store.rejections import Refusal
from spoolgate.store.store import StoreError

log = logging.getLogger("spoolgate.intake")


@dataclass(frozen=True, slots=True)
class IntakeSettings:
    hostname: str
    node: str
    max_received_headers: int
    hold_unscanned: bool = False  # hold mail a failed scanner let through, for its rescan


class Intake:
    """Accepts messages for storage on behalf of the SMTP sessions."""

    def __init__(self, settings: IntakeSettings, committer: GroupCommitter,
                 scanning: Scanning | None = None, metrics: Metrics | None = None,
                 refusals: RefusalRecorder | None = None) -> None:
        self._settings = settings
        self._committer = committer
        self._scanning = scanning
        self._metrics = metrics if metrics is not None else Metrics()
        self._refusals = refusals

    def refused(self, envelope: Envelope, stage: str, reason: str, reply: str,
                recipient: str = "", data: bytes = b"",
                summary: tuple[str, str] | None = None) -> None:
        """Note a refusal in the SMTP session for message tracking (never waits); the
        subject and Message-ID come from *summary* or *data*."""
        if self._refusals is None:
            return
        subject, message_id = summary or (header_summary(data) if data else ("", ""))
        client = envelope.client
        self._refusals.note(Refusal(time.time(), self._settings.node, client.ip, client.helo,
                                    envelope.sender, recipient, stage, reason, reply,
                                    subject, message_id))

    async def accept(self, envelope: Envelope, data: bytes, esmtp: bool = True,
                     origin: str = "smtp") -> str:
        """Store one message durably and return its queue ID; *origin* says who handed it
        in ("smtp", "webmail" for a signed-in user, "gateway" for our own notices)."""
        queue_id = new_queue_id()
        hops = count_received(data)
        if hops > self._settings.max_received_headers:
            log.warning("%s: reject: too many hops (%d) from=<%s>", queue_id, hops, envelope.sender)
            self._metrics.rejected("hops")
            self._refused_all(envelope, "hops", str(TOO_MANY_HOPS), data)
            raise SmtpError(TOO_MANY_HOPS.code, TOO_MANY_HOPS.enhanced, TOO_MANY_HOPS.text)
        started = time.perf_counter()
        events: list[tuple[str, str]] = []
        quarantined = held = False
        summary: tuple[str, str] | None = None
        if self._scanning is not None and origin != "gateway":  # our own notices: not scanned
            parsed = await asyncio.to_thread(parse_message, data)  # CPU: off the event loop
            summary = summary_of(parsed)  # the Subject as received, before any tag
            try:
                verdict = await self._scanning.judge(envelope, data, queue_id, self._metrics,
                                                     parsed)
            except ScanRefusal as refusal:
                self._refused_all(envelope, refusal.reason, str(refusal.reply), data, summary)
                raise
            except StoreError as error:
                raise self._storage_failure(queue_id, envelope, "scanning", error, data,
                                            summary) from error
            events.append(("scanned", describe(verdict)))
            unscanned = [f"{f.scanner}: {f.error}" for f in verdict.findings if f.error]
            if unscanned:  # let through by rescan_on_error: marked for a later rescan
                events.append(("rescan-needed", "; ".join(unscanned)))
            quarantined = verdict.action == Action.QUARANTINE
            held = bool(unscanned) and not quarantined and self._settings.hold_unscanned
            data = self._scan_headers(envelope, verdict, data)
        else:
            data = strip_forged_results(data, self._settings.hostname)
        now = time.time()
        stored = received_header(envelope, queue_id, self._settings.hostname, esmtp, now) + data
        subject, message_id = summary or header_summary(data)
        message = IncomingMessage(
            queue_id=queue_id, envelope=envelope, data=stored, received_at=now,
            node=self._settings.node, quarantined=quarantined, held=held, subject=subject,
            message_id=message_id, origin=origin,
            events=(("accepted", _accept_detail(envelope, len(stored))), *events))
        try:
            await self._committer.commit(message)
        except StoreError as error:
            raise self._storage_failure(queue_id, envelope, "storing", error, data,
                                        (subject, message_id)) from error
        self._metrics.messages_accepted.inc()
        log.info("%s: accepted %s delay=%.4f%s", queue_id, message.events[0][1],
                 time.perf_counter() - started,
                 " quarantined" if quarantined else " held for rescan" if held else "")
        return queue_id

    def _storage_failure(self, queue_id: str, envelope: Envelope, step: str,
                         error: StoreError, data: bytes,
                         summary: tuple[str, str] | None) -> SmtpError:
        """Log, count and record a store failure while *step*; the error to raise."""
        log.error("%s: store failure while %s, answered %d %s from=<%s>: %s", queue_id, step,
                  STORAGE_FAILURE.code, STORAGE_FAILURE.enhanced, envelope.sender, error)
        self._metrics.rejected("store")
        self._refused_all(envelope, "store", str(STORAGE_FAILURE), data, summary)
        return SmtpError(STORAGE_FAILURE.code, STORAGE_FAILURE.enhanced, STORAGE_FAILURE.text)

    def _refused_all(self, envelope: Envelope, reason: str, reply: str, data: bytes,
                     summary: tuple[str, str] | None = None) -> None:
        if self._refusals is None:
            return
        summary = summary or header_summary(data)  # once for every recipient
        for recipient in envelope.recipients:
            self.refused(envelope, "data", reason, reply, recipient.address, summary=summary)

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
