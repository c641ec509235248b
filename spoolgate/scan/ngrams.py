"""The n-gram model: online logistic regression over the byte 4-grams of a message's start.

The second statistical opinion of the built-in scanner, beside Bayes. The features are
binary: which 4-byte sequences occur in the first MAX_BYTES bytes of the message as its
sender wrote it (the originator's header fields, then the body), lower-cased. The model is the one that did best at the TREC spam
tracks (Goodman and Yih, 2006; Sculley and Wachman, 2007): a weight per feature, the
message's spam log-odds their sum, one gradient step per learned message. It sees
what words miss: header layout, mailer quirks, encodings, markup, obfuscated spellings.

Everything the path to the mailbox added is left out: the header fields above and
including the last (oldest) Received field are the relays', the collector's and this
gateway's (Delivered-To, X-Original-To, POP and mail-client bookkeeping, filter verdicts),
and Authentication-Results and X-Spam-* fields anywhere. They describe the site that
collected the mail, not the mail: a model that learns them learns the collection (issue
14: trained on one collection, the model scored another's spam as certain ham), and a
message fed back from a mailbox keeps the features it had at receipt. Line endings are
normalised (CRLF reads as LF).

Learning is online and order matters: spam and ham are best learned interleaved (see
:func:`spoolgate.scan.training.train`), and each class's steps are weighted by the
inverse of its share of what was learned, so that a store that learned five ham for
every spam does not push every common n-gram, and so every unfamiliar message, towards
ham. The weights live in the store, beside the Bayes
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
SCALE = 1.0  # symbol points per unit of log-odds
MAX_SCORE = 2.5  # the most the symbol adds: one opinion of several
# The most it takes away. Byte patterns that look like the ham it learned say "this looks
# like the mail of the site I was trained on", which is weak evidence that a message is
# not spam once the mail comes from elsewhere: trained on one collection, the model scored
# most of another's spam below zero (bench/accuracy_cv --cross), so it mostly abstains.
MIN_SCORE = -1.0
MAX_IMPORTANCE = 10.0  # the largest class weight of a step (a store of one kind only)
CLASS_PRIOR = 50  # messages of each class assumed learned: a young store's steps weigh ~1
SYMBOL = "NGRAM_MODEL"

_SKIPPED = (b"received:", b"authentication-results:", b"x-spam-")


def features(raw: bytes) -> frozenset[int]:
    """The distinct lower-cased 4-grams of the first MAX_BYTES bytes of *raw* as its sender
    wrote it, each as an int: line endings normalised, the header fields the path added
    dropped."""
    data = _without_added_headers(raw[:WINDOW].replace(b"\r\n", b"\n"))[:MAX_BYTES].lower()
    return frozenset(int.from_bytes(data[i:i + SIZE], "big")
                     for i in range(len(data) - SIZE + 1))


def _without_added_headers(data: bytes) -> bytes:
    head, separator, body = data.partition(b"\n\n")
    lines = head.split(b"\n")
    last_received = max((i for i, line in enumerate(lines)
                         if line[:9].lower() == b"received:"), default=-1)
    kept, keep = [], True
    for number, line in enumerate(lines):
        if not line[:1].isspace():  # a field's first line decides for its continuations
            keep = number > last_received and not line.lower().startswith(_SKIPPED)
        if keep:
            kept.append(line)
    return b"\n".join(kept) + separator + body


def log_odds(weights: Mapping[int, float], found: Collection[int]) -> float:
    """The model's spam log-odds for a message with *found* features."""
    return math.fsum(weights.get(feature, 0.0) for feature in found)


def spam_probability(odds: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, odds))))


def learn_step(weights: MutableMapping[int, float], found: Collection[int], spam: bool,
               importance: float = 1.0) -> None:
    """One gradient step of the logistic loss for one message, weighted by *importance*
    (the class weight :func:`class_weight` gives), in place."""
    step = importance * RATE * ((1.0 if spam else 0.0) - spam_probability(log_odds(weights, found)))
    for feature in found:
        weights[feature] = weights.get(feature, 0.0) + step


def class_weight(spam: bool, learned_spam: int, learned_ham: int) -> float:
    """The weight of a step for a message of this class: half over the class's share of
    the messages learned so far (1.0 for each when both are learned alike), each class
    counted with CLASS_PRIOR more messages so that a young store's few messages do not
    swing it; at most MAX_IMPORTANCE."""
    share = ((learned_spam if spam else learned_ham) + CLASS_PRIOR) / (
        learned_spam + learned_ham + 2 * CLASS_PRIOR)
    return min(MAX_IMPORTANCE, 0.5 / share)


def ngram_symbol(odds: float) -> Symbol:
    """The NGRAM_MODEL symbol: SCALE points per unit of log-odds, within MIN_SCORE and
    MAX_SCORE."""
    score = round(max(MIN_SCORE, min(MAX_SCORE, SCALE * odds)), 3)
    return Symbol(SYMBOL, score, f"n-gram model: spam probability "
                                 f"{spam_probability(odds):.4f}")
