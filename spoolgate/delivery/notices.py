"""Which outcomes call for a DSN, and the DSN queued as a new message from ``<>``.

The policy of RFC 3461: NOTIFY decides (absent means FAILURE,DELAY), the null
sender never gets one, and one notice per message and kind covers all its
recipients that call for it. The notice goes into the queue like any message,
so it is retried, tracked and never lost; :mod:`spoolgate.delivery.dsn` writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from spoolgate.delivery.dsn import Action, DsnRecipient, DsnRequest, build_dsn, wants_notice
from spoolgate.mail.envelope import ClientInfo, Envelope, IncomingMessage, Notify, Recipient, Ret
from spoolgate.mail.queueid import new_queue_id
from spoolgate.store.queue import ClaimedRecipient


@dataclass(frozen=True, slots=True)
class Report:
    """One recipient's part in a notice."""

    row: ClaimedRecipient
    action: Action
    status: str
    diagnostic: str | None
    remote_mta: str | None
    last_attempt: float | None
    will_retry_until: float | None = None


def notice_for(reports: Sequence[Report], original: bytes, hostname: str, node: str,
               arrival: float, now: float) -> IncomingMessage | None:
    """A DSN for the *reports* of one message that ask for one, or None."""
    wanted = [r for r in reports if wants_notice(r.row.notify, r.action)]
    if not wanted or not wanted[0].row.sender:
        return None
    head = wanted[0].row
    request = DsnRequest(
        queue_id=head.queue_id, sender=head.sender, reporting_mta=hostname, arrival=arrival,
        recipients=tuple(DsnRecipient(
            address=r.row.address, action=r.action, status=r.status, orcpt=r.row.orcpt,
            remote_mta=r.remote_mta, diagnostic=r.diagnostic, last_attempt=r.last_attempt,
            will_retry_until=r.will_retry_until) for r in wanted),
        original=original, envid=head.envid, ret=Ret(head.ret) if head.ret else None)
    data = build_dsn(request, now)
    queue_id = new_queue_id()
    kinds = ",".join(sorted({r.action.value for r in wanted}))
    envelope = Envelope(
        sender="", recipients=(Recipient(head.sender, frozenset({Notify.NEVER})),),
        client=ClientInfo(ip="127.0.0.1", helo=hostname), body_type="7BIT",
        smtputf8=not head.sender.isascii())
    return IncomingMessage(queue_id=queue_id, envelope=envelope, data=data, received_at=now,
                           node=node, events=(("notice", f"{kinds} notice for {head.queue_id} "
                                                         f"to <{head.sender}>"),))
