"""spoolgate/store/store.py on SQLite and PostgreSQL: commit, round trip, queue listing, atomicity."""

from __future__ import annotations

import random
import time

import pytest
import sqlalchemy as sa

from spoolgate.mail.envelope import ClientInfo, Notify, Recipient, Ret
from spoolgate.mail.queueid import new_queue_id
from spoolgate.store import schema
from spoolgate.store.store import Store, StoreError
from tests.integration.store.messages import incoming

pytestmark = pytest.mark.integration


def _rows(store: Store, table: sa.Table, *order_by: sa.ColumnElement) -> list[sa.Row]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(table).order_by(*order_by)))


def _counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in (schema.messages, schema.recipients, schema.events)}


def test_commit_writes_messages_recipient_rows_and_events(store: Store) -> None:
    now = time.time()
    first = incoming(
        [Recipient("Bob@Example.TEST", frozenset({Notify.FAILURE, Notify.DELAY}),
                   "rfc822;Bob@Example.TEST"),
         Recipient("carol@example.test"),
         Recipient("dave@Other.Test", frozenset({Notify.NEVER}))],
        received_at=now, client=ClientInfo("203.0.113.9", "mx.src.test", "TLSv1.3:TLS_AES_256_GCM_SHA384"),
        ret=Ret.HDRS, envid="env-42", body_type="8BITMIME", smtputf8=True,
        events=(("accepted", "from=<alice@src.test> nrcpt=3"), ("scanned", "clean")))
    second = incoming(["erin@example.test"], sender="", received_at=now + 0.5, node="node-b")
    store.commit_incoming([first, second])

    messages = {row.queue_id: row for row in _rows(store, schema.messages)}
    assert set(messages) == {first.queue_id, second.queue_id}
    head = messages[first.queue_id]
    assert (head.received_at, head.node, head.sender, head.client_ip, head.helo, head.tls) == (
        now, "node-a", "alice@src.test", "203.0.113.9", "mx.src.test",
        "TLSv1.3:TLS_AES_256_GCM_SHA384")
    assert (head.size, head.body_type, head.smtputf8, head.ret, head.envid) == (
        len(first.data), "8BITMIME", True, "HDRS", "env-42")
    assert messages[second.queue_id].sender == ""
    assert messages[second.queue_id].smtputf8 is False
    assert messages[second.queue_id].ret is None

    recipients = _rows(store, schema.recipients, schema.recipients.c.id)
    assert [(r.queue_id, r.address, r.domain, r.notify, r.orcpt) for r in recipients] == [
        (first.queue_id, "Bob@Example.TEST", "example.test", "DELAY,FAILURE", "rfc822;Bob@Example.TEST"),
        (first.queue_id, "carol@example.test", "example.test", None, None),
        (first.queue_id, "dave@Other.Test", "other.test", "NEVER", None),
        (second.queue_id, "erin@example.test", "example.test", None, None),
    ]
    received = {first.queue_id: now, second.queue_id: now + 0.5}
    for row in recipients:
        assert (row.state, row.attempts, row.last_reply, row.lease_owner, row.lease_until) == (
            "queued", 0, None, None, None)
        assert row.next_attempt_at == received[row.queue_id]

    events = _rows(store, schema.events, schema.events.c.id)
    assert [(e.queue_id, e.at, e.node, e.kind, e.recipient, e.detail) for e in events] == [
        (first.queue_id, now, "node-a", "accepted", None, "from=<alice@src.test> nrcpt=3"),
        (first.queue_id, now, "node-a", "scanned", None, "clean"),
        (second.queue_id, now + 0.5, "node-b", "accepted", None, "from=<alice@src.test>"),
    ]


def test_show_returns_the_full_detail(store: Store) -> None:
    message = incoming(
        [Recipient("bob@example.test", frozenset({Notify.SUCCESS}), "rfc822;bob@example.test"),
         Recipient("carol@example.test")],
        client=ClientInfo("2001:db8::1", "ipv6.src.test", "TLSv1.2:ECDHE"),
        ret=Ret.FULL, envid="xyz", body_type="BINARYMIME", smtputf8=True,
        events=(("accepted", "a"), ("note", "b")))
    store.commit_incoming([message])

    detail = store.show(message.queue_id)

    assert detail is not None
    entry = detail.entry
    assert (entry.queue_id, entry.received_at, entry.sender, entry.size) == (
        message.queue_id, message.received_at, "alice@src.test", len(message.data))
    assert [(r.address, r.state, r.attempts, r.next_attempt_at, r.last_reply, r.notify, r.orcpt)
            for r in entry.recipients] == [
        ("bob@example.test", "queued", 0, message.received_at, None, "SUCCESS", "rfc822;bob@example.test"),
        ("carol@example.test", "queued", 0, message.received_at, None, None, None)]
    assert (detail.client_ip, detail.helo, detail.tls, detail.node) == (
        "2001:db8::1", "ipv6.src.test", "TLSv1.2:ECDHE", "node-a")
    assert (detail.body_type, detail.smtputf8, detail.ret, detail.envid) == (
        "BINARYMIME", True, "FULL", "xyz")
    assert [(e.at, e.node, e.kind, e.recipient, e.detail) for e in detail.events] == [
        (message.received_at, "node-a", "accepted", None, "a"),
        (message.received_at, "node-a", "note", None, "b")]


def test_show_of_an_unknown_queue_id_is_none(store: Store) -> None:
    store.commit_incoming([incoming()])
    assert store.show(new_queue_id()) is None
    assert store.message_data(new_queue_id()) is None


