"""Operator verbs that need delivery's knowledge: bounce a message now, with its DSN."""

from __future__ import annotations

import time

from spoolgate.config import Settings
from spoolgate.delivery.dsn import Action
from spoolgate.delivery.notices import Report, notice_for
from spoolgate.mail.states import RecipientState as S
from spoolgate.store.queue import Outcome, Queue


def bounce(settings: Settings, queue: Queue, queue_id: str) -> int:
    """Fail every waiting recipient of *queue_id* now and queue the failure notice.

    Returns how many recipients were bounced (0: nothing was waiting).
    """
    rows = queue.pending_rows(queue_id)
    if not rows:
        return 0
    now = time.time()
    last = queue.last_replies(queue_id)
    text = "550 5.0.0 message returned to the sender by the postmaster"
    outcomes, reports = [], []
    for row in rows:
        previous, remote, attempted = last.get(row.address, (None, None, None))
        outcomes.append(Outcome(row.row_id, row.queue_id, row.address, S.FAILED, text, now,
                                attempted=False, event="bounced", detail="by operator",
                                retention=settings.delivery.failed_retention_days * 86400))
        reports.append(Report(row, Action.FAILED, "5.0.0", previous or text, remote, attempted))
    data = queue.store.message_data(queue_id) or b""
    notice = notice_for(reports, data, settings.smtp.hostname, settings.node.name,
                        rows[0].queued_at, now)
    queue.record(outcomes, [notice] if notice else [], now)
    return len(rows)
