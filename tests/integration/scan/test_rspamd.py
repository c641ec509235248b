"""spoolgate/scan/rspamd.py against a real Rspamd, its DNS answered by a loopback server."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mail.verdict import Findings
from spoolgate.scan.base import ScanRequest
from spoolgate.scan.rspamd import RspamdScanner
from tests.dns_server import LoopbackDns
from tests.gateway_process import free_port
from tests.rspamd import GTUBE, Rspamd

pytestmark = pytest.mark.integration

# A loopback client: a routable one adds about +7 from failed reverse DNS (RECIPES.md).
LOCAL = Envelope("a@remote.test", (Recipient("b@example.test"),),
                 ClientInfo("127.0.0.2", "mail.remote.test"))
GTUBE_MESSAGE = (b"From: a@remote.test\r\nTo: b@example.test\r\nSubject: test\r\n"
                 b"Message-ID: <gtube@remote.test>\r\n\r\n" + GTUBE + b"\r\n")


@pytest.fixture(scope="module")
def dns() -> Iterator[LoopbackDns]:
    with LoopbackDns() as server:
        yield server


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory: pytest.TempPathFactory, dns: LoopbackDns) -> Iterator[Rspamd]:
    """One Rspamd (and Redis) per module; Bayes scores after a single learn of each kind."""
    with Rspamd(tmp_path_factory.mktemp("rspamd"), free_port(), free_port(), dns.address,
                bayes_min_learns=1) as daemon:
        yield daemon


def corpus_message(path: Path) -> bytes:
    """A SpamAssassin corpus file without its leading mbox ``From `` line."""
    data = path.read_bytes()
    return data.split(b"\n", 1)[1] if data.startswith(b"From ") else data


def corpus_files(corpus: Path, kind: str, count: int) -> list[Path]:
    folder = corpus / "spamassassin" / kind
    if not folder.is_dir():
        pytest.skip(f"corpus folder {folder} not found")
    return sorted(folder.iterdir())[:count]


def scan(url: str, data: bytes, envelope: Envelope = LOCAL, queue_id: str = "Q1",
         budget: float = 10.0) -> Findings:
    return asyncio.run(RspamdScanner(url).scan(ScanRequest(data, envelope, queue_id), budget))


def test_gtube_scores_rspamds_reject_level(rspamd: Rspamd) -> None:
    findings = scan(rspamd.url, GTUBE_MESSAGE)
    assert findings.error is None and findings.score >= 15.0
    assert "GTUBE" in [symbol.name for symbol in findings.symbols]
    assert findings.scanner == "rspamd" and findings.seconds > 0


def test_a_ham_message_from_the_corpus_scores_low(rspamd: Rspamd, corpus: Path) -> None:
    (ham,) = corpus_files(corpus, "ham", 1)
    findings = scan(rspamd.url, corpus_message(ham))
    assert findings.error is None and findings.unscannable is None
    assert findings.score < 5.0 and findings.symbols  # scored, with its reasons


def test_the_envelope_reaches_rspamd(rspamd: Rspamd, dns: LoopbackDns, corpus: Path) -> None:
    (ham,) = corpus_files(corpus, "ham", 1)
    envelope = Envelope("sender@remote.test",
                        (Recipient("b@example.test"), Recipient("c@example.test")),
                        ClientInfo("192.0.2.7", "1.2.3.4"))
    findings = scan(rspamd.url, corpus_message(ham), envelope, queue_id="QENVELOPE1")
    names = {symbol.name for symbol in findings.symbols}
    assert findings.error is None
    assert {"HFILTER_HELO_BAREIP", "RCPT_COUNT_TWO", "FROM_NEQ_ENVFROM"} <= names
    task_line = next(line for line in rspamd.log_text().splitlines()
                     if "rspamd_task_write_log" in line and "qid: <QENVELOPE1>" in line)
    assert "ip: 192.0.2.7, from: <sender@remote.test>" in task_line
    assert re.search(r"rcpts: <b@example\.test,c@example\.test>", task_line)
    questions = set(dns.queries)  # every DNS question went to the loopback server
    assert ("7.2.0.192.in-addr.arpa.", "PTR") in questions
    assert ("remote.test.", "TXT") in questions  # SPF of the envelope sender's domain


def test_the_null_sender_reaches_rspamd_as_the_null_sender(rspamd: Rspamd,
                                                           corpus: Path) -> None:
    # Without an envelope sender Rspamd would fall back to the From header; "<>" is the
    # bounce sender, so the sender-domain rules have nothing to check.
    (ham,) = corpus_files(corpus, "ham", 1)
    names = {}
    for sender in ("sender@remote.test", ""):
        envelope = Envelope(sender, (Recipient("b@example.test"),),
                            ClientInfo("192.0.2.7", "mail.remote.test"))
        findings = scan(rspamd.url, corpus_message(ham), envelope)
        assert findings.error is None
        names[sender] = {symbol.name for symbol in findings.symbols}
    sender_rules = {"FROM_NEQ_ENVFROM", "HFILTER_FROMHOST_NORES_A_OR_MX"}
    assert sender_rules <= names["sender@remote.test"]
    assert not sender_rules & names[""]


def test_the_same_message_twice_is_scored_twice(rspamd: Rspamd, corpus: Path) -> None:
    (ham,) = corpus_files(corpus, "ham", 1)
    envelope = Envelope("sender@remote.test", (Recipient("b@example.test"),),
                        ClientInfo("192.0.2.8", "mail.remote.test"))
    first, second = (scan(rspamd.url, corpus_message(ham), envelope) for _ in range(2))
    assert first.error is None and second.error is None  # no greylisting in the fixture
    assert first.score == second.score and first.symbols == second.symbols


def test_learned_spam_scores_bayes_spam(rspamd: Rspamd, corpus: Path,
                                        tmp_path: Path) -> None:
    for kind, spam in (("spam", True), ("ham", False)):
        folder = tmp_path / kind
        folder.mkdir()
        for path in corpus_files(corpus, kind, 5):
            (folder / path.name).write_bytes(corpus_message(path))
        assert "success = true" in rspamd.learn(folder, spam)
    learned = next((tmp_path / "spam").iterdir()).read_bytes()
    findings = scan(rspamd.url, learned)
    bayes = {symbol.name: symbol for symbol in findings.symbols if symbol.name.startswith("BAYES")}
    assert list(bayes) == ["BAYES_SPAM"] and bayes["BAYES_SPAM"].score > 0
    assert bayes["BAYES_SPAM"].detail.endswith("%")  # the probability, from its options


def test_a_stopped_rspamd_is_an_error_within_the_budget(rspamd: Rspamd) -> None:
    rspamd.stop()
    try:
        assert not rspamd.ping()
        findings = scan(rspamd.url, GTUBE_MESSAGE, budget=2.0)
    finally:
        rspamd.start()  # under a second: it reuses its data folder
    assert findings.error is not None and "unreachable" in findings.error
    assert findings.score == 0.0 and findings.symbols == ()
    assert scan(rspamd.url, GTUBE_MESSAGE).score >= 15.0  # and it is back
