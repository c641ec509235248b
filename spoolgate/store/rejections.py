"""Mail refused during the SMTP session, kept for message tracking.

Owns ``rejections``. A refused message never gets a message row, so without this table
"what happened to the mail from X to Y?" has no answer when the answer is "we said 550".
Rows are written in batches without waiting for fsync (``durable=False``): losing the last
second of refusals in a crash loses a tracking hint, never mail. Old rows are purged after
the configured window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import sqlalchemy as sa

from spoolgate.store import schema
from spoolgate.store.store import Store, insert_rows

TEXT_LIMIT = 500  # characters of any one field: a hostile client must not fill the table


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refusal: when, from whom, to whom, at which stage, why and with which reply."""

    at: float
    node: str
    client_ip: str
    helo: str
    sender: str
    recipient: str      # "" when refused for the whole transaction (at DATA)
    stage: str          # "rcpt" | "data"
    reason: str         # relay, unknown-user, size, smuggling, spam, virus, policy, tempfail…
    reply: str          # the reply as sent, e.g. "550 5.7.1 Relay access denied"
    subject: str = ""
    message_id: str = ""


class RefusalLog:
    """The ``rejections`` table of one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, refusals: Sequence[Refusal]) -> None:
        rows = [{**{k: (v[:TEXT_LIMIT] if isinstance(v, str) else v)
                    for k, v in asdict(r).items()},
                 "domain": r.recipient.rpartition("@")[2].lower()[:TEXT_LIMIT]}
                for r in refusals]
        with self.store.writing(durable=False) as conn:
            insert_rows(conn, schema.rejections, rows)

    def purge(self, before: float, batch: int = 5000) -> int:
        """Delete refusals older than *before*, at most *batch* per call."""
        x = schema.rejections
        with self.store.writing(durable=False) as conn:
            ids = list(conn.execute(sa.select(x.c.id).where(x.c.at < before).limit(batch))
                       .scalars())
            if ids:
                conn.execute(x.delete().where(x.c.id.in_(ids)))
        return len(ids)
