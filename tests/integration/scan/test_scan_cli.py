"""`spoolgate scan FILE...`: one JSON line per message, from the configured scanners."""

from __future__ import annotations

import json

import pytest

from spoolgate.scan import ngrams
from spoolgate.scan.bayes import LEARNED_MAX_SCORE
from spoolgate.scan.builtin import GTUBE
from spoolgate.store.bayes import BayesStore
from spoolgate.store.store import open_store
from tests.clamd import DETECTED_AS, EICAR

pytestmark = pytest.mark.integration
HEAD = (b"From: a@remote.test\r\nDate: Sun, 29 Nov 2026 06:00:00 +0000\r\n"
        b"Message-ID: <1@remote.test>\r\n")


def test_scan_prints_the_verdict_of_each_file_with_builtin_and_clamav(
        gateway_factory, start_clamd, folder) -> None:
    daemon = start_clamd()
    gateway = gateway_factory(start=False, extra={"scan": {
        "scanners": ["builtin", "clamav"], "clamav": f"tcp:127.0.0.1:{daemon.port}"}})
    spam = folder / "spam.eml"
    spam.write_bytes(HEAD + b"Subject: offer\r\n\r\n" + GTUBE + b"\r\n")
    virus = folder / "virus.eml"
    virus.write_bytes(HEAD + b"Subject: invoice\r\n\r\n" + EICAR + b"\r\n")
    ham = folder / "ham.eml"
    ham.write_bytes(HEAD + b"Subject: lunch?\r\n\r\nAt noon.\r\n")

    result = gateway.cli("scan", str(spam), str(virus), str(ham), str(folder / "missing.eml"))

    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["file"], r["verdict"]) for r in lines] == [
        (str(spam), "reject"), (str(virus), "reject"), (str(ham), "pass")]
    assert lines[0]["symbols"] == {"GTUBE": 1000.0} and lines[0]["viruses"] == []
    # Both engines know the EICAR file: the built-in scanner's name first (config order).
    assert lines[1]["viruses"] == ["Eicar-Test-Signature", DETECTED_AS]
    assert lines[2]["score"] == 0 and lines[2]["errors"] == {}
    assert result.returncode == 1 and "missing.eml: No such file" in result.stderr


def test_scan_reports_authentication_and_reads_files_saved_from_an_mbox(
        gateway_factory, folder, loopback_dns) -> None:
    loopback_dns.add('remote.test. 60 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"\n'
                     '_dmarc.remote.test. 60 IN TXT "v=DMARC1; p=none"\n')
    host, port = loopback_dns.address
    gateway = gateway_factory(start=False, extra={
        "scan": {"authentication": True},
        "dns": {"nameservers": [f"{host}:{port}"], "timeout": 2}})
    saved = folder / "saved.eml"
    saved.write_bytes(b"From a@remote.test Sun Nov 29 06:00:00 2026\n" + HEAD
                      + b"Subject: hi\r\n\r\nhello\r\n")

    result = gateway.cli("scan", "--sender", "a@remote.test", "--client-ip", "127.0.0.1",
                         str(saved))

    (line,) = [json.loads(text) for text in result.stdout.splitlines()]
    methods = {a["method"]: a for a in line["authentication"]}
    assert methods["spf"]["result"] == "pass"
    assert methods["spf"]["smtp.mailfrom"] == "remote.test"
    assert methods["dmarc"]["result"] == "pass" and methods["dmarc"]["header.from"] == "remote.test"
    assert line["verdict"] == "pass" and "builtin" in line["scanners"]


def test_train_teaches_the_classifier_that_scan_then_uses(gateway_factory, folder) -> None:
    gateway = gateway_factory(start=False)
    spam, ham = folder / "spam", folder / "ham"
    spam.mkdir()
    ham.mkdir()
    for number in range(200):
        (spam / f"{number}.eml").write_bytes(
            HEAD.replace(b"<1@", b"<s%d@" % number)
            + b"Subject: win\r\n\r\ncasino jackpot winner bonus %d claim prize now\r\n" % number)
        (ham / f"{number}.eml").write_bytes(
            HEAD.replace(b"<1@", b"<h%d@" % number)
            + b"Subject: notes\r\n\r\nagenda for the quarterly review %d with the team\r\n"
            % number)
    untrained = folder / "untrained.eml"
    untrained.write_bytes(HEAD + b"Subject: win\r\n\r\nclaim your casino jackpot prize\r\n")
    before = json.loads(gateway.cli("scan", str(untrained)).stdout)

    learned = gateway.cli("train", "--spam", str(spam), "--ham", str(ham))
    again = gateway.cli("train", "--spam", str(spam))
    after = json.loads(gateway.cli("scan", str(untrained)).stdout)

    assert learned.returncode == 0, learned.stderr
    assert "learned 200 spam and 200 ham" in learned.stdout
    assert "now knows 200 spam and 200 ham, its n-gram model 400" in learned.stdout
    assert "learned 0 spam" in again.stdout and "200 already known" in again.stdout
    assert not any(name.startswith(("BAYES", "NGRAM")) for name in before["symbols"])
    bayes = {name: score for name, score in after["symbols"].items() if name.startswith("BAYES")}
    assert list(bayes) in (["BAYES_99"], ["BAYES_999"]) and after["score"] > before["score"]
    # Together the two add at most LEARNED_MAX_SCORE: Bayes is sure here, so the n-gram
    # model's symbol may have no room left; what it learned is read from the store.
    assert 0 <= after["symbols"]["NGRAM_MODEL"] <= LEARNED_MAX_SCORE - sum(bayes.values())
    assert _ngram_odds(gateway.store_url, untrained.read_bytes()) > 0


def _ngram_odds(store_url: str, raw: bytes) -> float:
    store = open_store(store_url)
    try:
        classifiers = BayesStore(store.engine, store.write_lock)
        try:
            return classifiers.weight_sum(ngrams.features(raw))
        finally:
            classifiers.close()
    finally:
        store.close()


def test_train_names_a_missing_path(gateway_factory, folder) -> None:
    gateway = gateway_factory(start=False)
    result = gateway.cli("train", "--spam", str(folder / "nowhere"))
    assert result.returncode == 1 and "nowhere: no such file or folder" in result.stderr
