"""Schema versions and the small runner that applies them at start.

The schema version lives in ``schema_meta``. A store older than this code is
upgraded in one transaction (or refused when auto-migration is off); a store
newer than this code is always refused, since this code cannot know what the
newer schema means. PostgreSQL nodes starting together serialise on an
advisory lock, SQLite processes on the database's write lock (``BEGIN IMMEDIATE``),
so only one of them migrates.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from spoolgate.store import schema


class SchemaError(Exception):
    """The store's schema cannot be used by this version of Spoolgate."""


def _v1(conn: sa.Connection) -> None:
    for table in (schema.messages, schema.recipients, schema.events):
        table.create(conn)


def _add_missing_columns(conn: sa.Connection, table: sa.Table, names: tuple[str, ...]) -> None:
    """ALTER TABLE ADD COLUMN for each of *names* the table lacks (steps create from the
    current definitions, so a fresh store already has them)."""
    present = {column["name"] for column in sa.inspect(conn).get_columns(table.name)}
    for name in names:
        if name in present:
            continue
        column = table.c[name]
        ddl = f"ALTER TABLE {table.name} ADD COLUMN {name} {column.type.compile(conn.dialect)}"
        default = getattr(column.server_default, "arg", None)
        if isinstance(default, str):
            ddl += " NOT NULL DEFAULT '{}'".format(default.replace("'", "''"))
        elif default is not None:  # sa.false()
            ddl += " NOT NULL DEFAULT " + ("false" if conn.dialect.name == "postgresql" else "0")
        conn.exec_driver_sql(ddl)


def _create_indexes(conn: sa.Connection, *tables: sa.Table) -> None:
    """Create the tables' indexes whose columns exist by now. Steps create from the current
    definitions, so an index over a column a later step adds waits for that step (made
    again there by this same call)."""
    for table in tables:
        present = {column["name"] for column in sa.inspect(conn).get_columns(table.name)}
        for index in table.indexes:
            if {column.name for column in index.columns} <= present:
                index.create(conn, checkfirst=True)


def _v2(conn: sa.Connection) -> None:
    _add_missing_columns(conn, schema.messages, ("purge_after",))
    _add_missing_columns(conn, schema.recipients,
                         ("queued_at", "last_attempt_at", "remote_mta", "delay_notified"))
    r, m = schema.recipients, schema.messages
    conn.execute(r.update().where(r.c.queued_at.is_(None)).values(
        queued_at=sa.select(m.c.received_at).where(m.c.queue_id == r.c.queue_id)
        .scalar_subquery()))
    schema.routes.create(conn, checkfirst=True)
    _create_indexes(conn, schema.messages, schema.recipients)


def _v3(conn: sa.Connection) -> None:
    for table in (schema.bayes_tokens, schema.bayes_totals, schema.bayes_learned):
        table.create(conn, checkfirst=True)


def _v4(conn: sa.Connection) -> None:
    for table in (schema.users, schema.web_sessions, schema.login_throttle,
                  schema.mailbox_flags, schema.message_index):
        table.create(conn, checkfirst=True)
    conn.exec_driver_sql(schema.RECIPIENTS_MAILBOX_DDL)


