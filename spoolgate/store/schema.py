"""Table definitions (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Times are seconds since the epoch (double precision), so both backends sort
and compare them alike. Queue state is one row per recipient (DESIGN.md).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# BIGINT on PostgreSQL; INTEGER PRIMARY KEY (the rowid) on SQLite.
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

schema_meta = sa.Table(
    "schema_meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

messages = sa.Table(
    "messages", metadata,
    sa.Column("queue_id", sa.String(20), primary_key=True),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("node", sa.Text, nullable=False),
    sa.Column("sender", sa.Text, nullable=False),
    sa.Column("client_ip", sa.Text, nullable=False),
    sa.Column("helo", sa.Text, nullable=False),
    sa.Column("tls", sa.Text),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("body_type", sa.String(16), nullable=False),
    sa.Column("smtputf8", sa.Boolean, nullable=False),
    sa.Column("ret", sa.String(4)),
    sa.Column("envid", sa.Text),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

recipients = sa.Table(
    "recipients", metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("queue_id", sa.String(20), sa.ForeignKey("messages.queue_id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("address", sa.Text, nullable=False),
    sa.Column("domain", sa.Text, nullable=False),
    sa.Column("orcpt", sa.Text),
    sa.Column("notify", sa.String(40)),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("last_reply", sa.Text),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_until", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
)
# Due-row selection walks this index: O(log n) however long the queue grows.
sa.Index("recipients_due", recipients.c.state, recipients.c.next_attempt_at)
sa.Index("recipients_queue_id", recipients.c.queue_id)
sa.Index("recipients_domain_state", recipients.c.domain, recipients.c.state)

events = sa.Table(
    "events", metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("queue_id", sa.String(20), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("node", sa.Text, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("recipient", sa.Text),
    sa.Column("detail", sa.Text, nullable=False, default=""),
)
sa.Index("events_queue_id", events.c.queue_id, events.c.id)
