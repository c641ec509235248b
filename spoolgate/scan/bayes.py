"""The built-in Bayes classifier: tokens of a message, and their spam probability.

Owns the tokenizer and the arithmetic; the statistics live in the store
(:mod:`spoolgate.store.bayes`), so every node shares them. Messages are read only through
the one parse (:mod:`spoolgate.mime.parse`). The arithmetic is Gary Robinson's, as
SpamBayes and SpamAssassin use it: each token's f(w) with Robinson's smoothing, the most
significant tokens combined with Fisher's chi-square method into one probability. The
classifier also learns, and asks, the n-gram model of :mod:`spoolgate.scan.ngrams`.

It gives no opinion (``None``) until enough of both kinds are learned, like
SpamAssassin's ``bayes_min_spam_num`` / ``bayes_min_ham_num``. Nothing a message contains
makes it raise; a failing store raises :class:`~spoolgate.store.store.StoreError`, which
the scan pipeline treats as a failed scanner.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from spoolgate.mail.verdict import Symbol
from spoolgate.mime.parse import ParsedMessage, addresses, html_to_text, parse_message
from spoolgate.scan import ngrams
from spoolgate.store.bayes import BayesStore, LearnItem

MIN_WORD, MAX_WORD = 3, 20
MAX_TEXT = 512 * 1024  # characters of text tokenized per message: a bounded cost (~50 ms)
MAX_TOKENS = 5_000  # distinct tokens per message
MAX_SHAPE_TEXT = 20_000  # characters of a text part whose case and punctuation are tokens
MAX_URLS = 100  # URLs tokenized per text part
MAILER_HEADERS = ("x-mailer", "user-agent")
MAX_HEADER_NAMES = 200  # header fields counted per message

STRENGTH = 1.0  # Robinson's s: how much weight the prior x has against the evidence
PRIOR = 0.5  # Robinson's x: the probability of a token never seen
MIN_TOKEN_MESSAGES = 1  # a token learned once already counts, pulled towards PRIOR (as SpamBayes)
MIN_DEVIATION = 0.1  # |f(w) - 0.5| of a token worth counting (SpamBayes' minimum_prob_strength)
MAX_CLUES = 150  # the most significant tokens combined (SpamBayes' max_discriminators)
MIN_SPAM, MIN_HAM = 200, 200  # SpamAssassin's bayes_min_spam_num and bayes_min_ham_num

# The probability bands of SpamAssassin 3.4's Bayes rules (rules/23_bayes.cf), scored for
# a scanner with a dozen rules rather than SpamAssassin's thousand: SpamAssassin gives
# BAYES_99 3.5 because other rules add the rest; here near-certainty (>= 0.99) must tag a
# message on its own (the default tag threshold is 5), as Rspamd's BAYES_SPAM (up to 5.1)
# does, and confident ham earns enough to outweigh a heuristic or two. Within a band the
# score rises linearly towards the next band's, so that the summed score keeps the
# classifier's ordering (a threshold between two band scores can then be placed anywhere).
# (lowest probability of the band, symbol, score at that probability), highest band first.
BAYES_BANDS: tuple[tuple[float, str, float], ...] = (
    (0.999, "BAYES_999", 5.5),
    (0.99, "BAYES_99", 5.0),
    (0.95, "BAYES_95", 3.5),
    (0.80, "BAYES_80", 2.0),
    (0.60, "BAYES_60", 1.0),
    (0.40, "BAYES_50", 0.0),
    (0.20, "BAYES_40", -0.5),
    (0.05, "BAYES_20", -1.0),
    (0.01, "BAYES_05", -1.5),
    (0.0, "BAYES_00", -2.5),
)
BAYES_MAX_SCORE = 6.0  # the score at probability 1.0, where BAYES_999 ends
# Both learned opinions together add at most this: enough to tag a message (5) on their
# own, not to quarantine (10) or reject (15) it without the rules' agreement. A model
# trained on other mail than it scans is at its most confident where it is wrong (a
# newsletter to a model that learned only mailing lists: bench/accuracy, issue 14), and
# a poisoned one must not decide alone.
LEARNED_MAX_SCORE = 6.0

_URL = re.compile(r"(?i)(?:\b(https?://|ftp://)|\bwww\.)([a-z0-9-]+(?:\.[a-z0-9-]+)+)"
                  r"((?:[/?#][^\s\"'<>]*)?)")
_URL_PIECE = re.compile(r"[/?#&=.:;,+_%~!-]+")
_IP_HOST = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_BASE64_CHUNK = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")
_WORDISH = re.compile(r"[\w$%@'.-]+")
_EDGE = ".-'"
_CASED_WORD = re.compile(r"[^\W\d_]{3,}")
_SHOUT = re.compile(r"!+|\?+|[$\u00a3\u20ac]")
_BODY_START = re.compile(rb"\r?\n\r?\n")
_TRAILING_SPACE = re.compile(rb"[ \t]+(?=\n)")


@dataclass(frozen=True, slots=True)
class Clue:
    """One token that counted, with its smoothed spam probability f(w)."""

    token: str
    probability: float


# -- tokens --------------------------------------------------------------------------


def tokenize(parsed: ParsedMessage) -> frozenset[str]:
    """The distinct tokens of a message, at most MAX_TOKENS.

    Body words (``skip:`` tokens for long ones), the case and punctuation of body and
    Subject (``body:upper:3``, ``subject:mark:!!``), URLs (``proto:``, ``url:`` host and
    parent domains, path and query pieces), and prefixed header tokens: Subject words, the
    From and Reply-To addresses, the To/Cc count, mailer, encoding, MIME defects, the names
    of the header fields the sender wrote, part types, charsets and attachment extensions.

    Nothing that the path to the mailbox wrote is a token: not the Received chain, the
    fields above its oldest line (Delivered-To, the collector's client and filter marks),
    the Return-Path, the Message-ID's host or the recipients' domains. They tell which
    site collected a message, not whether it is spam, and a classifier that learns them
    learns its training collection (issue 14).
    """
    tokens: set[str] = set(_header_tokens(parsed))
    for text, markup in _texts(parsed):
        tokens.update(_url_tokens(markup))
        tokens.update(words(text))
        tokens.update(_shape_tokens("body", text[:MAX_SHAPE_TEXT]))
        if len(tokens) >= MAX_TOKENS:
            return frozenset(sorted(tokens)[:MAX_TOKENS])
    return frozenset(tokens)


def words(text: str) -> Iterator[str]:
    """Lowercase words of MIN_WORD..MAX_WORD characters; longer ones as a length token.

    Whitespace-separated chunks that look like base64 (long runs of its alphabet, not only
    letters) are skipped whole: encoded junk tells nothing word by word.
    """
    for chunk in text.split():
        if len(chunk) >= 24 and _BASE64_CHUNK.fullmatch(chunk) and not chunk.isalpha():
            continue
        for match in _WORDISH.finditer(chunk.lower()):
            word = match.group().strip(_EDGE)
            if MIN_WORD <= len(word) <= MAX_WORD:
                yield word
            elif len(word) > MAX_WORD:
                yield f"skip:{word[0]} {len(word) // 10 * 10}"  # as SpamBayes


def _shape_tokens(where: str, text: str) -> Iterator[str]:
    """How a text shouts: the share of its words in capitals, and the runs of ! and ? and
    the currency signs it has (case and punctuation that the words lose)."""
    found = _CASED_WORD.findall(text)
    if found:
        upper = sum(word.isupper() for word in found) / len(found)
        yield f"{where}:upper:{min(int(upper * 10), 5)}"
    for mark in set(_SHOUT.findall(text)):
        yield f"{where}:mark:{mark[:3]}"


def _texts(parsed: ParsedMessage) -> Iterator[tuple[str, str]]:
    """(text for words, text for URLs) of each inline text part: HTML's URLs come from its
    markup (href, src), its words from what it shows. MAX_TEXT characters in all."""
    budget = MAX_TEXT
    for part in parsed.parts:
        if part.text is None or part.filename is not None or part.disposition == "attachment":
            continue
        text = part.text[:budget]
        budget -= len(text)
        yield (html_to_text(text) if part.content_type == "text/html" else text), text
        if budget <= 0:
            return


def _url_tokens(text: str) -> Iterator[str]:
    """Per URL (MAX_URLS of them): its scheme, its host and every parent domain, and the
    pieces of its path and query (as SpamBayes' tokenizer)."""
    for match in itertools.islice(_URL.finditer(text), MAX_URLS):
        scheme, host, rest = match.group(1), match.group(2), match.group(3)
        yield f"proto:{(scheme or 'www').lower().rstrip(':/')}"
        host = host.lower().strip(".-")
        if _IP_HOST.match(host):
            yield "url:ip-address"
        else:
            labels = host.split(".")
            yield from (f"url:{'.'.join(labels[i:])}" for i in range(len(labels) - 1))
        for piece in _URL_PIECE.split(rest.lower()):
            if MIN_WORD <= len(piece) <= MAX_WORD:
                yield f"url:{piece}"
            elif len(piece) > MAX_WORD:
                yield f"url:skip {len(piece) // 10 * 10}"


def _header_tokens(parsed: ParsedMessage) -> Iterator[str]:
    yield from (f"subject:{word}" for word in words(parsed.subject))
    yield from _shape_tokens("subject", parsed.subject)
    yield from _address_tokens("from", parsed.from_)
    first = {name.lower(): value for name, value in reversed(parsed.headers)}
    yield from _address_tokens("reply-to", first.get("reply-to", ""), with_address=False)
    for name in MAILER_HEADERS:
        yield from (f"mailer:{word}" for word in words(first.get(name, "")))
    yield from _recipient_tokens(parsed)
    encoding = first.get("content-transfer-encoding", "").strip().lower()
    if encoding:
        yield f"encoding:{encoding[:MAX_WORD]}"
    yield from (f"defect:{d}" for d in parsed.defects[:MAX_WORD])
    for part in parsed.parts:
        yield from (f"defect:{d}" for d in part.defects[:MAX_WORD])
    yield from _header_shape(parsed)
    for part in parsed.parts:
        yield f"type:{part.content_type}"
        if part.charset:
            yield f"charset:{part.charset.lower()}"
        if part.filename and "." in part.filename:
            yield "attach:" + part.filename.rsplit(".", 1)[1].lower()[:MAX_WORD]


def _header_shape(parsed: ParsedMessage) -> Iterator[str]:
    """Which header fields the sender wrote and how often: mailers and list servers leave
    marks that say more than words (as SpamBayes' tokenizer); and whether it has a
    Message-ID at all."""
    counts: dict[str, int] = {}
    for name, _ in originator_fields(parsed.headers[:MAX_HEADER_NAMES]):
        key = name.lower()[:MAX_WORD * 2]
        counts[key] = counts.get(key, 0) + 1
    for name, count in counts.items():
        yield f"header:{name}:{min(count, 3)}"
    if not parsed.message_id.strip():
        yield "message-id:none"


def originator_fields(headers: Sequence[tuple[str, str]]) -> Sequence[tuple[str, str]]:
    """The header fields below the oldest Received field: what the sender's program wrote.
    Relays prepend theirs, and so do the collector's server and client (Delivered-To,
    X-UIDL, filter verdicts); all of them stand above it."""
    oldest = max((i for i, (name, _) in enumerate(headers) if name.lower() == "received"),
                 default=-1)
    return headers[oldest + 1:]


def _recipient_tokens(parsed: ParsedMessage) -> Iterator[str]:
    """How many To/Cc addresses (bucketed): colleagues write to a few, bulk senders to one
    stranger or many. (Their domains are the company's own: no token.)"""
    count = len(addresses(parsed.to, parsed.cc))
    yield f"to:count:{count if count < 3 else '3-9' if count < 10 else 'many'}"


def _address_tokens(name: str, value: str, with_address: bool = True) -> Iterator[str]:
    if not value:
        return
    for display, address in addresses(value)[:1]:
        address = address.lower()
        if with_address and address:
            yield f"{name}:addr:{address}"
        if "@" in address:
            yield f"{name}:domain:{address.rpartition('@')[2]}"
        yield from (f"{name}:name:{word}" for word in words(display))


# -- arithmetic ------------------------------------------------------------------------


def token_probability(spam: int, ham: int, nspam: int, nham: int) -> float:
    """Robinson's f(w): the token's spam ratio share, pulled towards PRIOR when rarely seen."""
    spam_ratio = spam / nspam
    ham_ratio = ham / nham
    seen = spam + ham
    if spam_ratio + ham_ratio == 0:
        return PRIOR
    p = spam_ratio / (spam_ratio + ham_ratio)
    return (STRENGTH * PRIOR + seen * p) / (STRENGTH + seen)


def chi2q(x2: float, degrees: int) -> float:
    """P(chi-square with even *degrees* >= *x2*): the series SpamBayes uses."""
    m = x2 / 2.0
    term = math.exp(-m)
    total = term
    for i in range(1, degrees // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def fisher_combine(probabilities: Iterable[float]) -> float:
    """Robinson/Fisher combining: (spamminess - hamminess + 1) / 2, 0.5 when nothing counts."""
    probabilities = list(probabilities)
    if not probabilities:
        return 0.5
    degrees = 2 * len(probabilities)
    spamminess = 1.0 - chi2q(-2.0 * math.fsum(math.log1p(-p) for p in probabilities), degrees)
    hamminess = 1.0 - chi2q(-2.0 * math.fsum(math.log(p) for p in probabilities), degrees)
    return (spamminess - hamminess + 1.0) / 2.0


def clues(counts: Mapping[str, tuple[int, int]], nspam: int, nham: int) -> list[Clue]:
    """The MAX_CLUES most significant tokens, ignoring rare and indifferent ones."""
    ranked = []
    for token, (spam, ham) in counts.items():
        if spam + ham < MIN_TOKEN_MESSAGES:
            continue
        probability = token_probability(spam, ham, nspam, nham)
        if abs(probability - 0.5) >= MIN_DEVIATION:
            ranked.append((abs(probability - 0.5), token, probability))
    return [Clue(token, p) for _, token, p in heapq.nlargest(MAX_CLUES, ranked)]


def bayes_symbol(probability: float, clue_count: int) -> Symbol:
    """The SpamAssassin-style BAYES_nn symbol of *probability*, its score interpolated
    between its band's score and the next band's (BAYES_MAX_SCORE at 1.0)."""
    upper, upper_score = 1.0, BAYES_MAX_SCORE
    for lowest, name, score in BAYES_BANDS:
        if probability >= lowest:
            share = (probability - lowest) / max(1e-12, upper - lowest)
            score = round(score + share * (upper_score - score), 3)
            return Symbol(name, score, f"spam probability {probability:.4f} "
                                       f"from {clue_count} tokens")
        upper, upper_score = lowest, score
    raise AssertionError("BAYES_BANDS ends at 0.0")  # pragma: no cover


# -- fingerprints ----------------------------------------------------------------------


def fingerprint(raw: bytes) -> str:
    """sha256 of a message's Message-ID and normalised body: the same whatever headers
    a relay added, so a message fed back from the mailbox is the one learned at receipt."""
    match = _BODY_START.search(raw)
    head = raw[:match.end()] if match else raw
    return _fingerprint(parse_message(head).message_id, raw)


def _fingerprint(message_id: str, raw: bytes) -> str:
    match = _BODY_START.search(raw)
    body = raw[match.end():] if match else b""
    body = _TRAILING_SPACE.sub(b"", body.replace(b"\r\n", b"\n")).rstrip()
    digest = hashlib.sha256(message_id.strip().encode("utf-8", "surrogateescape"))
    digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()


# -- the classifier --------------------------------------------------------------------


class BayesClassifier:
    """Classifies parsed messages with the statistics of *store*, and learns into it: the
    Bayes token counts, and the weights of the n-gram model (:mod:`spoolgate.scan.ngrams`),
    which learns every message Bayes learns."""

    def __init__(self, store: BayesStore, min_spam: int = MIN_SPAM,
                 min_ham: int = MIN_HAM) -> None:
        self.store = store
        self.min_spam = min_spam
        self.min_ham = min_ham

    def classify(self, parsed: ParsedMessage) -> tuple[float | None, Symbol | None]:
        """The Bayes spam probability and its symbol, or (None, None) while under-trained."""
        nspam, nham = self.store.totals()
        return self._bayes(parsed, nspam, nham)

    def symbols(self, parsed: ParsedMessage, raw: bytes) -> list[Symbol]:
        """The BAYES_nn symbol, and the NGRAM_MODEL symbol once the n-gram model has learned
        as many messages as Bayes needs (a store trained before the model existed has
        Bayes counts only); none while under-trained."""
        nspam, nham, modelled = self.store.all_totals()
        _, symbol = self._bayes(parsed, nspam, nham)
        if symbol is None:
            return []
        if modelled < self.min_spam + self.min_ham:
            return [symbol]
        found = ngrams.features(raw)
        model = ngrams.ngram_symbol(self.store.weight_sum(found))
        room = LEARNED_MAX_SCORE - symbol.score
        if model.score > room:
            model = Symbol(model.name, round(room, 3), f"{model.detail} (capped: with "
                           f"Bayes at most {LEARNED_MAX_SCORE:g})")
        return [symbol, model]

    def _bayes(self, parsed: ParsedMessage, nspam: int,
               nham: int) -> tuple[float | None, Symbol | None]:
        if nspam < self.min_spam or nham < self.min_ham:
            return None, None
        found = clues(self.store.counts(tokenize(parsed)), nspam, nham)
        probability = fisher_combine(clue.probability for clue in found)
        return probability, bayes_symbol(probability, len(found))

    def learn(self, parsed: ParsedMessage, raw: bytes, spam: bool) -> bool:
        """Learn one message; False when it was already learned with this label."""
        return self.store.learn(_fingerprint(parsed.message_id, raw), tokenize(parsed), spam,
                                ngrams.features(raw), step=ngrams.learn_step,
                                weigh=ngrams.class_weight)

    def learn_many(self, messages: Iterable[tuple[bytes, bool]]) -> tuple[int, int]:
        """Learn (raw message, spam) pairs in batches, in their order (which the n-gram
        model's learning depends on: interleave spam and ham); return how many spam and how
        many ham changed the statistics.

        Input with no header at all (not a message) is passed over.
        """
        return self.store.learn_many(_learn_items(messages), step=ngrams.learn_step,
                                     weigh=ngrams.class_weight)


def _learn_items(messages: Iterable[tuple[bytes, bool]]) -> Iterator[LearnItem]:
    for raw, spam in messages:
        parsed = parse_message(raw)
        if parsed.headers:
            yield LearnItem(_fingerprint(parsed.message_id, raw), tokenize(parsed), spam,
                            ngrams.features(raw))
