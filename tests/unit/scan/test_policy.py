"""spoolgate/scan/policy.py and pipeline.py: findings become one verdict; failures fail safe."""

from __future__ import annotations

import asyncio

import pytest

from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mail.verdict import Action, AuthResult, Findings, Symbol
from spoolgate.scan.base import ScanRequest
from spoolgate.scan.builtin import GTUBE, BuiltinScanner
from spoolgate.scan.pipeline import ScanPipeline
from spoolgate.scan.policy import ScanPolicy, decide, strictest
from spoolgate.store.store import StoreError

HEADERS = (b"From: a@remote.test\r\nDate: Sun, 29 Nov 2026 06:00:00 +0000\r\n"
           b"Message-ID: <1@remote.test>\r\nSubject: hi\r\n")
POLICY = ScanPolicy(tag_score=5, quarantine_score=10, reject_score=15)
ENVELOPE = Envelope("a@remote.test", (Recipient("b@example.test"),), ClientInfo("192.0.2.1", "h"))


@pytest.mark.parametrize(("score", "action"), [(0, Action.PASS), (4.9, Action.PASS),
                                               (5, Action.TAG), (9.99, Action.TAG),
                                               (10, Action.QUARANTINE), (15, Action.REJECT),
                                               (1000, Action.REJECT)])
def test_scores_are_summed_over_scanners_and_met_against_the_thresholds(
        score: float, action: Action) -> None:
    findings = [Findings("a", score=score / 2), Findings("b", score=score / 2)]
    verdict = decide(POLICY, findings)
    assert verdict.action == action and verdict.score == pytest.approx(score)


def test_a_failed_scanner_means_try_again_later_even_when_another_says_clean() -> None:
    verdict = decide(POLICY, [Findings("builtin"), Findings("clamav", error="connection refused")])
    assert verdict.action == Action.TEMPFAIL and "clamav" in verdict.reason


def test_a_scanner_marked_accept_and_rescan_does_not_hold_mail_back() -> None:
    policy = ScanPolicy(rescan_on_error=frozenset({"rspamd"}))
    assert decide(policy, [Findings("rspamd", error="timeout")]).action == Action.PASS


def test_a_virus_rejects_by_default_or_quarantines_when_the_domain_says_so() -> None:
    infected = [Findings("clamav", viruses=("Eicar-Test-Signature",)), Findings("builtin")]
    assert decide(POLICY, infected).action == Action.REJECT
    assert decide(ScanPolicy(virus_action=Action.QUARANTINE), infected).action == \
        Action.QUARANTINE
    assert "Eicar-Test-Signature" in decide(POLICY, infected).reason


def test_what_could_not_be_fully_scanned_is_never_passed() -> None:
    verdict = decide(POLICY, [Findings("clamav", unscannable="encrypted archive")])
    assert verdict.action == Action.QUARANTINE
    tempfail = ScanPolicy(unscannable_action=Action.TEMPFAIL)
    assert decide(tempfail, [Findings("clamav", unscannable="x")]).action == Action.TEMPFAIL


class _Stuck:
    """Stands for a scanner whose daemon hangs; the real-daemon version of this case is
    in tests/integration/scan (here only the pipeline's budget is under test)."""

    name = "stuck"

    async def scan(self, request: ScanRequest, budget: float) -> Findings:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class _Broken:
    """Stands for a scanner with a bug: it raises instead of reporting."""

    name = "broken"

    async def scan(self, request: ScanRequest, budget: float) -> Findings:
        raise KeyError("boom")


def test_the_pipeline_turns_overruns_and_crashes_into_errors_within_the_budget() -> None:
    pipeline = ScanPipeline([BuiltinScanner(), _Stuck(), _Broken()], budget=0.2)
    request = ScanRequest(HEADERS + b"\r\n" + GTUBE + b"\r\n", ENVELOPE, "Q1")

    async def run() -> tuple[float, tuple[Findings, ...]]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        found = await pipeline.scan(request)
        return loop.time() - started, found

    elapsed, (builtin, stuck, broken) = asyncio.run(run())

    assert elapsed < 1.0
    assert builtin.symbols == (Symbol("GTUBE", 1000.0, builtin.symbols[0].detail),)
    assert stuck.error == "no answer within 0.2s"
    assert broken.error == "internal error (KeyError)"
    assert decide(POLICY, [builtin, stuck, broken]).action == Action.TEMPFAIL


class _StoreDown:
    """Stands for the built-in scanner when the store holding its Bayes statistics fails."""

    name = "builtin"

    async def scan(self, request: ScanRequest, budget: float) -> Findings:
        raise StoreError("database is locked")


