"""GET /search of spoolgate/webmail on a real SQLite store: signed in only, the user's own
hits rendered like the list, unindexed mail indexed first, hostile text escaped."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from spoolgate.store.store import Store
from tests.unit.webmail.conftest import Clock
from tests.webmail_mail import attachment_message, deliver, text_message

ALICE, BOB = "alice@example.test", "bob@example.test"


def test_search_needs_a_session(client: TestClient) -> None:
    answer = client.get("/search?q=lunch")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")


def test_search_finds_the_users_unindexed_mail_only(alice: TestClient, store: Store,
                                                    clock: Clock) -> None:
    lunch = deliver(store, text_message(ALICE, subject="Lunch on Friday"), ALICE,
                    at=clock.now - 60)
    report = deliver(store, attachment_message(ALICE), ALICE, at=clock.now - 30)
    bobs = deliver(store, text_message(BOB, subject="Lunch for Bob"), BOB)
    page = alice.get("/search", params={"q": "lunch"})
    assert page.status_code == 200
    assert lunch in page.text and report not in page.text and bobs not in page.text
    assert "Lunch on Friday" in page.text and 'class="message unread"' in page.text
    attached = alice.get("/search", params={"q": "has:attachment"}).text
    assert report in attached and lunch not in attached
    assert re.search(r'<input type="search" id="search-q" name="q" value="has:attachment"',
                     attached)


def test_no_hits_and_hostile_text_are_answered_calmly(alice: TestClient, store: Store) -> None:
    deliver(store, text_message(ALICE, subject="Lunch"), ALICE)
    page = alice.get("/search", params={"q": '<script>x</script> NEAR( " OR *'})
    assert page.status_code == 200
    assert "No messages match" in page.text and "<script>x" not in page.text
    assert alice.get("/search").status_code == 200


def test_older_results_are_paged(alice: TestClient, store: Store, clock: Clock) -> None:
    ids = [deliver(store, text_message(ALICE, subject="Paged"), ALICE, at=clock.now - 100 + n)
           for n in range(60)]
    first = alice.get("/search", params={"q": "paged"}).text
    older = re.search(r'href="(/search\?q=paged&amp;before=[^"]+)"', first)
    assert older and ids[59] in first and ids[9] not in first
    second = alice.get(older.group(1).replace("&amp;", "&")).text
    assert ids[9] in second and ids[59] not in second


def test_mail_arriving_after_a_search_is_found_by_the_next(alice: TestClient, store: Store,
                                                           clock: Clock) -> None:
    first = deliver(store, text_message(ALICE, subject="Quokka one"), ALICE, at=clock.now - 60)
    assert first in alice.get("/search", params={"q": "quokka"}).text
    clock.now += 900  # past the progress's skew margin, within the session
    second = deliver(store, text_message(ALICE, subject="Quokka two"), ALICE, at=clock.now)
    page = alice.get("/search", params={"q": "quokka"}).text
    assert first in page and second in page
