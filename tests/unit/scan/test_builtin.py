"""spoolgate/scan/builtin.py: the built-in scanner adds up its parts on the one parse.

Each part has its own tests (test_heuristics, test_attachments, test_authentication,
test_bayes); these check that the scanner runs them, off the event loop, and that what a
limit kept it from seeing is reported as unscannable, never as clean.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mime.parse import parse_message
from spoolgate.scan.authentication import Authenticator, stub_resolver
from spoolgate.scan.base import ScanRequest
from spoolgate.scan.bayes import BayesClassifier
from spoolgate.scan.builtin import GTUBE, BuiltinScanner
from spoolgate.scan.policy import ScanPolicy, decide
from spoolgate.store.bayes import BayesStore
from spoolgate.store.store import open_store

ENVELOPE = Envelope("a@remote.test", (Recipient("b@example.test"),),
                    ClientInfo("192.0.2.1", "mail.remote.test"))
HEADERS = (b"From: a@remote.test\r\nTo: b@example.test\r\nMessage-ID: <1@remote.test>\r\n"
           b"Date: Sun, 29 Nov 2026 06:00:00 +0000\r\nSubject: hi\r\n")


def scan(data: bytes, scanner: BuiltinScanner | None = None):
    return asyncio.run((scanner or BuiltinScanner()).scan(ScanRequest(data, ENVELOPE), 5.0))


def test_gtube_is_spam_whatever_the_thresholds_and_clean_mail_scores_nothing() -> None:
    spam = scan(HEADERS + b"\r\n" + GTUBE + b"\r\n")
    assert [s.name for s in spam.symbols] == ["GTUBE"]
    assert decide(ScanPolicy(), [spam]).action.value == "reject"
    clean = scan(HEADERS + b"\r\nSee you at noon.\r\n")
    assert clean.symbols == () and clean.score == 0 and clean.unscannable is None


def test_gtube_encoded_in_base64_is_seen_through_the_parse() -> None:
    body = base64.encodebytes(GTUBE).replace(b"\n", b"\r\n")
    data = HEADERS + b"Content-Transfer-Encoding: base64\r\n\r\n" + body
    assert GTUBE not in data
    assert "GTUBE" in {s.name for s in scan(data).symbols}


def test_heuristics_and_attachment_rules_add_up() -> None:
    data = (HEADERS.replace(b"Date: Sun, 29 Nov 2026 06:00:00 +0000\r\n", b"")
            + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
            b"Content-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
            b"Content-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename=\"setup.scr\"\r\n\r\nxx\r\n--b--\r\n")
    found = scan(data)
    names = {s.name for s in found.symbols}
    assert {"MISSING_DATE", "ATTACH_BLOCKED_EXT"} <= names
    assert found.score == pytest.approx(sum(s.score for s in found.symbols))


@pytest.mark.parametrize("data", [
    HEADERS + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    + b"".join(b"--b\r\n\r\nx\r\n" for _ in range(1_100)) + b"--b--\r\n",
    HEADERS + b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
    + b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
               for i in range(60)) + b"--b60\r\n\r\nhidden\r\n",
], ids=["too many parts", "nested too deep"])
def test_what_the_parse_limits_cut_off_is_unscannable_not_clean(data: bytes) -> None:
    found = scan(data)
    assert found.unscannable and "exceeds what is inspected" in found.unscannable
    assert decide(ScanPolicy(), [found]).action.value == "quarantine"


def test_the_work_runs_on_the_given_executor_not_the_event_loop_thread() -> None:
    seen: list[str] = []

    class Recording(ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            seen.append(threading.current_thread().name)
            return super().submit(lambda: (seen.append(threading.current_thread().name),
                                           fn(*args, **kwargs))[1])

    with Recording(max_workers=1, thread_name_prefix="scan") as executor:
        found = scan(HEADERS + b"\r\nhello\r\n", BuiltinScanner(executor=executor))
    assert found.error is None
    assert seen[0] == "MainThread" and seen[1].startswith("scan")


def test_authentication_results_come_back_with_their_symbols(loopback_dns) -> None:
    loopback_dns.add('remote.test. 60 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"\n')
    host, port = loopback_dns.address
    scanner = BuiltinScanner(authenticator=Authenticator(
        stub_resolver([f"{host}:{port}"], 2.0), timeout=2.0))
    found = scan(HEADERS + b"\r\nhello\r\n", scanner)
    results = {a.method: a.result for a in found.authentication}
    assert results["spf"] == "pass" and results["dkim"] == "none"
    assert "SPF_PASS" in {s.name for s in found.symbols}


def test_a_trained_bayes_classifier_gives_its_symbol(tmp_path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'bayes.db'}")
    try:
        classifier = BayesClassifier(BayesStore(store.engine, store.write_lock),
                                     min_spam=5, min_ham=5)
        for number in range(5):
            spam = (HEADERS.replace(b"<1@", b"<s%d@" % number)
                    + b"\r\ncheap pills casino winner prize viagra lottery %d\r\n" % number)
            ham = (HEADERS.replace(b"<1@", b"<h%d@" % number)
                   + b"\r\nminutes of the budget meeting agenda project %d\r\n" % number)
            assert classifier.learn(parse_message(spam), spam, True)
            assert classifier.learn(parse_message(ham), ham, False)
        scanner = BuiltinScanner(bayes=classifier)
        spammy = scan(HEADERS + b"\r\ncasino winner: cheap pills and a lottery prize\r\n",
                      scanner)
        hammy = scan(HEADERS + b"\r\nthe project budget meeting minutes and agenda\r\n",
                     scanner)
    finally:
        store.close()
    spam_symbol = next(s for s in spammy.symbols if s.name.startswith("BAYES_"))
    ham_symbol = next(s for s in hammy.symbols if s.name.startswith("BAYES_"))
    assert spam_symbol.score > 0 > ham_symbol.score
