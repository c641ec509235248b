"""spoolgate/scan/policy.py and pipeline.py: findings become one verdict; failures fail safe."""

from __future__ import annotations

import asyncio

import pytest

from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mail.verdict import Action, Findings, Symbol
from spoolgate.scan.base import ScanRequest
from spoolgate.scan.builtin import GTUBE, BuiltinScanner
from spoolgate.scan.pipeline import ScanPipeline
from spoolgate.scan.policy import ScanPolicy, decide

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


def test_gtube_is_spam_whatever_the_thresholds() -> None:
    request = ScanRequest(b"Subject: test\r\n\r\n" + GTUBE + b"\r\n", ENVELOPE)
    findings = asyncio.run(BuiltinScanner().scan(request, 1.0))
    assert [s.name for s in findings.symbols] == ["GTUBE"]
    assert decide(POLICY, [findings]).action == Action.REJECT
    clean = asyncio.run(BuiltinScanner().scan(ScanRequest(b"Subject: hi\r\n\r\nhi\r\n",
                                                           ENVELOPE), 1.0))
    assert clean.symbols == () and decide(POLICY, [clean]).action == Action.PASS


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
    request = ScanRequest(b"Subject: hi\r\n\r\n" + GTUBE + b"\r\n", ENVELOPE, "Q1")

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
