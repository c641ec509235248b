"""The sender rules kept in the store, as the scan policy applies them
(spoolgate/intake/scanning.py, spoolgate/scan/policy.py): a domain's rules are its lists;
a user's count only when every recipient agrees; allow never beats a DMARC fail; the rules
are cached, reloaded after their TTL, and kept when the store fails."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from spoolgate.intake.scanning import Scanning, ScanRefusal, SenderRuleCache
from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mail.verdict import Action, AuthResult, Findings
from spoolgate.scan.base import ScanRequest
from spoolgate.scan.pipeline import ScanPipeline
from spoolgate.scan.policy import ScanPolicy, unanimous
from spoolgate.store.senders import RuleSet, SenderRules
from spoolgate.store.store import Store, StoreError, open_store

ALICE, BOB = "alice@example.test", "bob@example.test"
SENDER = "news@shop.example"
DATA = (f"From: Shop <{SENDER}>\r\nTo: {ALICE}\r\nSubject: offers\r\n\r\nBuy now.\r\n"
        ).encode()


class ScoreScanner:
    """Scores every message 12 (quarantine under the default policy), optionally with a
    DMARC fail: the policy, not the scanner, is what these tests look at."""

    name = "score"

    def __init__(self, dmarc_fail: bool = False) -> None:
        self.dmarc_fail = dmarc_fail

    async def scan(self, request: ScanRequest, budget: float) -> Findings:
        auth = (AuthResult("dmarc", "fail", properties=(("header.from", "shop.example"),)),)
        return Findings(self.name, 12.0, authentication=auth if self.dmarc_fail else ())


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    opened = open_store(sqlite_url)
    yield opened
    opened.close()


def _scanning(store: Store, dmarc_fail: bool = False) -> Scanning:
    return Scanning(ScanPipeline([ScoreScanner(dmarc_fail)], 30.0),
                    {"example.test": ScanPolicy(), "other.test": ScanPolicy()},
                    SenderRules(store).snapshot)


def _verdict(scanning: Scanning, *recipients: str, sender: str = SENDER):
    envelope = Envelope(sender, tuple(Recipient(r) for r in recipients),
                        ClientInfo("192.0.2.7", "mx.shop.example"))
    return asyncio.run(scanning.verdict(envelope, DATA, "Q1"))


def _rule(store: Store, scope_kind: str, scope: str, sender: str, action: str) -> None:
    SenderRules(store).add(scope_kind, scope, sender, action, "test", 1.0)


def test_without_rules_the_score_decides(store: Store) -> None:
    assert _verdict(_scanning(store), ALICE).action is Action.QUARANTINE


def test_a_domain_allow_rule_acts_as_the_domains_allow_list(store: Store) -> None:
    _rule(store, "domain", "example.test", "shop.example", "allow")
    verdict = _verdict(_scanning(store), ALICE, BOB)
    assert verdict.action is Action.PASS and "allow list (shop.example)" in verdict.reason
    # Merged before the strictest policy: the other domain did not allow it.
    assert _verdict(_scanning(store), ALICE, "carol@other.test").action is Action.QUARANTINE


def test_a_domain_block_rule_refuses_in_the_session(store: Store) -> None:
    _rule(store, "domain", "other.test", SENDER, "block")
    scanning = _scanning(store)
    envelope = Envelope(SENDER, (Recipient(ALICE), Recipient("carol@other.test")),
                        ClientInfo("192.0.2.7", "mx.shop.example"))
    with pytest.raises(ScanRefusal) as refused:
        asyncio.run(scanning.judge(envelope, DATA, "Q1"))
    assert refused.value.reason == "policy" and refused.value.reply.code == 550


def test_a_users_allow_counts_only_when_every_recipient_allows_the_sender(
        store: Store) -> None:
    _rule(store, "user", ALICE, SENDER, "allow")
    assert _verdict(_scanning(store), ALICE).action is Action.PASS
    assert _verdict(_scanning(store), ALICE, BOB).action is Action.QUARANTINE

    _rule(store, "user", BOB, "shop.example", "allow")  # a domain entry matches too
    verdict = _verdict(_scanning(store), ALICE, BOB)
    assert verdict.action is Action.PASS


def test_a_users_allow_never_passes_a_forged_from(store: Store) -> None:
    _rule(store, "user", ALICE, SENDER, "allow")
    assert _verdict(_scanning(store, dmarc_fail=True), ALICE).action is Action.QUARANTINE


def test_a_users_block_refuses_only_when_every_recipient_blocks(store: Store) -> None:
    _rule(store, "user", ALICE, SENDER, "block")
    assert _verdict(_scanning(store), ALICE).action is Action.REJECT
    assert _verdict(_scanning(store), ALICE, BOB).action is Action.QUARANTINE
    _rule(store, "user", BOB, SENDER, "block")
    assert _verdict(_scanning(store), ALICE, BOB).action is Action.REJECT


def test_unanimity_needs_one_sender_that_every_list_matches() -> None:
    assert unanimous(["a@x.example"], [frozenset({"x.example"}), frozenset({"a@x.example"})]
                     ) == {"x.example", "a@x.example"}
    assert unanimous(["a@x.example", "b@y.example"],
                     [frozenset({"a@x.example"}), frozenset({"b@y.example"})]) == frozenset()
    assert unanimous(["a@x.example"], []) == frozenset()


def test_rules_are_cached_for_the_ttl_then_reloaded_and_kept_on_a_store_failure(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    loads: list[int] = []
    answers: list[RuleSet | Exception] = [
        RuleSet(user_allow={ALICE: frozenset({"a.example"})}),
        StoreError("database is locked"),
        RuleSet(user_allow={ALICE: frozenset({"b.example"})}),
    ]

    def load() -> RuleSet:
        loads.append(len(loads))
        answer = answers[len(loads) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    cache = SenderRuleCache(load, ttl=30.0, clock=lambda: now[0])

    async def scenario() -> list[frozenset[str]]:
        seen = [(await cache.current()).user_allow[ALICE]]  # the first call waits
        now[0] = 10.0
        seen.append((await cache.current()).user_allow[ALICE])  # fresh: no reload
        now[0] = 31.0
        seen.append((await cache.current()).user_allow[ALICE])  # stale: reload started
        await cache._reloading  # the reload fails: the last rules stay
        seen.append((await cache.current()).user_allow[ALICE])
        now[0] = 62.0
        await cache.current()
        await cache._reloading
        seen.append(cache.rules.user_allow[ALICE])
        return seen

    seen = asyncio.run(scenario())

    assert len(loads) == 3
    assert seen == [frozenset({"a.example"})] * 4 + [frozenset({"b.example"})]
    assert "loading the sender rules failed" in caplog.text
