"""Every message of the shared corpus through intake and the built-in scanner, in process.

The same Intake the SMTP sessions call, with the built-in scanner whole (heuristics,
attachment rules, SPF/DKIM/DMARC against a DNS server on loopback that knows none of the
corpus's domains, the Bayes classifier on the store), a real SQLite store and the group
committer. Each message must either be stored or refused with an SMTP reply carrying its
enhanced status code, never raise anything else, and finish within a bound per message
(a hang detector, generous for a shared machine; speed is measured in bench/).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from spoolgate.intake.pipeline import Intake, IntakeSettings
from spoolgate.intake.scanning import Scanning
from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mail.reply import SmtpError
from spoolgate.scan.authentication import Authenticator, stub_resolver
from spoolgate.scan.bayes import BayesClassifier
from spoolgate.scan.builtin import BuiltinScanner
from spoolgate.scan.heuristics import HeuristicsContext
from spoolgate.scan.pipeline import ScanPipeline
from spoolgate.scan.policy import ScanPolicy
from spoolgate.store.bayes import BayesStore
from spoolgate.store.groupcommit import GroupCommitter
from spoolgate.store.store import open_store
from tests.integration.test_corpus import as_sent, message_files

pytestmark = pytest.mark.integration

PER_MESSAGE_SECONDS = 10.0
AT_ONCE = 8
ENVELOPE = Envelope("corpus@src.test", (Recipient("user@example.test"),),
                    ClientInfo("192.0.2.10", "mail.src.test"))


async def run_corpus(files: list[Path], intake: Intake) -> list[tuple[Path, str, float]]:
    slots = asyncio.Semaphore(AT_ONCE)

    async def one(path: Path) -> tuple[Path, str, float]:
        data = as_sent(await asyncio.to_thread(path.read_bytes))
        async with slots:
            started = time.monotonic()
            try:
                outcome = "stored " + await intake.accept(ENVELOPE, data)
            except SmtpError as error:
                outcome = f"{error.reply.code} {error.reply.enhanced}"
            return path, outcome, time.monotonic() - started

    return await asyncio.gather(*(one(path) for path in files))


def test_every_corpus_message_is_scanned_and_stored_or_refused_in_bounded_time(
        corpus: Path, folder: Path, loopback_dns, capsys: pytest.CaptureFixture[str]) -> None:
    files = message_files(corpus)
    assert len(files) > 5_000
    store = open_store(f"sqlite:///{folder / 'corpus.db'}")
    host, port = loopback_dns.address
    builtin = BuiltinScanner(
        context=HeuristicsContext(own_domains=frozenset({"example.test"})),
        authenticator=Authenticator(stub_resolver([f"{host}:{port}"], 2.0), timeout=2.0),
        bayes=BayesClassifier(BayesStore(store.engine, store.write_lock)),
        executor=ThreadPoolExecutor(4, thread_name_prefix="scan"))
    scanning = Scanning(ScanPipeline([builtin], budget=30), {"example.test": ScanPolicy()})

    async def main() -> list[tuple[Path, str, float]]:
        committer = GroupCommitter(store)
        committer.start()
        try:
            intake = Intake(IntakeSettings("mx.test.example", "test", 50), committer, scanning)
            return await run_corpus(files, intake)
        finally:
            await committer.stop()

    try:
        results = asyncio.run(main())
        stored = store.count_messages()
    finally:
        store.close()

    outcomes: dict[str, int] = {}
    for _, outcome, _ in results:
        key = outcome.split(" ")[0] if outcome.startswith("stored") else outcome
        outcomes[key] = outcomes.get(key, 0) + 1
    slowest = sorted(results, key=lambda r: -r[2])[:3]
    with capsys.disabled():
        print(f"\n{len(files)} corpus messages through intake: {outcomes}; slowest "
              + ", ".join(f"{p.relative_to(corpus)} {s:.2f}s" for p, _, s in slowest))
    assert len(results) == len(files)
    assert set(outcomes) <= {"stored", "550 5.7.1", "554 5.4.6", "451 4.7.1"}, outcomes
    assert "451 4.7.1" not in outcomes  # the built-in scanner never failed on a message
    assert stored == outcomes["stored"]
    assert [(str(p), s) for p, _, s in results if s > PER_MESSAGE_SECONDS] == []
