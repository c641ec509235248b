"""spoolgate/scan/ngrams.py: the features of a message, the gradient step worked out by hand,
and the symbol's scale and bounds."""

from __future__ import annotations

import math

import pytest

from spoolgate.scan import ngrams
from spoolgate.scan.ngrams import MAX_BYTES, MAX_SCORE, MIN_SCORE, RATE, SCALE, SYMBOL

MESSAGE = (b"From: Alice <alice@remote.test>\n"
           b"Subject: Lunch\n"
           b"Message-ID: <1@remote.test>\n"
           b"\n"
           b"Shall we meet at noon?\n")


def gram(text: bytes) -> int:
    return int.from_bytes(text, "big")


def test_features_are_the_distinct_lower_cased_four_grams() -> None:
    found = ngrams.features(b"Subject: ABCDE\n\nabcd")

    assert gram(b"abcd") in found and gram(b"bcde") in found
    assert gram(b"ABCD") not in found
    assert gram(b"subj") in found
    # "Subject: ABCDE\n\nabcd" is 20 bytes: 17 windows, "abcd" twice
    assert len(found) == 16


def test_headers_a_gateway_adds_and_crlf_line_ends_change_nothing() -> None:
    relayed = (b"Received: from mx.remote.test (mx.remote.test [192.0.2.1])\r\n"
               b"\tby gateway.example.test (Spoolgate) with ESMTPS id 4bX\r\n"
               b"Authentication-Results: gateway.example.test; spf=pass\r\n"
               b"X-Spam-Score: 1.2\r\n"
               b"X-Spam-Status: No, score=1.2\r\n"
               + MESSAGE.replace(b"\n", b"\r\n"))

    assert ngrams.features(relayed) == ngrams.features(MESSAGE)
    assert ngrams.features(b"X-Mailer: Evolution\n" + MESSAGE) != ngrams.features(MESSAGE)


def test_only_the_first_max_bytes_count() -> None:
    start = MESSAGE + b"x" * MAX_BYTES

    assert ngrams.features(start + b"tail words") == ngrams.features(start)
    assert max(ngrams.features(b"\x00" * 10 + b"\xff" * 10)) == gram(b"\xff" * 4)


def test_a_message_with_no_header_block_or_a_few_bytes_is_no_error() -> None:
    long_line = b"X-Long: " + b"ab" * 5_000_000  # 10 MB: only the start is read
    assert ngrams.features(long_line) == ngrams.features(long_line[:MAX_BYTES])
    assert len(ngrams.features(long_line)) == 10  # x-lo -lon long ong: ng:_ g:_a :_ab _aba abab baba
    assert ngrams.features(b"") == frozenset()
    assert ngrams.features(b"abc") == frozenset()
    assert ngrams.features(b"Received: only a header") == frozenset()


def test_learn_step_is_one_gradient_step_of_the_logistic_loss() -> None:
    weights: dict[int, float] = {}
    spammy, shared = {1, 2}, {2, 3}

    ngrams.learn_step(weights, spammy, spam=True)  # p = 0.5: each weight + RATE / 2
    assert weights == {1: RATE / 2, 2: RATE / 2}
    assert ngrams.log_odds(weights, shared) == pytest.approx(RATE / 2)

    ngrams.learn_step(weights, shared, spam=False)  # p = sigmoid(RATE / 2)
    down = RATE * (0 - 1 / (1 + math.exp(-RATE / 2)))
    assert weights == pytest.approx({1: RATE / 2, 2: RATE / 2 + down, 3: down})


def test_repeated_steps_separate_spam_from_ham() -> None:
    weights: dict[int, float] = {}
    spam = ngrams.features(b"Subject: cheap pills\n\nbuy cheap pills now")
    ham = ngrams.features(b"Subject: minutes\n\nminutes of the meeting")
    for _ in range(200):
        ngrams.learn_step(weights, spam, spam=True)
        ngrams.learn_step(weights, ham, spam=False)

    assert ngrams.spam_probability(ngrams.log_odds(weights, spam)) > 0.95
    assert ngrams.spam_probability(ngrams.log_odds(weights, ham)) < 0.05
    unseen = ngrams.features(b"Subject: cheap pills\n\ncheap pills here")
    assert ngrams.log_odds(weights, unseen) > 0


@pytest.mark.parametrize(("odds", "score"), [
    (0.0, 0.0), (1.0, SCALE), (-0.75, -0.75 * SCALE), (40.0, MAX_SCORE), (-1e9, MIN_SCORE)])
