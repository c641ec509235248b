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
    # Set when no recipient is pending any more: the purge removes the message after it.
    sa.Column("purge_after", sa.Float),
    # Added by step 8, for message tracking: the headers as received (bounded), or "".
    sa.Column("subject", sa.Text, nullable=False, default="", server_default=""),
    sa.Column("message_id", sa.Text, nullable=False, default="", server_default=""),
    # Added by step 10: how it came in, "smtp", "webmail" (a user's own), "gateway" (ours).
    sa.Column("origin", sa.String(8), nullable=False, default="smtp", server_default="smtp"),
)
sa.Index("messages_purge_after", messages.c.purge_after)
sa.Index("messages_received_at", messages.c.received_at)
sa.Index("messages_origin", messages.c.origin, messages.c.received_at)  # step 10: Sent

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
    sa.Column("queued_at", sa.Float),        # the message's arrival: drains go oldest first
    sa.Column("last_attempt_at", sa.Float),
    sa.Column("remote_mta", sa.Text),        # who gave last_reply, for DSNs
    sa.Column("delay_notified", sa.Boolean, nullable=False, default=False,
              server_default=sa.false()),
    # Added by step 7: "outbound" sends this row through the outbound route whatever its
    # domain (an outage alert to an admin whose own domain's server is the one down).
    sa.Column("route", sa.Text),
)
PENDING = ("queued", "deferred")
_pending = recipients.c.state.in_(PENDING)
# Due-row selection walks this partial index in order: O(log n) however long the
# queue grows, and no sort of the due rows (an IN over the (state, time) index would).
sa.Index("recipients_pending", recipients.c.next_attempt_at, recipients.c.queued_at,
         sqlite_where=_pending, postgresql_where=_pending)
sa.Index("recipients_due", recipients.c.state, recipients.c.next_attempt_at)
sa.Index("recipients_queue_id", recipients.c.queue_id)
sa.Index("recipients_domain_state", recipients.c.domain, recipients.c.state)
# A user's mail, newest first: an expression index, so addresses keep the case the sender
# gave and both SQLite (3.9+) and PostgreSQL use it for ``lower(address) = :email``. Plain
# DDL made by migration 4, not an sa.Index: SQLite's reflection skips expression indexes,
# so the ``checkfirst`` of earlier steps would create it twice.
RECIPIENTS_MAILBOX_DDL = ("CREATE INDEX IF NOT EXISTS recipients_mailbox "
                          "ON recipients (lower(address), queued_at)")

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
sa.Index("events_at", events.c.at)  # step 8: the console's charts read events by time

routes = sa.Table(
    "routes", metadata,
    sa.Column("name", sa.Text, primary_key=True),     # "smtp://host:port" or "outbound"
    sa.Column("state", sa.String(16), nullable=False),  # up | down | recovering (step 7)
    sa.Column("since", sa.Float, nullable=False),      # when state last changed
    sa.Column("failures", sa.Integer, nullable=False, default=0),  # consecutive
    sa.Column("last_error", sa.Text),
    sa.Column("next_probe_at", sa.Float, nullable=False, default=0.0),
    sa.Column("updated_at", sa.Float, nullable=False),
    # Added by step 7, for hysteresis: when the current run of failures began, and the
    # successes counted while "recovering" (mail flows again; reported up after up_after).
    sa.Column("failing_since", sa.Float),
    sa.Column("successes", sa.Integer, nullable=False, default=0, server_default="0"),
)

# Each change of a route's reported state (up -> down, down -> up), recorded once, in
# the transaction that made it, by the node that made it (step 7). Append-only.
route_events = sa.Table(
    "route_events", metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("node", sa.Text, nullable=False),
    sa.Column("route", sa.Text, nullable=False),
    sa.Column("state", sa.String(8), nullable=False),  # down | up
    sa.Column("detail", sa.Text, nullable=False, default=""),
)
sa.Index("route_events_at", route_events.c.at)

# The built-in Bayes classifier: per-token message counts, shared by every node.
bayes_tokens = sa.Table(
    "bayes_tokens", metadata,
    sa.Column("token", sa.Text, primary_key=True),
    sa.Column("spam_count", sa.BigInteger, nullable=False, default=0),
    sa.Column("ham_count", sa.BigInteger, nullable=False, default=0),
    sqlite_with_rowid=False,  # one b-tree keyed by token: a lookup is one descent
)