def test_message_bytes_round_trip_exactly(store: Store) -> None:
    every_byte = bytes(range(256))
    payloads = {
        "nul": b"Subject: nul\r\n\r\nbefore\x00after\x00\x00\r\n",
        "8bit": b"Subject: =?utf-8?q?x?=\r\n\r\n" + every_byte + "h\u00e9 \u2603\r\n".encode()
                + b"\xff\xfe\x80\r\n",
        "5mb": random.Random(5).randbytes(5 * 1024 * 1024),
        "crlf-tail": b"\r\n.\r\n\r\n",
    }
    messages = {name: incoming(data=data) for name, data in payloads.items()}
    store.commit_incoming(list(messages.values()))

    for name, message in messages.items():
        stored = store.message_data(message.queue_id)
        assert stored == payloads[name], name
        assert type(stored) is bytes
        assert store.show(message.queue_id).entry.size == len(payloads[name])


def test_list_queue_is_oldest_first_and_limited(store: Store) -> None:
    base = time.time() - 3600
    # Committed out of arrival order, and two with the same arrival time.
    newest = incoming(received_at=base + 30)
    oldest = incoming(received_at=base)
    tied = sorted([incoming(received_at=base + 10), incoming(received_at=base + 10)],
                  key=lambda m: m.queue_id)
    store.commit_incoming([newest])
    store.commit_incoming([tied[1], oldest])
    store.commit_incoming([tied[0]])

    expected = [oldest.queue_id, tied[0].queue_id, tied[1].queue_id, newest.queue_id]
    entries = store.list_queue()
    assert [e.queue_id for e in entries] == expected
    assert [e.received_at for e in entries] == [base, base + 10, base + 10, base + 30]
    assert [e.queue_id for e in store.list_queue(limit=2)] == expected[:2]
    assert [e.queue_id for e in store.list_queue(limit=1)] == expected[:1]


def test_list_queue_filters_by_state_and_domain(store: Store) -> None:
    base = time.time() - 60
    mixed = incoming(["a@example.test", "b@Other.Test"], received_at=base)
    local = incoming(["c@example.test"], received_at=base + 1)
    other = incoming(["d@other.test"], received_at=base + 2)
    store.commit_incoming([mixed, local, other])
    # The delivery stage will move rows on; here one recipient of `mixed` is deferred.
    with store.engine.begin() as conn:
        conn.execute(schema.recipients.update()
                     .where(schema.recipients.c.address == "a@example.test")
                     .values(state="deferred", attempts=1, last_reply="451 4.4.1 try later"))

    def ids(**filters) -> list[str]:
        return [e.queue_id for e in store.list_queue(**filters)]

    assert ids() == [mixed.queue_id, local.queue_id, other.queue_id]
    assert ids(state="deferred") == [mixed.queue_id]
    assert ids(state="queued") == [mixed.queue_id, local.queue_id, other.queue_id]
    assert ids(state="delivered") == []
    assert ids(domain="other.test") == [mixed.queue_id, other.queue_id]
    assert ids(domain="OTHER.test") == [mixed.queue_id, other.queue_id]
    assert ids(domain="example.test") == [mixed.queue_id, local.queue_id]
    assert ids(domain="nowhere.test") == []
    # Both filters apply to the same recipient: mixed's deferred row is not in other.test.
    assert ids(state="deferred", domain="other.test") == []
    assert ids(state="deferred", domain="example.test") == [mixed.queue_id]
    assert ids(state="queued", domain="other.test", limit=1) == [mixed.queue_id]

    # A listed message shows all its recipients, not only the matching ones.
    (entry,) = store.list_queue(state="deferred")
    assert [(r.address, r.state, r.attempts, r.last_reply) for r in entry.recipients] == [
        ("a@example.test", "deferred", 1, "451 4.4.1 try later"),
        ("b@Other.Test", "queued", 0, None)]


def test_a_batch_larger_than_one_statement_is_stored_whole(store: Store) -> None:
    """Over 2,307 recipient rows (30,000 bound parameters) split into several INSERTs."""
    batch = [incoming([f"u{n}.{i}@example.test" for i in range(12)]) for n in range(250)]
    store.commit_incoming(batch)

    assert _counts(store) == {"messages": 250, "recipients": 3000, "events": 250}
    sample = batch[-1]
    assert [r.address for r in store.show(sample.queue_id).entry.recipients] == [
        f"u249.{i}@example.test" for i in range(12)]


def test_a_batch_with_a_duplicate_queue_id_fails_whole(store: Store) -> None:
    existing = incoming(["keep@example.test"], data=b"original\r\n")
    store.commit_incoming([existing])
    before = _counts(store)

    fresh_a = incoming(["a@example.test", "b@example.test"])
    duplicate = incoming(["intruder@example.test"], queue_id=existing.queue_id, data=b"other\r\n")
    fresh_b = incoming(["c@example.test"])
    with pytest.raises(StoreError):
        store.commit_incoming([fresh_a, duplicate, fresh_b])

    assert _counts(store) == before
    assert store.show(fresh_a.queue_id) is None
    assert store.show(fresh_b.queue_id) is None
    assert store.message_data(existing.queue_id) == b"original\r\n"
    assert [r.address for r in store.show(existing.queue_id).entry.recipients] == ["keep@example.test"]

    # Two messages of one batch with the same new ID: the same, whole failure.
    twin = incoming()
    with pytest.raises(StoreError):
        store.commit_incoming([incoming(), twin, incoming(queue_id=twin.queue_id)])
    assert _counts(store) == before

    # The failure released the transaction and the write lock: the store takes the rest.
    store.commit_incoming([fresh_a, fresh_b])
    assert store.count_messages() == 3
    assert sorted(store.queue_ids()) == sorted([existing.queue_id, fresh_a.queue_id, fresh_b.queue_id])
