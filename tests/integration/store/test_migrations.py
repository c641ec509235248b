"""spoolgate/store/migrations.py on SQLite and PostgreSQL: create, refuse, upgrade, race."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from spoolgate import cli
from spoolgate.store import migrations, schema
from spoolgate.store.engine import create_engine, normalise_url
from spoolgate.store.migrations import LATEST, SchemaError, migrate
from spoolgate.store.store import StoreError, open_store
from tests.gateway_process import render_config
from tests.integration.store.messages import incoming

pytestmark = pytest.mark.integration

SPOOLGATE_TABLES = {"schema_meta", "messages", "recipients", "events", "routes",
                    "bayes_tokens", "bayes_totals", "bayes_learned", "users", "web_sessions",
                    "login_throttle", "mailbox_flags", "message_index", "audit_log",
                    "route_events", "rejections", "sender_rules", "digest_tokens",
                    "ngram_weights"}
# SQLite's search index: the FTS5 table and its shadow tables.
FTS5_TABLES = {"message_search", "message_search_data", "message_search_idx",
               "message_search_docsize", "message_search_config"}


def _expected_tables(engine: sa.Engine) -> set[str]:
    return SPOOLGATE_TABLES | (FTS5_TABLES if engine.dialect.name == "sqlite" else set())


@pytest.fixture
def raw(store_url: str) -> Iterator[sa.Engine]:
    """A plain engine on the same database, to look at or shape it behind the store's back."""
    engine = create_engine(store_url)
    yield engine
    engine.dispose()


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def _version_rows(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.select(schema.schema_meta))]


def _set_version(engine: sa.Engine, version: int) -> None:
    with engine.begin() as conn:
        conn.execute(schema.schema_meta.update().where(schema.schema_meta.c.key == "version")
                     .values(value=str(version)))


def _make_version_zero_store(engine: sa.Engine) -> None:
    """What an older Spoolgate left: the version table, at a version before every step."""
    with engine.begin() as conn:
        schema.schema_meta.create(conn)
        conn.execute(schema.schema_meta.insert(), {"key": "version", "value": "0"})


def test_an_empty_database_is_brought_to_latest(store_url: str, raw: sa.Engine) -> None:
    assert _tables(raw) == set()

    store = open_store(store_url)
    message = incoming()
    store.commit_incoming([message])
    store.close()

    assert _tables(raw) == _expected_tables(raw)
    assert _version_rows(raw) == [("version", str(LATEST))]

    # Opening again changes nothing: same version, same tables, the data still there.
    assert migrate(raw) == LATEST
    store = open_store(store_url, auto_migrate=False)
    try:
        assert store.queue_ids() == [message.queue_id]
    finally:
        store.close()
    assert _tables(raw) == _expected_tables(raw)
    assert _version_rows(raw) == [("version", str(LATEST))]


@pytest.mark.parametrize("auto_migrate", [True, False])
def test_a_newer_schema_is_refused(store_url: str, raw: sa.Engine, auto_migrate: bool) -> None:
    open_store(store_url).close()
    _set_version(raw, LATEST + 1)

    with pytest.raises(SchemaError) as refused:
        open_store(store_url, auto_migrate=auto_migrate)

    assert f"version {LATEST + 1}" in str(refused.value)
    assert f"up to {LATEST}" in str(refused.value)
    assert "upgrade Spoolgate" in str(refused.value)
    assert _version_rows(raw) == [("version", str(LATEST + 1))]


def test_a_database_of_someone_else_is_refused(store_url: str, raw: sa.Engine) -> None:
    with raw.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.exec_driver_sql("INSERT INTO customers VALUES (1, 'ACME')")

    with pytest.raises(SchemaError, match=r"holds tables \(customers\) but no Spoolgate schema"):
        open_store(store_url)

    assert _tables(raw) == {"customers"}
    with raw.connect() as conn:
        assert conn.exec_driver_sql("SELECT name FROM customers").all() == [("ACME",)]


