"""spoolgate/store/console.py on SQLite and PostgreSQL: scope, filters, tracking, figures."""

from __future__ import annotations

import time

import pytest

from spoolgate.store import schema
from spoolgate.store.console import Console, QueueFilter, TrackingQuery, scope_of
from spoolgate.store.queue import Queue
from spoolgate.store.store import Store
from tests.webmail_mail import deliver, text_message

ALICE, OLIVER = "alice@example.test", "oliver@other.test"
OTHER = frozenset({"other.test"})


def _refusal(store: Store, at: float, recipient: str, reason: str, subject: str = "") -> None:
    with store.writing() as conn:
        conn.execute(schema.rejections.insert().values(
            at=at, node="n", client_ip="198.51.100.9", helo="spam.test",
            sender="x@spam.test", recipient=recipient, domain=recipient.rpartition("@")[2],
            stage="rcpt", reason=reason, reply="550 5.7.1 relay denied", subject=subject,
            message_id=""))


def test_scope_limits_rows_and_recipients(store: Store) -> None:
    shared = deliver(store, text_message(OLIVER, subject="Both"), ALICE, OLIVER)
    ours = deliver(store, text_message(ALICE), ALICE)
    console = Console(store)
    every = console.queue(QueueFilter(), None)
    assert sorted((r.queue_id, r.address) for r in every) == sorted(
        [(shared, ALICE), (shared, OLIVER), (ours, ALICE)])
    assert [(r.queue_id, r.address) for r in console.queue(QueueFilter(), OTHER)] == \
        [(shared, OLIVER)]
    assert console.queue(QueueFilter(), frozenset()) == []
    assert console.in_scope(shared, OTHER) and not console.in_scope(ours, OTHER)
    assert console.count(QueueFilter(), OTHER) == 1 and console.count(QueueFilter(), None) == 3
    assert every[0].subject == "Both"


def test_filters_by_state_age_and_text(store: Store) -> None:
    now = time.time()
    old = deliver(store, text_message(ALICE), ALICE, at=now - 3600)
    new = deliver(store, text_message(OLIVER), OLIVER, at=now - 10)
    Queue(store, "t").hold(queue_id=old)
    console = Console(store)

    def ids(**filters) -> list[str]:
        return [r.queue_id for r in console.queue(QueueFilter(**filters), None, now=now)]

    assert ids(states=("held",)) == [old]
    assert ids(older_than=600) == [old] and ids(newer_than=600) == [new]
    assert ids(recipient="OLIVER@other") == [new]
    assert ids(sender="partner") == [old, new]
    assert ids(sender="%") == [] and ids(sender="_") == []  # wildcards are plain text


def test_events_leave_out_other_domains_recipients(store: Store) -> None:
    shared = deliver(store, text_message(OLIVER), ALICE, OLIVER)
    Queue(store, "t").hold(queue_id=shared)
    kinds = [(e.kind, e.recipient) for e in Console(store).events(shared, OTHER)]
    assert ("held", OLIVER) in kinds and ("held", ALICE) not in kinds
    assert ("accepted", None) in kinds


def test_tracking_joins_messages_and_refusals(store: Store) -> None:
    now = time.time()
    stored = deliver(store, text_message(ALICE, subject="Invoice 7"), ALICE, at=now - 50)
    _refusal(store, now - 40, "nobody@example.test", "unknown-user", "Invoice 7 again")
    _refusal(store, now - 30, "oliver@other.test", "relay")
    console = Console(store)
    found = console.track(TrackingQuery(subject="invoice"), None)
    assert [(t.queue_id, t.reason) for t in found] == [(None, "unknown-user"), (stored, "")]
    assert found[1].recipients == ((ALICE, "queued"),)
    assert found[0].recipients == (("nobody@example.test", "rejected"),)
    assert [t.reason for t in console.track(TrackingQuery(client_ip="198.51.100.9"), OTHER)] \
        == ["relay"]
    assert [t.queue_id for t in console.track(TrackingQuery(queue_id=stored.lower()), None)] \
        == [stored]
    assert console.track(TrackingQuery(since=now - 35), None)[0].reason == "relay"
    assert console.track(TrackingQuery(until=now - 45), None)[0].queue_id == stored


def test_traffic_and_verdicts_count_the_store(store: Store) -> None:
    now = time.time()
    start = now - 600
    for offset in (590, 530, 520):
        deliver(store, text_message(ALICE), ALICE, at=now - offset)
    deliver(store, text_message(OLIVER), OLIVER, at=now - 100, quarantined=True)
    _refusal(store, now - 100, "x@other.test", "spam")
    points = Console(store).traffic(start, now, 60, None)
    assert len(points) == 10
    assert [p.accepted for p in points] == [1, 2, 0, 0, 0, 0, 0, 0, 1, 0]
    assert [p.rejected for p in points][8] == 1
    assert sum(p.accepted for p in Console(store).traffic(start, now, 60, OTHER)) == 1
    mix = Console(store).verdicts(start, None)
    assert (mix["spam"], mix["rejected"], mix["quarantined"], mix["virus"]) == (2, 1, 1, 0)
    depth = Console(store).depth(None, now)
    assert [(d, s, n) for d, s, n, _ in depth] == [("example.test", "queued", 3),
                                                   ("other.test", "quarantined", 1)]
    assert depth[0][3] == pytest.approx(590, abs=5)


@pytest.mark.parametrize(("role", "domains", "scope"), [
    ("admin", (), None), ("domain-admin", ("Other.test",), OTHER), ("user", ("x",), frozenset()),
])
def test_scope_of_roles(role: str, domains: tuple[str, ...], scope) -> None:
    assert scope_of(role, domains) == scope


def test_why_each_message_was_quarantined(store: Store) -> None:
    spam = deliver(store, text_message(ALICE), ALICE, quarantined=True)
    plain = deliver(store, text_message(ALICE), ALICE)
    with store.writing() as conn:
        conn.execute(schema.events.insert().values(
            queue_id=plain, at=time.time(), node="n", kind="scanned",
            detail="action=quarantine score=3 symbols=- viruses=Eicar-Signature scanners=x"))
    why = Console(store).verdicts_of([spam, plain, "NOSUCHMESSAGE0"])
    assert why == {spam: "score 12: SPAM_WORDS(12)", plain: "virus Eicar-Signature"}
