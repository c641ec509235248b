"""A user's own sender rules in the webmail (spoolgate/webmail/senders.py): the reader's
"Always allow sender" / "Block sender", the /senders list and its remove button."""

from __future__ import annotations

from starlette.testclient import TestClient

from spoolgate.mail.envelope import ClientInfo, Envelope, IncomingMessage, Recipient
from spoolgate.mail.queueid import new_queue_id
from spoolgate.store.senders import SenderRules
from spoolgate.store.store import Store
from tests.unit.webmail.conftest import csrf_of
from tests.webmail_mail import deliver, text_message

ALICE, BOB = "alice@example.test", "bob@example.test"


def _post(client: TestClient, path: str, **data: str) -> object:
    return client.post(path, data={"csrf": csrf_of(client.get("/inbox").text), **data})


def test_the_reader_allows_the_envelope_sender_for_this_user_only(alice: TestClient,
                                                                  store: Store) -> None:
    queue_id = deliver(store, text_message(ALICE), ALICE)
    reader = alice.get(f"/m/{queue_id}").text
    assert "Always allow sender" in reader and "Block sender" in reader

    page = _post(alice, f"/m/{queue_id}/allow-sender")

    assert page.headers["location"] == f"/m/{queue_id}?notice=sender-allowed"
    assert "Sender allowed" in alice.get(page.headers["location"]).text
    assert [(r.scope_kind, r.scope, r.sender, r.action) for r in SenderRules(store).list()] == [
        ("user", ALICE, "bob@partner.test", "allow")]


def test_blocking_replaces_an_allow_and_the_list_page_removes_it(alice: TestClient,
                                                                 store: Store) -> None:
    queue_id = deliver(store, text_message(ALICE), ALICE)
    _post(alice, f"/m/{queue_id}/allow-sender")
    _post(alice, f"/m/{queue_id}/block-sender")
    (rule,) = SenderRules(store).list()
    assert rule.action == "block"

    listing = alice.get("/senders")
    assert "bob@partner.test" in listing.text and "Block" in listing.text
    done = _post(alice, "/senders/remove", id=str(rule.id))

    assert done.headers["location"] == "/senders?notice=removed"
    assert SenderRules(store).list() == []
    assert "No senders allowed or blocked." in alice.get("/senders").text


def test_another_users_message_or_rule_is_a_404(alice: TestClient, store: Store) -> None:
    bobs = deliver(store, text_message(BOB), BOB)
    assert _post(alice, f"/m/{bobs}/block-sender").status_code == 404
    rule = SenderRules(store).add("user", BOB, "friend@pals.example", "allow", BOB, 1.0)
    assert "friend@pals.example" not in alice.get("/senders").text
    assert _post(alice, "/senders/remove", id=str(rule.id)).status_code == 404
    assert _post(alice, "/senders/remove", id="nope").status_code == 404
    assert len(SenderRules(store).list()) == 1


def test_a_bounce_has_no_sender_to_list(alice: TestClient, store: Store) -> None:
    queue_id = new_queue_id()
    envelope = Envelope("", (Recipient(ALICE),), ClientInfo("192.0.2.7", "mx"))
    store.commit_incoming([IncomingMessage(queue_id, envelope, text_message(ALICE), 0.0, "n")])
    assert "Always allow sender" not in alice.get(f"/m/{queue_id}").text
    page = _post(alice, f"/m/{queue_id}/allow-sender")
    assert page.headers["location"] == f"/m/{queue_id}?alert=no-sender"
    assert SenderRules(store).list() == []
