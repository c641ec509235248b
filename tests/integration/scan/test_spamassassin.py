"""spoolgate/scan/spamassassin.py against a real spamd (``--local``: no DNS, no network)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mail.verdict import Findings
from spoolgate.scan.base import ScanRequest
from spoolgate.scan.spamassassin import TRUNCATED, SpamAssassinScanner
from tests.conftest import open_to_daemons
from tests.gateway_process import free_port
from tests.spamd import GTUBE, Spamd

pytestmark = pytest.mark.integration

LOCAL = Envelope("a@remote.test", (Recipient("b@example.test"),),
                 ClientInfo("127.0.0.2", "mail.remote.test"))
GTUBE_MESSAGE = (b"From: a@remote.test\r\nTo: b@example.test\r\nSubject: test\r\n"
                 b"Message-ID: <gtube@remote.test>\r\n\r\n" + GTUBE + b"\r\n")


@pytest.fixture(scope="module")
def spamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spamd]:
    """One spamd per module; Bayes scores after a single learn of each kind."""
    folder = tmp_path_factory.mktemp("spamd")
    open_to_daemons(folder)  # spamd and Dovecot run as other users (RECIPES.md)
    with Spamd(folder, free_port(),
               config=("bayes_min_spam_num 1", "bayes_min_ham_num 1")) as daemon:
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


def scan(address: str, data: bytes, envelope: Envelope = LOCAL, budget: float = 20.0,
         **options: int) -> Findings:
    return asyncio.run(SpamAssassinScanner(address, **options).scan(
        ScanRequest(data, envelope, "Q1"), budget))


def test_gtube_scores_a_thousand(spamd: Spamd) -> None:
    findings = scan(spamd.address, GTUBE_MESSAGE)
    assert findings.error is None and findings.score >= 900.0  # 1000 for GTUBE, give or take Bayes
    assert "GTUBE" in [symbol.name for symbol in findings.symbols]
    assert all(symbol.score == 0.0 for symbol in findings.symbols)  # the total counts once
    assert findings.scanner == "spamassassin" and findings.seconds > 0


def test_a_ham_message_from_the_corpus_scores_low(spamd: Spamd, corpus: Path) -> None:
    (ham,) = corpus_files(corpus, "ham", 1)
    findings = scan(spamd.address, corpus_message(ham))
    assert findings.error is None and findings.unscannable is None
    assert findings.score < 5.0 and findings.symbols


def test_the_client_and_helo_reach_spamd_in_our_received_header(spamd: Spamd,
                                                                corpus: Path) -> None:
    (ham,) = corpus_files(corpus, "ham", 1)
    names = {}
    for helo in ("mail.remote.test", "1.2.3.4"):
        envelope = Envelope("a@remote.test", (Recipient("b@example.test"),),
                            ClientInfo("192.0.2.7", helo))
        findings = scan(spamd.address, corpus_message(ham), envelope)
        assert findings.error is None
        names[helo] = {symbol.name for symbol in findings.symbols}
    helo_rules = {"FSL_HELO_BARE_IP_1", "RCVD_HELO_IP_MISMATCH"}
    assert helo_rules <= names["1.2.3.4"] and not helo_rules & names["mail.remote.test"]
    assert "RCVD_ILLEGAL_IP" in names["mail.remote.test"]  # 192.0.2.7: a TEST-NET client


def test_the_user_header_reaches_spamd(spamd: Spamd) -> None:
    scan(spamd.address, GTUBE_MESSAGE.replace(b"gtube@", b"user-check@"))
    result = next(line for line in spamd.log_text().splitlines()
                  if "mid=<user-check@remote.test>" in line)
    assert "user=spoolgate" in result


def test_a_message_over_max_size_is_scored_on_its_beginning(spamd: Spamd) -> None:
    big = GTUBE_MESSAGE + b"filler line of text\r\n" * 5000  # about 105 KB
    findings = scan(spamd.address, big, max_size=10_000)
    assert findings.error is None and findings.unscannable is None
    assert findings.score >= 900.0  # GTUBE is near the top, inside what was sent
    assert findings.symbols[-1].name == TRUNCATED


def test_learned_spam_scores_bayes(spamd: Spamd, corpus: Path) -> None:
    training = spamd.folder / "training"  # sa-learn runs as nobody: a folder it can read
    for kind, spam in (("spam", True), ("ham", False)):
        folder = training / kind
        folder.mkdir(parents=True)
        for path in corpus_files(corpus, kind, 5):
            (folder / path.name).write_bytes(corpus_message(path))
        # spamd may have auto-learned a ham already scanned by another test: not re-learned.
        assert "(5 message(s) examined)" in spamd.learn(folder, spam)
    learned = next((training / "spam").iterdir()).read_bytes()
    names = [symbol.name for symbol in scan(spamd.address, learned).symbols]
    bayes = [name for name in names if name.startswith("BAYES_")]
    assert bayes and bayes[0] in ("BAYES_95", "BAYES_99", "BAYES_999"), names


def test_a_stopped_spamd_is_an_error_within_the_budget(spamd: Spamd) -> None:
    spamd.stop()
    try:
        assert not spamd.ping()
        findings = scan(spamd.address, GTUBE_MESSAGE, budget=2.0)
    finally:
        spamd.start()
    assert findings.error is not None and "unreachable" in findings.error
    assert findings.score == 0.0 and findings.symbols == ()
    assert scan(spamd.address, GTUBE_MESSAGE).score >= 900.0  # and it is back
