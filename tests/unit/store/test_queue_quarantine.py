"""spoolgate/store/queue.py on SQLite and PostgreSQL: releasing quarantine per recipient, and
events that move no row."""

from __future__ import annotations

from dataclasses import replace

from spoolgate.store.queue import Queue
from spoolgate.store.store import Store
from tests.integration.store.messages import incoming, recipient_states


def _quarantined(store: Store, *recipients: str) -> str:
    msg = replace(incoming(recipients), quarantined=True)
    store.commit_incoming([msg])
    return msg.queue_id


def test_release_of_some_recipients_leaves_the_others_in_quarantine(store: Store) -> None:
    queue = Queue(store, "node-a")
    queue_id = _quarantined(store, "Alice@example.test", "bob@example.test", "carol@example.test")

    assert queue.release_quarantine(queue_id, "released by alice@example.test",
                                    addresses=["alice@EXAMPLE.test"]) == 1

    assert recipient_states(store, queue_id) == {"Alice@example.test": "queued",
                                        "bob@example.test": "quarantined",
                                        "carol@example.test": "quarantined"}
    released = [e for e in store.show(queue_id).events if e.kind == "released"]
    assert [(e.recipient, e.detail, e.node) for e in released] == [
        ("Alice@example.test", "released by alice@example.test", "node-a")]
    assert queue.pending_rows(queue_id)[0].address == "Alice@example.test"


def test_release_of_every_recipient_writes_an_event_per_row(store: Store) -> None:
    queue = Queue(store, "node-a")
    queue_id = _quarantined(store, "alice@example.test", "bob@example.test")

    assert queue.release_quarantine(queue_id, "released by operator") == 2

    assert set(recipient_states(store, queue_id).values()) == {"queued"}
    assert sorted(e.recipient for e in store.show(queue_id).events if e.kind == "released") \
        == ["alice@example.test", "bob@example.test"]


def test_release_for_an_address_not_quarantined_moves_nothing(store: Store) -> None:
    queue = Queue(store, "node-a")
    queue_id = _quarantined(store, "alice@example.test")

    assert queue.release_quarantine(queue_id, "x", addresses=["mallory@example.test"]) == 0
    assert queue.release_quarantine(queue_id, "x", addresses=[]) == 0

    assert recipient_states(store, queue_id) == {"alice@example.test": "quarantined"}
    assert not [e for e in store.show(queue_id).events if e.kind == "released"]


def test_a_note_is_an_event_and_moves_no_row(store: Store) -> None:
    queue = Queue(store, "web-1")
    queue_id = _quarantined(store, "alice@example.test")

    queue.note(queue_id, "marked-spam", "marked as spam by alice@example.test",
               recipient="alice@example.test", now=1234.5)

    event = store.show(queue_id).events[-1]
    assert (event.kind, event.recipient, event.detail, event.node, event.at) == (
        "marked-spam", "alice@example.test", "marked as spam by alice@example.test", "web-1",
        1234.5)
    assert recipient_states(store, queue_id) == {"alice@example.test": "quarantined"}