bayes_totals = sa.Table(
    "bayes_totals", metadata,
    sa.Column("label", sa.String(8), primary_key=True),  # "spam" | "ham"
    sa.Column("messages", sa.BigInteger, nullable=False, default=0),
)

# Messages learned, by fingerprint: learning one twice is a no-op, with the other label a move.
bayes_learned = sa.Table(
    "bayes_learned", metadata,
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("spam", sa.Boolean, nullable=False),
    sa.Column("learned_at", sa.Float, nullable=False),
    # learned into the n-gram model too (stores from before it have Bayes counts only)
    sa.Column("ngrams", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    sqlite_with_rowid=False,
)

# The n-gram model's weights (spoolgate.scan.ngrams), keyed by the 4-gram's bytes as an int.
ngram_weights = sa.Table(
    "ngram_weights", metadata,
    sa.Column("feature", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("weight", sa.Float, nullable=False),
    sqlite_with_rowid=False,
)


# -- the webmail: accounts, sessions, sign-in throttling, per-user flags, the list index --

users = sa.Table(
    "users", metadata,
    sa.Column("email", sa.Text, primary_key=True),           # lower-case
    sa.Column("password_hash", sa.Text, nullable=False),     # argon2id, PHC string
    sa.Column("totp_secret", sa.Text),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("password_changed_at", sa.Float, nullable=False),
    # Added by step 6: the console's roles, and the second factor's replay guard.
    sa.Column("role", sa.String(16), nullable=False, default="user",
              server_default="user"),                  # admin | domain-admin | user
    sa.Column("domains", sa.Text, nullable=False, default="",
              server_default=""),                      # a domain-admin's, newline-separated
    sa.Column("totp_last_step", sa.BigInteger),        # the last TOTP time step accepted
    sa.Column("imap_verified_at", sa.Float),           # the hash is the last IMAP-good password
    # Added by step 9: the daily quarantine digest (opted in), and when one was last sent
    # (a conditional UPDATE of it decides which node sends the day's digest).
    sa.Column("digest", sa.Boolean, nullable=False, default=False,
              server_default=sa.false()),
    sa.Column("digest_sent_at", sa.Float),
)

web_sessions = sa.Table(
    "web_sessions", metadata,
    sa.Column("id", sa.String(64), primary_key=True),        # sha256 hex of the cookie token
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("csrf_token", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_seen_at", sa.Float, nullable=False),
    sa.Column("client_ip", sa.Text, nullable=False),
    # Added by step 6: "totp" while the password is right but the second factor is awaited.
    sa.Column("pending", sa.String(16)),
)
sa.Index("web_sessions_email", web_sessions.c.email)
sa.Index("web_sessions_last_seen", web_sessions.c.last_seen_at)

login_throttle = sa.Table(
    "login_throttle", metadata,
    sa.Column("key", sa.Text, primary_key=True),             # "account:alice@x", "ip:1.2.3.4"
    sa.Column("failures", sa.Integer, nullable=False, default=0),
    sa.Column("last_failure_at", sa.Float, nullable=False),
    sa.Column("locked_until", sa.Float),
)

mailbox_flags = sa.Table(
    "mailbox_flags", metadata,
    sa.Column("queue_id", sa.String(20), sa.ForeignKey("messages.queue_id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("address", sa.Text, primary_key=True),         # the user's lower-case address
    sa.Column("seen_at", sa.Float),
    sa.Column("trashed_at", sa.Float),
    sa.Column("state_before_trash", sa.String(16)),          # set when trashing stopped delivery
)

# What the message list shows, from the one parse, written when a message is first listed.
# ``id`` is the rowid on SQLite, so the FTS5 index below can name rows by it (a table
# without an INTEGER PRIMARY KEY may renumber its rowids on VACUUM).
message_index = sa.Table(
    "message_index", metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("queue_id", sa.String(20), sa.ForeignKey("messages.queue_id", ondelete="CASCADE"),
              nullable=False, unique=True),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("from_text", sa.Text, nullable=False),
    sa.Column("to_text", sa.Text, nullable=False),
    sa.Column("cc_text", sa.Text, nullable=False),
    sa.Column("date_text", sa.Text, nullable=False),
    sa.Column("snippet", sa.Text, nullable=False),
    sa.Column("has_attachments", sa.Boolean, nullable=False),
    sa.Column("attachment_names", sa.Text, nullable=False),  # newline-separated
    sa.Column("body_text", sa.Text, nullable=False, default=""),  # for search, bounded
)

# Full-text search over message_index. SQLite: an FTS5 table with message_index as its
# external content, kept in step by triggers (they also fire for the cascade when the
# purge deletes a message). PostgreSQL: a generated tsvector column with a GIN index, in
# the language-neutral 'simple' configuration: a mailbox mixes languages, and a stemmer
# for the wrong one mangles words (English stemming of German or French mail), so words
# are only lower-cased. '@' and '.' split words on both (unicode61 does so by itself).
# Plain DDL made by migration 5 (neither is expressible in SQLAlchemy Core).
SEARCH_COLUMNS = ("subject", "from_text", "to_text", "body_text", "attachment_names")
SQLITE_SEARCH_DDL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS message_search USING fts5(subject, from_text, "
    "to_text, body_text, attachment_names, content='message_index', content_rowid='id')",
    "CREATE TRIGGER IF NOT EXISTS message_search_insert AFTER INSERT ON message_index BEGIN "
    "INSERT INTO message_search(rowid, subject, from_text, to_text, body_text, "
    "attachment_names) VALUES (new.id, new.subject, new.from_text, "
    "new.to_text || ' ' || new.cc_text, new.body_text, new.attachment_names); END",
    "CREATE TRIGGER IF NOT EXISTS message_search_delete AFTER DELETE ON message_index BEGIN "
    "INSERT INTO message_search(message_search, rowid, subject, from_text, to_text, "
    "body_text, attachment_names) VALUES ('delete', old.id, old.subject, old.from_text, "
    "old.to_text || ' ' || old.cc_text, old.body_text, old.attachment_names); END",
)
# Queries translate their words the same way (spoolgate.store.search).
PG_SPLIT = ("@.<>", "    ")  # '<' too: PostgreSQL's parser skips "<...>" as an XML tag
POSTGRESQL_SEARCH_DDL = (
    "ALTER TABLE message_index ADD COLUMN IF NOT EXISTS search tsvector GENERATED ALWAYS AS "
    "(to_tsvector('simple', translate(subject || ' ' || from_text || ' ' || to_text || ' ' "
    "|| cc_text || ' ' || body_text || ' ' || attachment_names, '@.<>', '    '))) STORED",
    "CREATE INDEX IF NOT EXISTS message_index_search ON message_index USING gin (search)",
)

# Every console and account action: who did what to what, when and from where (step 6).
audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),      # an address, or "cli:<os user>"
    sa.Column("client_ip", sa.Text, nullable=False),  # "" from the CLI
    sa.Column("action", sa.String(48), nullable=False),
    sa.Column("target", sa.Text, nullable=False),     # a queue ID, an address, a route
    sa.Column("detail", sa.Text, nullable=False, default=""),
)
sa.Index("audit_log_at", audit_log.c.at)

# Mail refused during the SMTP session (no message row exists): kept for message tracking
# for [console] rejections_days (step 8).
rejections = sa.Table(
    "rejections", metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("node", sa.Text, nullable=False),
    sa.Column("client_ip", sa.Text, nullable=False),
    sa.Column("helo", sa.Text, nullable=False),
    sa.Column("sender", sa.Text, nullable=False),
    sa.Column("recipient", sa.Text, nullable=False),   # "" when refused before RCPT
    sa.Column("domain", sa.Text, nullable=False),      # the recipient's, for scoping
    sa.Column("stage", sa.String(8), nullable=False),  # rcpt | data
    sa.Column("reason", sa.String(24), nullable=False),
    sa.Column("reply", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False, default=""),
    sa.Column("message_id", sa.Text, nullable=False, default=""),
)
sa.Index("rejections_at", rejections.c.at)

# Sender allow and block rules kept in the store (step 9): a domain's, set in the console,
# and a user's, set in the webmail or by a digest link. ``sender`` is an address or a
# domain, matched like the config's lists; ``scope`` is lower-case.
sender_rules = sa.Table(
    "sender_rules", metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("scope_kind", sa.String(8), nullable=False),   # domain | user
    sa.Column("scope", sa.Text, nullable=False),             # a domain name or an address
    sa.Column("sender", sa.Text, nullable=False),
    sa.Column("action", sa.String(8), nullable=False),       # allow | block
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("scope_kind", "scope", "sender", name="sender_rules_unique"),
)

# Quarantine digest links already used (step 9): the SHA-256 of each token, kept until
# the token would have expired anyway, so a link works once across nodes.
digest_tokens = sa.Table(
    "digest_tokens", metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("used_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
sa.Index("digest_tokens_expires_at", digest_tokens.c.expires_at)
