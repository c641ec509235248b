"""spoolgate/store/senders.py and spoolgate/store/digest.py on SQLite and PostgreSQL: sender
rules per scope, the digest's opt-in, its compare-and-set claim, its key and used links."""

from __future__ import annotations

import pytest

from spoolgate.store.accounts import Accounts
from spoolgate.store.digest import DigestStore
from spoolgate.store.senders import SenderRules, normalise_sender
from spoolgate.store.store import Store


def test_a_rule_is_stored_lower_case_and_adding_it_again_changes_its_action(
        store: Store) -> None:
    rules = SenderRules(store)
    first = rules.add("user", "Alice@Example.test", "News@Shop.EXAMPLE", "allow", "alice", 10.0)
    assert (first.scope, first.sender, first.action) == (
        "alice@example.test", "news@shop.example", "allow")

    again = rules.add("user", "alice@example.test", "news@shop.example", "block", "alice", 20.0)

    assert again.id == first.id and (again.action, again.created_at) == ("block", 20.0)
    assert [(r.sender, r.action) for r in rules.list("user", ["alice@example.test"])] == [
        ("news@shop.example", "block")]


def test_rules_are_listed_and_removed_only_within_their_scope(store: Store) -> None:
    rules = SenderRules(store)
    mine = rules.add("user", "alice@example.test", "spam.example", "block", "alice", 1.0)
    rules.add("user", "bob@example.test", "friend@pals.example", "allow", "bob", 1.0)
    domain = rules.add("domain", "example.test", "partner.example", "allow", "admin", 1.0)

    assert [r.sender for r in rules.list("user", ["alice@example.test"])] == ["spam.example"]
    assert [r.id for r in rules.list("domain")] == [domain.id]
    assert rules.remove(mine.id, "user", ["bob@example.test"]) is None  # not bob's
    assert rules.remove(domain.id, "user") is None                      # not a user rule
    assert rules.remove(mine.id, "user", ["alice@example.test"]) == mine
    assert rules.remove(mine.id) is None
    assert len(rules.list()) == 2


def test_the_rules_of_a_message_are_its_domains_and_its_recipients(store: Store) -> None:
    rules = SenderRules(store)
    rules.add("domain", "example.test", "partner.example", "allow", "admin", 1.0)
    rules.add("domain", "other.test", "evil.example", "block", "admin", 1.0)
    rules.add("user", "alice@example.test", "news@shop.example", "allow", "alice", 1.0)
    rules.add("user", "carol@example.test", "x.example", "block", "carol", 1.0)

    found = rules.for_recipients(["Alice@example.test"])

    assert dict(found.domain_allow) == {"example.test": frozenset({"partner.example"})}
    assert dict(found.domain_block) == {}
    assert dict(found.user_allow) == {"alice@example.test": frozenset({"news@shop.example"})}
    assert dict(found.user_block) == {}
    assert len(rules.snapshot()) == 4


@pytest.mark.parametrize("text", ["", "<>", "alice", "@example.org", "a b@example.org",
                                  "example."])
def test_a_sender_must_be_an_address_or_a_domain(store: Store, text: str) -> None:
    with pytest.raises(ValueError):
        normalise_sender(text)
    with pytest.raises(ValueError):
        SenderRules(store).add("user", "alice@example.test", text, "allow", "alice", 1.0)


def test_subscribers_are_enabled_users_who_opted_in(store: Store) -> None:
    accounts = Accounts(store)
    for email in ("alice@example.test", "bob@example.test", "carol@example.test"):
        accounts.add_user(email, "$argon2id$x", now=1.0)
    assert accounts.set_digest("alice@example.test", True)
    assert accounts.set_digest("carol@example.test", True)
    accounts.set_disabled("carol@example.test", True)
    assert not accounts.set_digest("nobody@example.test", True)

    digests = DigestStore(store)
    assert [(s.email, s.sent_at) for s in digests.subscribers()] == [
        ("alice@example.test", None)]
    assert accounts.get_user("alice@example.test").digest is True


def test_only_one_claim_of_a_digest_wins_and_an_unclaim_makes_it_due_again(
        store: Store) -> None:
    Accounts(store).add_user("alice@example.test", "$argon2id$x", now=1.0)
    Accounts(store).set_digest("alice@example.test", True)
    digests, other_node = DigestStore(store), DigestStore(store)

    assert digests.claim("alice@example.test", None, 100.0)
    assert not other_node.claim("alice@example.test", None, 100.5)  # read the same None
    assert digests.subscribers()[0].sent_at == 100.0
    assert digests.claim("alice@example.test", 100.0, 200.0)

    digests.unclaim("alice@example.test", 200.0, 100.0)
    assert digests.subscribers()[0].sent_at == 100.0


def test_the_link_key_is_made_once_and_a_link_is_used_once(store: Store) -> None:
    digests = DigestStore(store)
    key = digests.secret()
    assert len(key) == 32 and DigestStore(store).secret() == key

    assert not digests.token_used("h1")
    assert digests.use_token("h1", expires_at=500.0, now=100.0)
    assert not digests.use_token("h1", expires_at=500.0, now=101.0)
    assert digests.token_used("h1")
    digests.forget_token("h1")
    assert digests.use_token("h1", expires_at=500.0, now=102.0)
    assert digests.use_token("h2", expires_at=900.0, now=600.0)  # h1 expired: cleared
    assert not digests.token_used("h1")
