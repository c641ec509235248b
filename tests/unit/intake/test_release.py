"""spoolgate/intake/release.py on SQLite and PostgreSQL: rescan, the user_release policy,
per-recipient release and the event notes, with the built-in scanner and a real clamd."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

import pytest

from spoolgate.intake.release import (
    Cause,
    ReleaseOutcome,
    quarantine_cause,
    release_quarantined,
    user_may_release,
)
from spoolgate.intake.scanning import Scanning
from spoolgate.scan.builtin import GTUBE, BuiltinScanner
from spoolgate.scan.clamav import ClamavScanner
from spoolgate.scan.pipeline import ScanPipeline
from spoolgate.scan.policy import ScanPolicy
from spoolgate.store.queue import Queue
from spoolgate.store.store import Store
from tests.clamd import EICAR, Clamd
from tests.gateway_process import free_port
from tests.integration.store.messages import incoming

ALICE, BOB = "alice@example.test", "bob@example.test"
SPAM_SCAN = "action=quarantine score=1000 symbols=GTUBE(1000) viruses=- scanners=builtin:0.001s"
VIRUS_SCAN = ("action=quarantine score=0 symbols=- viruses=Spoolgate.Test.EICAR.UNOFFICIAL "
              "scanners=clamav:0.002s")
SPAMMY = b"From: x@partner.test\r\nSubject: offer\r\n\r\n" + GTUBE + b"\r\n"
INFECTED = b"From: x@partner.test\r\nSubject: invoice\r\n\r\n" + EICAR + b"\r\n"
CLEAN = b"From: x@partner.test\r\nSubject: lunch\r\n\r\nSee you at noon.\r\n"


@pytest.fixture
def queue(store: Store) -> Queue:
    return Queue(store, "node-a")


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    with Clamd(tmp_path_factory.mktemp("clamd"), free_port()) as daemon:
        yield daemon


def _scanning(*scanners) -> Scanning:
    return Scanning(ScanPipeline(list(scanners) or [BuiltinScanner()], 30.0),
                    {"example.test": ScanPolicy()})


def _quarantine(store: Store, data: bytes, *recipients: str, scan: str | None = SPAM_SCAN) -> str:
    events = (("accepted", "from=<x@partner.test>"),) + ((("scanned", scan),) if scan else ())
    msg = replace(incoming(recipients or (ALICE,), data=data, events=events), quarantined=True)
    store.commit_incoming([msg])
    return msg.queue_id


def _states(store: Store, queue_id: str) -> dict[str, str]:
    return {r.address: r.state for r in store.show(queue_id).entry.recipients}


def _events(store: Store, queue_id: str, kind: str) -> list:
    return [e for e in store.show(queue_id).events if e.kind == kind]


def test_an_operator_release_rescans_and_releases_every_recipient(store: Store,
                                                                  queue: Queue) -> None:
    queue_id = _quarantine(store, SPAMMY, ALICE, BOB)

    result = asyncio.run(release_quarantined(queue, queue_id, _scanning()))

    assert result.outcome is ReleaseOutcome.RELEASED and result.released == 2
    assert result.note.startswith("released by operator after a rescan: action=reject")
    assert "GTUBE" in result.note  # the rescan really ran: it found the test string again
    assert _states(store, queue_id) == {ALICE: "queued", BOB: "queued"}
    assert [e.detail for e in _events(store, queue_id, "released")] == [result.note] * 2


def test_a_user_releases_only_their_own_copy_and_is_named(store: Store, queue: Queue) -> None:
    queue_id = _quarantine(store, CLEAN, ALICE, BOB)

    result = asyncio.run(release_quarantined(queue, queue_id, _scanning(), actor=ALICE,
                                             addresses=["Alice@Example.test"],
                                             user_release="spam"))

    assert result.outcome is ReleaseOutcome.RELEASED and result.released == 1
    assert result.note.startswith(f"released by {ALICE} after a rescan: action=pass")
    assert _states(store, queue_id) == {ALICE: "queued", BOB: "quarantined"}
    (event,) = _events(store, queue_id, "released")
    assert event.recipient == ALICE and event.detail == result.note


def test_without_scanning_the_release_says_it_was_not_rescanned(store: Store,
                                                                queue: Queue) -> None:
    queue_id = _quarantine(store, SPAMMY)

    result = asyncio.run(release_quarantined(queue, queue_id, None, actor=ALICE,
                                             addresses=[ALICE], user_release="spam"))

    assert result.outcome is ReleaseOutcome.RELEASED
    assert result.note == f"released by {ALICE} without a rescan (scanning is off)"
    assert _states(store, queue_id) == {ALICE: "queued"}


@pytest.mark.parametrize(("mode", "scan", "allowed"), [
    ("spam", SPAM_SCAN, True), ("spam", VIRUS_SCAN, False), ("spam", None, False),
    ("none", SPAM_SCAN, False), ("all", VIRUS_SCAN, True), ("all", None, True)])
def test_user_release_policy_decides_from_the_recorded_scan(
        store: Store, queue: Queue, mode: str, scan: str | None, allowed: bool) -> None:
    queue_id = _quarantine(store, CLEAN, scan=scan)

    result = asyncio.run(release_quarantined(queue, queue_id, _scanning(), actor=ALICE,
                                             addresses=[ALICE], user_release=mode))

    expected = ReleaseOutcome.RELEASED if allowed else ReleaseOutcome.NOT_ALLOWED
    assert result.outcome is expected
    assert _states(store, queue_id) == {ALICE: "queued" if allowed else "quarantined"}


def test_nothing_to_release_is_not_quarantined(store: Store, queue: Queue) -> None:
    queue_id = _quarantine(store, CLEAN, ALICE)
    unknown = "0" * 12
    for target, addresses in ((queue_id, [BOB]), (unknown, None)):
        result = asyncio.run(release_quarantined(queue, target, None, addresses=addresses))
        assert result.outcome is ReleaseOutcome.NOT_QUARANTINED
    asyncio.run(release_quarantined(queue, queue_id, None))
    again = asyncio.run(release_quarantined(queue, queue_id, None))
    assert again.outcome is ReleaseOutcome.NOT_QUARANTINED and again.released == 0


def test_a_failed_rescan_refuses_unless_forced(store: Store, queue: Queue) -> None:
    closed = ClamavScanner(f"tcp:127.0.0.1:{free_port()}")  # nothing listens there
    queue_id = _quarantine(store, CLEAN)

    refused = asyncio.run(release_quarantined(queue, queue_id, _scanning(closed)))

    assert refused.outcome is ReleaseOutcome.SCAN_FAILED and "scanner failed" in refused.reason
    assert _states(store, queue_id) == {ALICE: "quarantined"}
    (event,) = _events(store, queue_id, "rescanned")
    assert event.detail.startswith("release asked by operator refused (scan-failed)")
    forced = asyncio.run(release_quarantined(queue, queue_id, _scanning(closed), force=True))
    assert forced.outcome is ReleaseOutcome.RELEASED
    assert "after a rescan: action=tempfail" in forced.note


@pytest.mark.integration
def test_a_virus_still_found_keeps_it_in_quarantine(store: Store, queue: Queue,
                                                    clamd: Clamd) -> None:
    scanning = _scanning(ClamavScanner(clamd.address))
    queue_id = _quarantine(store, INFECTED, ALICE, BOB, scan=VIRUS_SCAN)

    refused = asyncio.run(release_quarantined(queue, queue_id, scanning, actor=ALICE,
                                              addresses=[ALICE], user_release="all"))

    assert refused.outcome is ReleaseOutcome.INFECTED
    assert "Spoolgate.Test.EICAR" in refused.reason
    assert _states(store, queue_id) == {ALICE: "quarantined", BOB: "quarantined"}
    (event,) = _events(store, queue_id, "rescanned")
    assert event.recipient == ALICE and f"asked by {ALICE} refused (infected)" in event.detail
    forced = asyncio.run(release_quarantined(queue, queue_id, scanning, force=True))
    assert forced.outcome is ReleaseOutcome.RELEASED and forced.released == 2


def test_the_cause_comes_from_the_scan_event() -> None:
    assert quarantine_cause(SPAM_SCAN) is Cause.SPAM
    assert quarantine_cause(VIRUS_SCAN) is Cause.VIRUS
    assert quarantine_cause("action=quarantine score=0 symbols=- viruses=- scanners=b:0s "
                            "unscannable=(builtin: encrypted archive)") is Cause.SPAM
    assert quarantine_cause("action=quarantine score=12 symbols=SPAM_WORDS(12)") is Cause.SPAM
    assert quarantine_cause(None) is Cause.UNKNOWN
    assert [user_may_release(mode, Cause.VIRUS) for mode in ("spam", "none", "all")] == \
        [False, False, True]
    assert [user_may_release(mode, Cause.SPAM) for mode in ("spam", "none", "all")] == \
        [True, False, True]