class _Waiting:
    """A scanner still at work when another fails; notes whether it was cancelled."""

    name = "waiting"
    cancelled = False

    async def scan(self, request: ScanRequest, budget: float) -> Findings:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        raise AssertionError("unreachable")


def test_a_store_failure_in_a_scanner_is_not_a_crash_and_cancels_the_others(caplog) -> None:
    waiting = _Waiting()
    pipeline = ScanPipeline([waiting, _StoreDown()], budget=30)
    request = ScanRequest(HEADERS + b"\r\nhello\r\n", ENVELOPE, "Q2")

    async def run() -> None:
        with pytest.raises(StoreError, match="database is locked"):
            await pipeline.scan(request)
        await asyncio.sleep(0)  # let the cancellation reach the other scanner

    with caplog.at_level("DEBUG", logger="spoolgate.scan"):
        asyncio.run(asyncio.wait_for(run(), 5))
    assert waiting.cancelled
    assert "crashed" not in caplog.text


BLOCKING = ScanPolicy(block=frozenset({"spammer.test", "bad@remote.test"}),
                      allow=frozenset({"partner.test", "boss@remote.test"}))


@pytest.mark.parametrize(("sender", "entry"), [
    ("bad@remote.test", "bad@remote.test"), ("x@spammer.test", "spammer.test"),
    ("x@mail.spammer.test", "spammer.test"), ("X@SPAMMER.TEST", "spammer.test")])
def test_a_blocked_sender_is_rejected_whatever_the_score(sender: str, entry: str) -> None:
    verdict = decide(BLOCKING, [Findings("builtin", score=-10)], (sender, ""))
    assert verdict.action == Action.REJECT and entry in verdict.reason


def test_the_from_address_counts_for_the_lists_as_well_as_the_envelope_sender() -> None:
    verdict = decide(BLOCKING, [Findings("builtin")], ("", "bad@remote.test"))
    assert verdict.action == Action.REJECT


def test_lookalike_domains_are_not_on_the_list() -> None:
    for sender in ("x@notspammer.test", "x@spammer.test.evil", "good@remote.test"):
        assert decide(BLOCKING, [Findings("builtin")], (sender, "")).action == Action.PASS


def test_an_allowed_sender_skips_the_spam_thresholds_but_not_viruses() -> None:
    spammy = [Findings("builtin", score=50)]
    assert decide(BLOCKING, spammy, ("x@partner.test", "")).action == Action.PASS
    assert decide(BLOCKING, spammy, ("x@other.test", "")).action == Action.REJECT
    virus = [Findings("clamav", viruses=("Eicar",))]
    assert decide(BLOCKING, virus, ("boss@remote.test", "")).action == Action.REJECT


def test_an_allowed_from_address_that_fails_dmarc_gets_no_pass() -> None:
    forged = [Findings("builtin", score=50,
                       authentication=(AuthResult("dmarc", "fail"),))]
    verdict = decide(BLOCKING, forged, ("x@evil.test", "boss@remote.test"))
    assert verdict.action == Action.REJECT


def test_several_domains_combine_to_block_any_and_allow_only_common_entries() -> None:
    a = ScanPolicy(allow=frozenset({"partner.test", "x.test"}), block=frozenset({"a.test"}),
                   subject_prefix="[SPAM]")
    b = ScanPolicy(allow=frozenset({"x.test"}), block=frozenset({"b.test"}))
    combined = strictest([a, b])
    assert combined.allow == {"x.test"} and combined.block == {"a.test", "b.test"}
    assert combined.subject_prefix == "[SPAM]"


def dmarc_fail(policy: str) -> Findings:
    return Findings("builtin", score=1.0, authentication=(
        AuthResult("dmarc", "fail", properties=(("header.from", "bank.test"),
                                                ("policy.dmarc", policy))),))


@pytest.mark.parametrize(("published", "action"), [("reject", Action.REJECT),
                                                   ("quarantine", Action.QUARANTINE),
                                                   ("none", Action.PASS)])
def test_a_dmarc_fail_gets_what_the_from_domain_publishes(published: str,
                                                           action: Action) -> None:
    assert decide(POLICY, [dmarc_fail(published)]).action == action
    lenient = ScanPolicy(dmarc_enforce=False)
    assert decide(lenient, [dmarc_fail(published)]).action == Action.PASS


def test_a_high_score_still_rejects_what_dmarc_would_only_quarantine() -> None:
    findings = [dmarc_fail("quarantine"), Findings("rspamd", score=20)]
    assert decide(POLICY, findings).action == Action.REJECT
