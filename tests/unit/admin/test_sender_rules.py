"""The console's sender rules (spoolgate/admin/actions.py list_sender, the /admin/senders
page): allow or block a message's envelope sender per domain, within the operator's
scope, audited; a bounce cannot be listed."""

from __future__ import annotations

from starlette.testclient import TestClient

from spoolgate.mail.envelope import ClientInfo, Envelope, IncomingMessage, Recipient
from spoolgate.mail.queueid import new_queue_id
from spoolgate.store.audit import AuditLog
from spoolgate.store.senders import SenderRules
from spoolgate.store.store import Store
from tests.unit.admin.test_console import (  # noqa: F401 (fixtures)
    ADMIN,
    ALICE,
    OLIVER,
    OTHER_ADMIN,
    _act,
    console,
    gateway_settings,
)
from tests.unit.webmail.conftest import csrf_of
from tests.webmail_mail import deliver, text_message


def _rules(store: Store) -> list[tuple[str, str, str, str]]:
    return [(r.scope_kind, r.scope, r.sender, r.action) for r in SenderRules(store).list()]


def test_the_quarantine_offers_the_sender_verbs(console, store: Store) -> None:
    deliver(store, text_message(ALICE), ALICE, quarantined=True)
    page = console(ADMIN).get("/admin/quarantine").text
    assert 'value="allow-sender"' in page and 'value="block-sender"' in page


def test_an_admin_allows_the_sender_in_every_recipient_domain(console, store: Store) -> None:
    queue_id = deliver(store, text_message(ALICE), ALICE, OLIVER, quarantined=True)
    done = _act(console(ADMIN), "allow-sender", queue_id)

    assert "n=2" in done.headers["location"]
    assert _rules(store) == [("domain", "example.test", "bob@partner.test", "allow"),
                             ("domain", "other.test", "bob@partner.test", "allow")]
    entries = [(e.actor, e.action, e.target, e.detail) for e in AuditLog(store).recent()]
    assert (ADMIN, "sender.allow", "bob@partner.test",
            f"domain other.test (from message {queue_id})") in entries


def test_a_domain_admin_lists_the_sender_for_their_domain_only(console, store: Store) -> None:
    queue_id = deliver(store, text_message(ALICE), ALICE, OLIVER, quarantined=True)
    client = console(OTHER_ADMIN)
    _act(client, "block-sender", queue_id)
    assert _rules(store) == [("domain", "other.test", "bob@partner.test", "block")]

    page = client.get("/admin/senders").text
    assert "bob@partner.test" in page and "Remove" in page


def test_a_bounce_is_not_listed(console, store: Store) -> None:
    queue_id = new_queue_id()
    envelope = Envelope("", (Recipient(ALICE),), ClientInfo("192.0.2.7", "mx"))
    store.commit_incoming([IncomingMessage(queue_id, envelope, text_message(ALICE), 0.0, "n",
                                           quarantined=True)])
    done = _act(console(ADMIN), "block-sender", queue_id)
    assert "n=0" in done.headers["location"] and _rules(store) == []


def _remove(client: TestClient, rule_id: int):
    token = csrf_of(client.get("/admin/senders").text)
    return client.post("/admin/senders/remove", data={"csrf": token, "id": str(rule_id)})


def test_rules_are_removed_within_scope_and_audited(console, store: Store) -> None:
    rules = SenderRules(store)
    mine = rules.add("domain", "other.test", "spam.example", "block", ADMIN, 1.0)
    theirs = rules.add("domain", "example.test", "spam.example", "block", ADMIN, 1.0)
    users = rules.add("user", ALICE, "news.example", "allow", ALICE, 1.0)
    domain_admin = console(OTHER_ADMIN)

    listing = domain_admin.get("/admin/senders").text
    assert "other.test" in listing and "news.example" not in listing
    assert _remove(domain_admin, theirs.id).status_code == 404
    assert _remove(domain_admin, users.id).status_code == 404
    done = _remove(domain_admin, mine.id)

    assert done.headers["location"] == "/admin/senders?removed=1"
    assert [r.id for r in rules.list()] == [theirs.id, users.id]
    assert AuditLog(store).recent()[0].action == "sender.block.remove"
    assert "news.example" in console(ADMIN).get("/admin/senders").text