def _v5(conn: sa.Connection) -> None:
    # message_index is a cache the webmail refills from the stored bytes when a message is
    # next listed or searched, so it is rebuilt (with its new rowid key and body text)
    # rather than altered: SQLite cannot change a primary key in place.
    if conn.dialect.name == "sqlite":
        for name in ("message_search_insert", "message_search_delete"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
        conn.exec_driver_sql("DROP TABLE IF EXISTS message_search")
    schema.message_index.drop(conn, checkfirst=True)
    schema.message_index.create(conn)
    search = {"sqlite": schema.SQLITE_SEARCH_DDL, "postgresql": schema.POSTGRESQL_SEARCH_DDL}
    for ddl in search.get(conn.dialect.name, ()):
        conn.exec_driver_sql(ddl)



def _v6(conn: sa.Connection) -> None:
    _add_missing_columns(conn, schema.users,
                         ("role", "domains", "totp_last_step", "imap_verified_at"))
    _add_missing_columns(conn, schema.web_sessions, ("pending",))
    schema.audit_log.create(conn, checkfirst=True)
    for index in schema.audit_log.indexes:
        index.create(conn, checkfirst=True)


def _v7(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":  # room for "recovering" (SQLite ignores lengths)
        conn.exec_driver_sql("ALTER TABLE routes ALTER COLUMN state TYPE VARCHAR(16)")
    _add_missing_columns(conn, schema.routes, ("failing_since", "successes"))
    _add_missing_columns(conn, schema.recipients, ("route",))
    schema.route_events.create(conn, checkfirst=True)
    for index in schema.route_events.indexes:
        index.create(conn, checkfirst=True)



def _v8(conn: sa.Connection) -> None:
    _add_missing_columns(conn, schema.messages, ("subject", "message_id"))
    schema.rejections.create(conn, checkfirst=True)
    _create_indexes(conn, schema.rejections, schema.events, schema.messages)


def _v9(conn: sa.Connection) -> None:
    _add_missing_columns(conn, schema.users, ("digest", "digest_sent_at"))
    for table in (schema.sender_rules, schema.digest_tokens):
        table.create(conn, checkfirst=True)
    for index in schema.digest_tokens.indexes:
        index.create(conn, checkfirst=True)



def _v10(conn: sa.Connection) -> None:
    _add_missing_columns(conn, schema.messages, ("origin",))
    # Mail users sent before this step came in through the webmail's intake, which has
    # always given "webmail" as the client's HELO: keep it in their Sent view.
    m = schema.messages
    conn.execute(m.update().where(m.c.helo == "webmail").values(origin="webmail"))
    _create_indexes(conn, schema.messages)


def _v11(conn: sa.Connection) -> None:
    _add_missing_columns(conn, schema.bayes_learned, ("ngrams",))
    schema.ngram_weights.create(conn, checkfirst=True)


# (version, what it does, how). Append only; never edit a released step.
MIGRATIONS: tuple[tuple[int, str, Callable[[sa.Connection], None]], ...] = (
    (1, "messages, recipients and events", _v1),
    (2, "delivery: route health, retention, arrival order, pending-row index", _v2),
    (3, "the built-in Bayes classifier: token counts, totals, learned messages", _v3),
    (4, "the webmail: users, sessions, sign-in throttle, mailbox flags, list index", _v4),
    (5, "webmail search: the list index rebuilt with body text, FTS5 / tsvector", _v5),
    (6, "accounts: roles, a domain-admin's domains, TOTP replay guard, IMAP-verified "
        "passwords, a pending second factor; the audit log", _v6),
    (7, "outage alerts: route hysteresis, route events, a recipient's route override", _v7),
    (8, "message tracking: subject and Message-ID of messages, in-session refusals, "
        "events and messages by time", _v8),
    (9, "sender allow/block rules, the quarantine digest: users' opt-in and last digest, "
        "used digest links", _v9),
    (10, "where a message came from (SMTP, a user's webmail, the gateway itself)", _v10),
    (11, "the built-in scanner's n-gram model: its weights, which messages it learned", _v11),
)
LATEST = MIGRATIONS[-1][0]
_ADVISORY_KEY = 0x5B001_6A7E  # "spoolgate" schema lock on PostgreSQL


def current_version(conn: sa.Connection) -> int | None:
    """The stored schema version, or None for an empty database."""
    if not sa.inspect(conn).has_table("schema_meta"):
        return None
    value = conn.execute(sa.select(schema.schema_meta.c.value)
                         .where(schema.schema_meta.c.key == "version")).scalar()
    return int(value) if value is not None else None


def migrate(engine: sa.Engine, auto: bool = True) -> int:
    """Bring the schema to :data:`LATEST`; return the version found before."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
        elif conn.dialect.name == "sqlite":
            # pysqlite runs DDL outside any transaction and begins one only at the first
            # INSERT/UPDATE: take SQLite's write lock first, so that the check and every
            # step are one transaction and concurrent openers wait for it.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        found = current_version(conn)
        if found is None and sa.inspect(conn).get_table_names():
            tables = ", ".join(sorted(sa.inspect(conn).get_table_names()))
            raise SchemaError(f"the database holds tables ({tables}) but no Spoolgate schema "
                              "version; point [store].url at an empty or a Spoolgate database")
        if found is not None and found > LATEST:
            raise SchemaError(f"the store's schema is version {found}, newer than this "
                              f"Spoolgate knows (up to {LATEST}); upgrade Spoolgate")
        if found == LATEST:
            return found
        if found is not None and not auto:
            raise SchemaError(f"the store's schema is version {found}, older than this "
                              f"Spoolgate needs ({LATEST}); run 'spoolgate migrate' first")
        if found is None:
            schema.schema_meta.create(conn)
            conn.execute(schema.schema_meta.insert(), {"key": "version", "value": "0"})
        for version, _, step in MIGRATIONS:
            if version > (found or 0):
                step(conn)
        conn.execute(schema.schema_meta.update().where(schema.schema_meta.c.key == "version")
                     .values(value=str(LATEST)))
        return found or 0
