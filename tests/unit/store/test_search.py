"""spoolgate/store/search.py on SQLite and PostgreSQL: what search finds, and what never."""

from __future__ import annotations

import time
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from spoolgate.store import search
from spoolgate.store.mailbox import Mailbox
from spoolgate.store.queue import Queue
from spoolgate.store.search import Search
from spoolgate.store.store import Store, open_store
from spoolgate.webmail.search import index_pending, parse_query
from tests.webmail_mail import attachment_message, deliver, text_message

ALICE, BOB = "alice@example.test", "bob@example.test"


@pytest.fixture(params=["few hits", "walk"])
def store(store_url: str, request: pytest.FixtureRequest,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """Each store twice on SQLite: starting from the FTS5 hits, and walking the mailbox
    (the plan for words found in many messages)."""
    if request.param == "walk":
        monkeypatch.setattr(search, "FEW_HITS", -1)
    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture
def mail(store: Store) -> dict[str, str]:
    now = time.time()
    ids = {
        "lunch": deliver(store, text_message(ALICE, subject="Lunch on Friday",
                                             body="Shall we meet at the harbour café?\n",
                                             sender="Dana Scully <dana@fbi.test>"),
                         ALICE, at=now - 300),
        "report": deliver(store, attachment_message(ALICE, filename="Kvartalsrapport.pdf"),
                          ALICE, at=now - 200),
        "bobs": deliver(store, text_message(BOB, subject="Lunch for Bob",
                                            body="harbour secrets\n"), BOB, at=now - 100),
    }
    for email in (ALICE, BOB):
        assert index_pending(store, Mailbox(store, "t"), email, 10) is False
    return ids


def _find(store: Store, text: str, email: str = ALICE) -> list[str]:
    return [i.queue_id for i in Search(store).find(email, parse_query(text, ZoneInfo("UTC")), 10)]


@pytest.mark.parametrize(("text", "names"), [
    ("lunch", ["lunch"]), ("HARBOUR", ["lunch"]), ("café", ["lunch"]),
    ('"meet at the harbour"', ["lunch"]), ('"harbour meet"', []),
    ("from:dana", ["lunch"]), ("from:fbi.test", ["lunch"]), ("dana@fbi.test", ["lunch"]),
    ("from:carol", ["report"]), ("subject:lunch", ["lunch"]), ("subject:harbour", []),
    ("to:alice", ["report", "lunch"]), ("kvartalsrapport", ["report"]),
    ("filename:kvartalsrapport", ["report"]), ("has:attachment", ["report"]),
    ("has:attachment lunch", []), ("lunch report", []), ("secrets", []),
])
def test_words_are_found_where_they_are(store: Store, mail: dict[str, str], text: str,
                                        names: list[str]) -> None:
    assert _find(store, text) == [mail[name] for name in names]


def test_another_users_messages_are_never_found(store: Store, mail: dict[str, str]) -> None:
    assert _find(store, "lunch", BOB) == [mail["bobs"]]
    assert _find(store, "report", BOB) == []
    assert _find(store, "secrets", "carol@example.test") == []


@pytest.mark.parametrize("text", ['"', '"*"', "*", "NEAR(lunch", "lunch OR report", "-lunch",
                                  "^lunch", "lunch*", "subject:a\"b", "message_search:lunch",
                                  "body_text:x", "'; drop table messages; --", "{subject}:x"])
def test_hostile_queries_are_only_text(store: Store, mail: dict[str, str], text: str) -> None:
    found = _find(store, text)
    assert set(found) <= {mail["lunch"]}
    assert _find(store, "lunch") == [mail["lunch"]]


def test_trashed_and_purged_messages_are_gone(store: Store, mail: dict[str, str]) -> None:
    mailbox = Mailbox(store, "t")
    mailbox.trash(ALICE, mail["lunch"], time.time())
    assert _find(store, "lunch") == []
    mailbox.empty_trash(ALICE, time.time())
    Queue(store, "t").delete(mail["bobs"])
    assert Queue(store, "t").purge(time.time() + 1) == 2
    assert _find(store, "lunch", BOB) == [] and _find(store, "harbour", BOB) == []
    with store.reading() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM message_index")).scalar() == 1
        if store.backend == "sqlite":  # the FTS5 index forgot them too, not just the join
            hits = conn.execute(sa.text("SELECT count(*) FROM message_search "
                                        "WHERE message_search MATCH 'harbour'")).scalar()
            assert hits == 0


def test_unindexed_messages_are_indexed_newest_first_in_batches(store: Store) -> None:
    ids = [deliver(store, text_message(ALICE, subject=f"Batch {n}"), ALICE, at=1000.0 + n)
           for n in range(5)]
    mailbox = Mailbox(store, "t")
    assert Search(store).unindexed(ALICE, 10) == ids[::-1]
    assert index_pending(store, mailbox, ALICE, 2) is True
    assert _find(store, "batch") == [ids[4], ids[3]]
    assert index_pending(store, mailbox, ALICE, 3) is False
    assert _find(store, "batch") == ids[::-1]


def test_results_are_paged_by_cursor(store: Store) -> None:
    ids = [deliver(store, text_message(ALICE, subject="Paged"), ALICE, at=1000.0 + n)
           for n in range(4)]
    index_pending(store, Mailbox(store, "t"), ALICE, 10)
    query = parse_query("paged", ZoneInfo("UTC"))
    first = Search(store).find(ALICE, query, 2)
    second = Search(store).find(ALICE, query, 2, first[-1].cursor)
    assert [i.queue_id for i in first + second] == ids[::-1]
