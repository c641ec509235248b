"""spoolgate/store/mailbox.py on SQLite and PostgreSQL: folders, paging, flags, trash, restore."""

from __future__ import annotations

import pytest

from spoolgate.mail.envelope import IncomingMessage
from spoolgate.mail.states import RecipientState as S
from spoolgate.store.mailbox import Folder, IndexEntry, Mailbox
from spoolgate.store.queue import Outcome, Queue
from spoolgate.store.store import Store
from tests.integration.store.messages import incoming

ALICE = "alice@example.test"


@pytest.fixture
def mailbox(store: Store) -> Mailbox:
    return Mailbox(store, "web-1")


def _put(store: Store, *recipients: str, at: float, quarantined: bool = False) -> str:
    msg = incoming(recipients, received_at=at)
    if quarantined:
        msg = IncomingMessage(msg.queue_id, msg.envelope, msg.data, msg.received_at, msg.node,
                              msg.events, quarantined=True)
    store.commit_incoming([msg])
    return msg.queue_id


def _states(store: Store, queue_id: str) -> dict[str, str]:
    detail = store.show(queue_id)
    return {r.address: r.state for r in detail.entry.recipients}


def test_a_user_sees_only_their_own_messages_newest_first(store: Store, mailbox: Mailbox) -> None:
    old = _put(store, "Alice@Example.test", at=100.0)
    new = _put(store, ALICE, "bob@example.test", at=200.0)
    _put(store, "bob@example.test", at=300.0)
    spam = _put(store, ALICE, at=150.0, quarantined=True)
    assert [i.queue_id for i in mailbox.page(ALICE, Folder.INBOX, 10)] == [new, old]
    assert [i.queue_id for i in mailbox.page(ALICE, Folder.QUARANTINE, 10)] == [spam]
    assert mailbox.page(ALICE, Folder.TRASH, 10) == []
    assert mailbox.item(ALICE, new) is not None
    assert mailbox.item("carol@example.test", new) is None
    assert mailbox.count(ALICE, Folder.INBOX) == 2


def test_paging_walks_back_by_cursor(store: Store, mailbox: Mailbox) -> None:
    ids = [_put(store, ALICE, at=100.0 + n) for n in range(5)]
    first = mailbox.page(ALICE, Folder.INBOX, 2)
    second = mailbox.page(ALICE, Folder.INBOX, 2, before=first[-1].cursor)
    third = mailbox.page(ALICE, Folder.INBOX, 2, before=second[-1].cursor)
    assert [i.queue_id for i in first + second + third] == ids[::-1]


def test_index_and_seen_flags_are_kept(store: Store, mailbox: Mailbox) -> None:
    queue_id = _put(store, ALICE, at=100.0)
    item = mailbox.page(ALICE, Folder.INBOX, 10)[0]
    assert item.index is None and not item.seen
    entry = IndexEntry("Hi", "Bob <b@x>", ALICE, "", "today", "hello", True, ("a.pdf", "b.png"))
    mailbox.save_index({queue_id: entry, "NOSUCHMESSAGE": entry})
    mailbox.save_index({queue_id: entry})  # a second writer is harmless
    mailbox.mark_seen(ALICE, queue_id, now=150.0)
    item = mailbox.page(ALICE, Folder.INBOX, 10)[0]
    assert item.index == entry and item.seen
    assert mailbox.count(ALICE, Folder.INBOX, unseen_only=True) == 0
    mailbox.mark_seen(ALICE, queue_id, now=160.0, seen=False)
    assert mailbox.count(ALICE, Folder.INBOX, unseen_only=True) == 1


def test_trash_stops_a_waiting_delivery_and_restore_requeues_it(
        store: Store, mailbox: Mailbox) -> None:
    queue_id = _put(store, ALICE, "bob@example.test", at=100.0)
    outcome = mailbox.trash(ALICE, queue_id, now=200.0)
    assert outcome.trashed and outcome.stopped and not outcome.in_flight
    assert _states(store, queue_id) == {ALICE: "deleted", "bob@example.test": "queued"}
    events = [(e.kind, e.recipient, e.detail) for e in store.show(queue_id).events]
    assert ("deleted", ALICE, "deleted by the user in the webmail") in events
    assert [i.queue_id for i in mailbox.page(ALICE, Folder.TRASH, 10)] == [queue_id]
    assert mailbox.page(ALICE, Folder.INBOX, 10) == []
    assert Queue(store, "n").claim_due(now=300.0, limit=10, lease=60)[0].address == "bob@example.test"

    assert mailbox.restore(ALICE, queue_id, now=400.0)
    assert _states(store, queue_id)[ALICE] == "queued"
    assert [i.queue_id for i in mailbox.page(ALICE, Folder.INBOX, 10)] == [queue_id]
    claimed = Queue(store, "n").claim_due(now=400.0, limit=10, lease=60)
    assert [c.address for c in claimed] == [ALICE]
    assert not mailbox.restore(ALICE, queue_id, now=500.0)


def test_a_row_being_delivered_cannot_be_stopped(store: Store, mailbox: Mailbox) -> None:
    queue_id = _put(store, ALICE, at=100.0)
    Queue(store, "n").claim_due(now=100.0, limit=10, lease=60)
    outcome = mailbox.trash(ALICE, queue_id, now=110.0)
    assert outcome.trashed and not outcome.stopped and outcome.in_flight
    assert _states(store, queue_id) == {ALICE: "delivering"}
    assert mailbox.empty_trash(ALICE, now=120.0) == 0  # stays in the trash while in flight


def test_empty_trash_deletes_and_lets_the_purge_remove_it(store: Store, mailbox: Mailbox) -> None:
    queue = Queue(store, "n")
    kept = _put(store, ALICE, at=100.0)
    delivered = _put(store, ALICE, at=110.0)
    row = queue.claim_due(now=120.0, limit=10, lease=60)
    row = [r for r in row if r.queue_id == delivered][0]
    queue.record([Outcome(row.row_id, delivered, ALICE, S.DELIVERED, "250 ok", 0.0,
                          event="delivered", retention=3600.0)], now=130.0)
    queue.release_leases(now=1000.0, owner="n")
    assert mailbox.trash(ALICE, delivered, now=140.0).trashed
    assert mailbox.empty_trash(ALICE, now=150.0) == 1
    assert _states(store, delivered) == {ALICE: "deleted"}
    assert mailbox.page(ALICE, Folder.TRASH, 10) == []
    assert mailbox.item(ALICE, delivered) is None
    assert queue.purge(now=150.0 + 3601) == 1  # the delivered copy's retention clock stays
    assert store.message_data(delivered) is None and store.message_data(kept) is not None


def test_route_status_for_the_banner(store: Store, mailbox: Mailbox) -> None:
    assert mailbox.route("smtp://10.0.0.1:25") is None
    Queue(store, "n").route_failed("smtp://10.0.0.1:25", "refused", now=42.0, down_after=1,
                                   probe_delay=60.0)
    route = mailbox.route("smtp://10.0.0.1:25")
    assert route.state == "down" and route.since == 42.0


def test_counting_stops_at_the_cap(store: Store, mailbox: Mailbox) -> None:
    for n in range(4):
        _put(store, ALICE, at=100.0 + n)
    assert mailbox.count(ALICE, Folder.INBOX, unseen_only=True, cap=3) == 3
    assert mailbox.count(ALICE, Folder.INBOX, unseen_only=True, cap=10) == 4
    assert mailbox.count(ALICE, Folder.INBOX, unseen_only=True) == 4