def test_the_symbol_is_scaled_log_odds_within_its_bounds(odds: float, score: float) -> None:
    symbol = ngrams.ngram_symbol(odds)

    assert (symbol.name, symbol.score) == (SYMBOL, pytest.approx(score))
    assert f"{ngrams.spam_probability(odds):.4f}" in symbol.detail


SENT = (b"From: Alice <alice@remote.test>\n"
        b"To: bob@example.test\n"
        b"Subject: Lunch\n"
        b"X-Mailer: Evolution 3.36\n"
        b"\n"
        b"Shall we meet at noon?\n")


def test_fields_above_and_including_the_oldest_received_are_ignored() -> None:
    collected_once = (b"Delivered-To: bob@example.test\n"
                      b"X-UIDL: 7d1f0c9e2a\n"
                      b"Received: from mx.example.test by pop.example.test; Mon, 1 Jan 2024\n"
                      b"Received: from mail.remote.test (mail.remote.test [192.0.2.1])\n"
                      b"\tby mx.example.test with ESMTP; Mon, 1 Jan 2024 10:00:00 +0000\n")
    collected_elsewhere = (b"X-Original-To: robert@other.test\n"
                           b"Status: RO\n"
                           b"Received: from relay.other.test by imap.other.test; Tue, 2 Jan 2024\n")

    assert ngrams.features(collected_once + SENT) == ngrams.features(SENT)
    assert ngrams.features(collected_elsewhere + SENT) == ngrams.features(SENT)


def test_without_received_the_senders_fields_are_all_kept() -> None:
    for field in (b"To: bob@example.test", b"X-Mailer: Evolution 3.36"):
        assert ngrams.features(SENT) != ngrams.features(SENT.replace(field + b"\n", b""))


def test_a_field_below_the_oldest_received_is_the_senders_and_kept() -> None:
    relayed = b"Received: from a by b; Mon, 1 Jan 2024\n" + SENT
    assert ngrams.features(relayed) != ngrams.features(relayed.replace(b"X-Mailer", b"X-Mail"))
    # ... but Authentication-Results and X-Spam-* fields are left out wherever they are
    verdicts = SENT.replace(b"Subject: Lunch\n", b"Subject: Lunch\nX-Spam-Flag: YES\n"
                            b"Authentication-Results: mx.remote.test; dkim=pass\n")
    assert ngrams.features(verdicts) == ngrams.features(SENT)


def test_class_weight_is_one_for_balanced_totals() -> None:
    for learned in (0, 10, 5_000):
        assert ngrams.class_weight(True, learned, learned) == pytest.approx(1.0)
        assert ngrams.class_weight(False, learned, learned) == pytest.approx(1.0)


def test_the_rarer_class_weighs_more_within_max_importance() -> None:
    spam, ham = 1_000, 5_000
    assert ngrams.class_weight(True, spam, ham) > 1.0 > ngrams.class_weight(False, spam, ham)
    assert ngrams.class_weight(False, ham, spam) > 1.0 > ngrams.class_weight(True, ham, spam)
    assert ngrams.class_weight(True, 0, 10**9) == ngrams.MAX_IMPORTANCE
    weights = [ngrams.class_weight(True, spam, ham) for spam, ham in
               ((1, 2), (10, 1_000), (0, 10**6), (10**6, 0))]
    assert all(0 < weight <= ngrams.MAX_IMPORTANCE for weight in weights)


def test_a_young_store_weighs_its_classes_near_one() -> None:
    # a handful of messages of one class: CLASS_PRIOR keeps the weight near one
    few = ngrams.CLASS_PRIOR // 10
    assert ngrams.class_weight(True, 0, few) == pytest.approx(1.0, abs=0.1)
    assert ngrams.class_weight(False, 0, few) == pytest.approx(1.0, abs=0.1)
    # ... and the same imbalance in a grown store weighs far more
    grown = 100 * ngrams.CLASS_PRIOR
    assert ngrams.class_weight(True, 0, grown) > ngrams.class_weight(True, 0, few) + 1


def test_learn_step_with_importance_two_takes_twice_the_step() -> None:
    for spam in (True, False):
        once: dict[int, float] = {1: 0.3, 2: -0.1}
        twice = dict(once)
        ngrams.learn_step(once, {1, 2, 3}, spam)
        ngrams.learn_step(twice, {1, 2, 3}, spam, importance=2.0)
        for feature in (1, 2, 3):
            start = {1: 0.3, 2: -0.1}.get(feature, 0.0)
            assert twice[feature] - start == pytest.approx(2 * (once[feature] - start))
