"""The n-gram model: online logistic regression over the byte 4-grams of a message's start.

The second statistical opinion of the built-in scanner, beside Bayes. The features are
binary: which 4-byte sequences occur in the first MAX_BYTES bytes of the message
(headers first), lower-cased. The model is the one that did best at the TREC spam
tracks (Goodman and Yih, 2006; Sculley and Wachman, 2007): a weight per feature, the
message's spam log-odds their sum, one gradient step per learned message. It sees
what words miss: header layout, mailer quirks, encodings, markup, obfuscated spellings.

Header fields a gateway adds on the way in (Received, Authentication-Results,
X-Spam-*) are left out, so a message fed back from a mailbox has the features it had
when it was scanned at receipt; so are line endings (CRLF reads as LF).

Learning is online and order matters: spam and ham are best learned interleaved (see
:func:`spoolgate.scan.training.train`). The weights live in the store, beside the Bayes
counts, and this module owns only the arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, MutableMapping

from spoolgate.mail.verdict import Symbol

SIZE = 4  # bytes per n-gram
MAX_BYTES = 3_000  # bytes of the message's start read (as in Sculley and Wachman)
WINDOW = 16_384  # bytes looked at to find them, whatever the gateway's own headers take
RATE = 0.01  # the learning rate of a gradient step
SCALE = 2.0  # symbol points per unit of log-odds
MAX_SCORE = 5.0  # the symbol's score is within +-MAX_SCORE: one opinion of several
SYMBOL = "NGRAM_MODEL"

_SKIPPED = (b"received:", b"authentication-results:", b"x-spam-")


def features(raw: bytes) -> frozenset[int]:
    """The distinct lower-cased 4-grams of *raw*'s first MAX_BYTES bytes, each as an int,
    after dropping the header fields a gateway adds and normalising line endings."""
    data = _without_added_headers(raw[:WINDOW].replace(b"\r\n", b"\n"))[:MAX_BYTES].lower()
    return frozenset(int.from_bytes(data[i:i + SIZE], "big")
                     for i in range(len(data) - SIZE + 1))


def _without_added_headers(data: bytes) -> bytes:
    head, separator, body = data.partition(b"\n\n")
    kept, keep = [], True
    for line in head.split(b"\n"):
        if not line[:1].isspace():  # a field's first line decides for its continuations
            keep = not line.lower().startswith(_SKIPPED)
        if keep:
            kept.append(line)
    return b"\n".join(kept) + separator + body


def log_odds(weights: Mapping[int, float], found: Collection[int]) -> float:
    """The model's spam log-odds for a message with *found* features."""
    return math.fsum(weights.get(feature, 0.0) for feature in found)


def spam_probability(odds: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, odds))))


def learn_step(weights: MutableMapping[int, float], found: Collection[int], spam: bool) -> None:
    """One gradient step of the logistic loss for one message, in place."""
    step = RATE * ((1.0 if spam else 0.0) - spam_probability(log_odds(weights, found)))
    for feature in found:
        weights[feature] = weights.get(feature, 0.0) + step


def ngram_symbol(odds: float) -> Symbol:
    """The NGRAM_MODEL symbol: SCALE points per unit of log-odds, within +-MAX_SCORE."""
    score = round(max(-MAX_SCORE, min(MAX_SCORE, SCALE * odds)), 3)
    return Symbol(SYMBOL, score, f"n-gram model: spam probability "
                                 f"{spam_probability(odds):.4f}")
