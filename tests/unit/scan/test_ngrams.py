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