def test_an_older_schema_waits_for_spoolgate_migrate(
        store_url: str, raw: sa.Engine, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _make_version_zero_store(raw)
    config = folder / "spoolgate.toml"
    config.write_text(render_config(
        {"store": {"url": store_url, "auto_migrate": False}},
        [{"name": "example.test", "route": "smtp://127.0.0.1:2526"}]))

    with pytest.raises(SchemaError) as refused:
        open_store(store_url, auto_migrate=False)
    assert "version 0" in str(refused.value)
    assert f"needs ({LATEST})" in str(refused.value)
    assert "run 'spoolgate migrate'" in str(refused.value)
    assert cli.main(["queue", "list", "--config", str(config)]) == 1
    assert "run 'spoolgate migrate'" in capsys.readouterr().err
    assert _tables(raw) == {"schema_meta"}

    assert cli.main(["migrate", "--config", str(config)]) == 0
    assert f"upgraded from version 0 to {LATEST}" in capsys.readouterr().out
    assert _tables(raw) == _expected_tables(raw)
    assert _version_rows(raw) == [("version", str(LATEST))]

    assert cli.main(["migrate", "--config", str(config)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert cli.main(["queue", "list", "--config", str(config)]) == 0
    assert "Mail queue is empty" in capsys.readouterr().out


def test_a_failed_upgrade_leaves_the_store_as_it_was(store_url: str, raw: sa.Engine) -> None:
    """The upgrade is one transaction: a step failing half-way leaves no half schema behind."""
    _make_version_zero_store(raw)
    # A stray table in the way of the last table of step 1 (say, from a half-done restore).
    with raw.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE events (id INTEGER)")

    with pytest.raises(StoreError, match="cannot open the store"):
        open_store(store_url)

    assert _tables(raw) == {"schema_meta", "events"}
    assert _version_rows(raw) == [("version", "0")]


def _migrate_in_child(url: str, start_line, results) -> None:
    engine = create_engine(url)
    try:
        with engine.connect():
            pass
        start_line.wait(60)
        results.put(("ok", migrate(engine)))
    except Exception as error:
        results.put(("error", f"{type(error).__name__}: {error}"))
    finally:
        engine.dispose()


def _wait_for_advisory_waiters(url: str, children: list, results, timeout: float = 60.0) -> None:
    """Until every child waits for the schema lock (or one of them has already given up)."""
    engine = sa.create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
    query = sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
    deadline = time.monotonic() + timeout
    try:
        with engine.connect() as conn:
            while conn.execute(query).scalar_one() < len(children):
                if not results.empty() or not all(child.is_alive() for child in children):
                    return
                assert time.monotonic() < deadline, "the migrations never queued on the lock"
                time.sleep(0.02)
    finally:
        engine.dispose()


def test_two_processes_migrating_an_empty_database_at_once(store_url: str, raw: sa.Engine) -> None:
    """Both succeed; one creates the schema, the other finds it done (one creation only)."""
    context = multiprocessing.get_context("spawn")
    start_line, results = context.Barrier(2), context.Queue()
    holder = None
    if raw.dialect.name == "postgresql":
        # Hold the schema lock so both children are inside migrate(), queued, before either runs.
        holder = raw.connect()
        holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": migrations._ADVISORY_KEY})
    children = [context.Process(target=_migrate_in_child, args=(store_url, start_line, results))
                for _ in range(2)]
    try:
        for child in children:
            child.start()
        if holder is not None:
            _wait_for_advisory_waiters(store_url, children, results)
            holder.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": migrations._ADVISORY_KEY})
        outcomes = [results.get(timeout=60) for _ in children]
    finally:
        if holder is not None:
            holder.close()
        for child in children:
            child.join(60)
            if child.is_alive():
                child.kill()

    assert sorted(outcomes) == [("ok", 0), ("ok", LATEST)], outcomes
    assert [child.exitcode for child in children] == [0, 0]
    assert _tables(raw) == _expected_tables(raw)
    assert _version_rows(raw) == [("version", str(LATEST))]


def test_a_version_4_list_index_is_rebuilt_for_search(store_url: str, raw: sa.Engine) -> None:
    """Step 5 replaces version 4's list index (keyed by queue ID, no body text) with the
    searchable one, and the webmail refills it from the stored bytes."""
    from zoneinfo import ZoneInfo

    from spoolgate.store.mailbox import Mailbox
    from spoolgate.store.search import Search
    from spoolgate.webmail.search import index_pending, parse_query
    from tests.webmail_mail import deliver, text_message

    alice = "alice@example.test"
    store = open_store(store_url)
    queue_id = deliver(store, text_message(alice, subject="Harbour plans", body="tide\n"), alice)
    store.close()
    old = sa.Table("message_index", sa.MetaData(),
                   sa.Column("queue_id", sa.String(20), primary_key=True),
                   *(sa.Column(name, sa.Text, nullable=False) for name in (
                       "subject", "from_text", "to_text", "cc_text", "date_text", "snippet",
                       "attachment_names")),
                   sa.Column("has_attachments", sa.Boolean, nullable=False))
    with raw.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TABLE message_search")
        conn.exec_driver_sql("DROP TABLE message_index")
        old.create(conn)
        conn.execute(old.insert(), {"queue_id": queue_id, "subject": "Harbour plans",
                                    "from_text": "", "to_text": alice, "cc_text": "",
                                    "date_text": "", "snippet": "", "attachment_names": "",
                                    "has_attachments": False})
    _set_version(raw, 4)

    store = open_store(store_url)
    try:
        assert _version_rows(raw) == [("version", str(LATEST))]
        columns = {c["name"] for c in sa.inspect(raw).get_columns("message_index")}
        assert {"id", "body_text"} <= columns
        with raw.connect() as conn:  # the old rows went with the old table
            assert conn.execute(sa.text("SELECT count(*) FROM message_index")).scalar() == 0
        assert _tables(raw) == _expected_tables(raw)
        assert index_pending(store, Mailbox(store, "t"), alice, 10) is False
        found = Search(store).find(alice, parse_query("tide", ZoneInfo("UTC")), 10)
        assert [item.queue_id for item in found] == [queue_id]
    finally:
        store.close()


def test_version_5_accounts_gain_a_role_and_the_audit_log(store_url: str, raw: sa.Engine) -> None:
    """Step 6 adds columns to users and sessions that already hold rows: existing users
    become plain users, and the audit log appears."""
    from spoolgate.store.accounts import Accounts

    store = open_store(store_url)
    Accounts(store).add_user("Alice@example.test", "$argon2id$stand-in", 1.0)
    store.close()
    with raw.begin() as conn:
        for column in ("role", "domains", "totp_last_step", "imap_verified_at"):
            conn.exec_driver_sql(f"ALTER TABLE users DROP COLUMN {column}")
        conn.exec_driver_sql("ALTER TABLE web_sessions DROP COLUMN pending")
        conn.exec_driver_sql("DROP TABLE audit_log")
    _set_version(raw, 5)

    store = open_store(store_url)
    try:
        user = Accounts(store).get_user("alice@example.test")
        assert user is not None
        assert (user.role, user.domains, user.totp_last_step) == ("user", (), None)
        assert _tables(raw) == _expected_tables(raw)
        assert _version_rows(raw) == [("version", str(LATEST))]
    finally:
        store.close()


def test_version_6_routes_gain_hysteresis_and_the_route_event_log(store_url: str,
                                                                  raw: sa.Engine) -> None:
    """Step 7 adds columns to routes and recipients that already hold rows (a down route,
    a waiting message), widens the route state for "recovering", and adds route_events."""
    from spoolgate.store.queue import Queue

    route = "smtp://10.0.0.5:25"
    store = open_store(store_url)
    message = incoming(["alice@example.test"])
    store.commit_incoming([message])
    Queue(store, "n").route_failed(route, "refused", 100.0, 1, 60.0)
    store.close()
    with raw.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE routes DROP COLUMN failing_since")
        conn.exec_driver_sql("ALTER TABLE routes DROP COLUMN successes")
        conn.exec_driver_sql("ALTER TABLE recipients DROP COLUMN route")
        conn.exec_driver_sql("DROP TABLE route_events")
        if conn.dialect.name == "postgresql":  # as version 6 made it
            conn.exec_driver_sql("ALTER TABLE routes ALTER COLUMN state TYPE VARCHAR(8)")
    _set_version(raw, 6)

    store = open_store(store_url)
    try:
        queue = Queue(store, "n")
        (status,) = queue.routes()
        assert (status.state, status.since, status.successes) == ("down", 100.0, 0)
        assert [r.route for r in queue.claim_due(time.time(), 10, 60.0)] == [None]
        assert queue.route_answered(route, 200.0, ["example.test"], up_after=2)[0].state == (
            "recovering")
        assert queue.route_answered(route, 201.0, ["example.test"], up_after=2)[1] is not None
        assert [e.state for e in queue.route_events()] == ["up"]
        assert _tables(raw) == _expected_tables(raw)
        assert _version_rows(raw) == [("version", str(LATEST))]
    finally:
        store.close()


def test_version_7_messages_gain_tracking_columns(store_url: str, raw: sa.Engine) -> None:
    """Step 8 adds the subject and Message-ID columns to messages that already hold rows
    (they stay empty: tracking finds them by sender, recipient and time), the refusal log,
    and the indexes by time."""
    from spoolgate.store.console import Console, TrackingQuery
    from tests.webmail_mail import deliver, text_message

    store = open_store(store_url)
    queue_id = deliver(store, text_message("alice@example.test"), "alice@example.test")
    store.close()
    with raw.begin() as conn:
        conn.exec_driver_sql("DROP INDEX messages_received_at")
        conn.exec_driver_sql("DROP INDEX events_at")
        for column in ("subject", "message_id"):
            conn.exec_driver_sql(f"ALTER TABLE messages DROP COLUMN {column}")
        conn.exec_driver_sql("DROP TABLE rejections")
    _set_version(raw, 7)

    store = open_store(store_url)
    try:
        assert _version_rows(raw) == [("version", str(LATEST))]
        assert _tables(raw) == _expected_tables(raw)
        indexes = {i["name"] for i in sa.inspect(raw).get_indexes("events")}
        assert "events_at" in indexes
        found = Console(store).track(TrackingQuery(recipient="alice@"), None)
        assert [(t.queue_id, t.subject) for t in found] == [(queue_id, "")]
    finally:
        store.close()


def test_version_8_users_gain_the_digest_and_sender_rules_arrive(store_url: str,
                                                                raw: sa.Engine) -> None:
    """Step 9 adds the digest opt-in and last-sent columns to users who already exist
    (opted out, never sent), the sender rules and the used digest links."""
    from spoolgate.store.accounts import Accounts
    from spoolgate.store.digest import DigestStore
    from spoolgate.store.senders import SenderRules

    store = open_store(store_url)
    Accounts(store).add_user("alice@example.test", "$argon2id$x", now=1.0)
    store.close()
    with raw.begin() as conn:
        for column in ("digest", "digest_sent_at"):
            conn.exec_driver_sql(f"ALTER TABLE users DROP COLUMN {column}")
        conn.exec_driver_sql("DROP TABLE sender_rules")
        conn.exec_driver_sql("DROP TABLE digest_tokens")
    _set_version(raw, 8)

    store = open_store(store_url)
    try:
        assert _version_rows(raw) == [("version", str(LATEST))]
        assert _tables(raw) == _expected_tables(raw)
        user = Accounts(store).get_user("alice@example.test")
        assert user is not None and (user.digest, user.digest_sent_at) == (False, None)
        assert Accounts(store).set_digest("alice@example.test", True)
        assert [s.email for s in DigestStore(store).subscribers()] == ["alice@example.test"]
        SenderRules(store).add("user", "alice@example.test", "x.example", "allow", "a", 1.0)
        assert DigestStore(store).use_token("h", 10.0, 1.0)
    finally:
        store.close()


def test_version_9_messages_gain_their_origin(store_url: str, raw: sa.Engine) -> None:
    """Step 10 adds where each message came from; older messages count as SMTP mail, so
    none of them appears in anyone's Sent view."""
    from spoolgate.store.mailbox import Mailbox
    from tests.webmail_mail import deliver, text_message

    store = open_store(store_url)
    queue_id = deliver(store, text_message("alice@example.test"), "alice@example.test")
    store.close()
    with raw.begin() as conn:
        conn.exec_driver_sql("DROP INDEX messages_origin")
        conn.exec_driver_sql("ALTER TABLE messages DROP COLUMN origin")
    _set_version(raw, 9)

    store = open_store(store_url)
    try:
        assert _version_rows(raw) == [("version", str(LATEST))]
        with raw.connect() as conn:
            assert conn.execute(sa.text("SELECT origin FROM messages WHERE queue_id = :q"),
                                {"q": queue_id}).scalar_one() == "smtp"
        assert "messages_origin" in {i["name"] for i in sa.inspect(raw).get_indexes("messages")}
        assert Mailbox(store, "t").sent("bob@partner.test", 10) == []
    finally:
        store.close()


# Columns each table gained after version 1, by the step that added them.
_LATER_COLUMNS = {"messages": {"purge_after", "subject", "message_id", "origin"},
                  "recipients": {"queued_at", "last_attempt_at", "remote_mta",
                                 "delay_notified", "route"},
                  "events": set()}


def test_a_version_1_store_is_brought_to_latest(store_url: str, raw: sa.Engine) -> None:
    """The whole chain on a store shaped as version 1 left it: every step must work on the
    columns that exist at its turn (an index over a column a later step adds once broke
    every upgrade), and mail users sent from the webmail stays in their Sent view."""
    from spoolgate.store.mailbox import Mailbox

    old = sa.MetaData()
    for name, later in _LATER_COLUMNS.items():
        table = schema.metadata.tables[name]
        sa.Table(name, old, *(sa.Column(c.name, c.type, primary_key=c.primary_key,
                                        nullable=c.nullable, autoincrement=c.autoincrement)
                              for c in table.c if c.name not in later))
    with raw.begin() as conn:
        old.create_all(conn)
        schema.schema_meta.create(conn)
        conn.execute(schema.schema_meta.insert(), {"key": "version", "value": "1"})
        conn.execute(old.tables["messages"].insert(), [
            {"queue_id": queue_id, "received_at": 1000.0, "node": "n", "sender": sender,
             "client_ip": "192.0.2.1", "helo": helo, "tls": None, "size": 3,
             "body_type": "7BIT", "smtputf8": False, "ret": None, "envid": None,
             "data": b"x\r\n"}
            for queue_id, sender, helo in (("00000000000001", "alice@example.test", "webmail"),
                                           ("00000000000002", "alice@example.test", "mx.evil"))])
        conn.execute(old.tables["recipients"].insert(), [
            {"queue_id": queue_id, "address": "bob@partner.test", "domain": "partner.test",
             "state": "queued", "attempts": 0, "next_attempt_at": 1000.0, "updated_at": 1000.0}
            for queue_id in ("00000000000001", "00000000000002")])

    store = open_store(store_url)
    try:
        assert _version_rows(raw) == [("version", str(LATEST))]
        assert _tables(raw) == _expected_tables(raw)
        indexes = {i["name"] for i in sa.inspect(raw).get_indexes("messages")}
        assert {"messages_origin", "messages_received_at", "messages_purge_after"} <= indexes
        sent = Mailbox(store, "t").sent("alice@example.test", 10)
        assert [item.queue_id for item in sent] == ["00000000000001"]
        with raw.connect() as conn:  # step 2 filled the rows' arrival from their message
            assert conn.execute(sa.text("SELECT min(queued_at) FROM recipients")).scalar() \
                == 1000.0
    finally:
        store.close()
