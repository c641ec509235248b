"""spoolgate/scan/bayes.py: the tokens of real messages, Robinson/Fisher arithmetic checked
against values worked out by hand, fingerprints, and the classifier over a SQLite store."""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from spoolgate.mime.parse import parse_message
from spoolgate.scan import ngrams
from spoolgate.scan.bayes import (
    BAYES_BANDS,
    BAYES_MAX_SCORE,
    LEARNED_MAX_SCORE,
    MAX_CLUES,
    MAX_URLS,
    BayesClassifier,
    bayes_symbol,
    chi2q,
    clues,
    fingerprint,
    fisher_combine,
    originator_fields,
    token_probability,
    tokenize,
)
from spoolgate.store.bayes import BayesStore
from spoolgate.store.store import open_store
from tests.conftest import CORPUS


def message(body: str, *, subject: str = "Quarterly figures", message_id: str = "<1@remote.test>",
            sender: str = "Alice Example <alice@remote.test>", html: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "bob@example.test"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg["X-Mailer"] = "Evolution 3.46"
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


# -- tokens -----------------------------------------------------------------------------


def test_tokens_of_a_multipart_message_with_html_and_an_attachment() -> None:
    msg = EmailMessage()
    msg["From"] = '"Größe Shop" <Offers@Deals.Example.COM>'
    msg["Reply-To"] = "claims@elsewhere.test"
    msg["Subject"] = "Claim your FREE prize!"
    msg.set_content("Dear friend, visit https://www.prize-claims.test/now to collect.")
    msg.add_alternative('<div style="color:red">Act <b>today</b>: <a href="http://tracker.'
                        'example.net/c?id=1">click here</a><img src="http://198.51.100.7/p.gif">'
                        "</div>", subtype="html")
    msg.add_attachment(b"%PDF-1.4 secretword", maintype="application", subtype="pdf",
                       filename="Invoice.PDF")

    tokens = tokenize(parse_message(msg.as_bytes()))

    assert {"subject:claim", "subject:free", "subject:prize", "dear", "friend", "visit",
            "collect", "act", "today", "click", "here"} <= tokens
    assert {"from:addr:offers@deals.example.com", "from:domain:deals.example.com",
            "from:name:größe", "from:name:shop", "reply-to:domain:elsewhere.test"} <= tokens
    assert {"url:www.prize-claims.test", "url:prize-claims.test", "url:tracker.example.net",
            "url:example.net", "url:ip-address"} <= tokens
    assert {"type:text/plain", "type:text/html", "type:application/pdf", "attach:pdf",
            "charset:utf-8"} <= tokens
    assert not {"div", "style", "color", "href", "secretword"} & tokens  # markup, attachment
    assert not {"reply-to:addr:claims@elsewhere.test"} & tokens


def test_the_fields_the_sender_wrote_are_tokens_and_what_the_path_added_is_not() -> None:
    raw = (b"Delivered-To: collector@site.test\r\nX-UIDL: 123\r\nReceived: one\r\n"
           b"X-Filter-Verdict: clean\r\nReceived: two\r\n"
           b"From: a@remote.test\r\nList-Id: <dev.lists.test>\r\nX-Mailer: Mutt\r\n"
           b"Message-ID: <abc@MAILER.remote.test>\r\nSubject: s\r\n\r\nx\r\n")

    tokens = tokenize(parse_message(raw))

    assert {"header:list-id:1", "header:from:1", "header:x-mailer:1",
            "header:message-id:1"} <= tokens
    # Above the oldest Received: the relays', the collector's server's and client's.
    assert not {"header:received:2", "header:delivered-to:1", "header:x-uidl:1",
                "header:x-filter-verdict:1"} & tokens
    assert not {t for t in tokens if t.startswith(("message-id:@", "received:"))}
    assert "message-id:none" in tokenize(parse_message(b"Subject: s\r\n\r\nx\r\n"))


def test_every_field_is_the_senders_when_nothing_was_received() -> None:
    raw = b"X-Mailer: Mutt\r\nFrom: a@remote.test\r\nSubject: s\r\n\r\nx\r\n"

    assert {"header:x-mailer:1", "header:from:1"} <= tokenize(parse_message(raw))
    assert originator_fields((("Received", "r"), ("From", "f"))) == (("From", "f"),)


def test_urls_give_their_scheme_every_parent_domain_and_their_path_pieces() -> None:
    body = ("Order at https://shop.deals.example.co/buy-now/cheap_pills.html?id=12345&ref=mail "
            "or www.Other.test/x and http://203.0.113.9/" + "a" * 35 + "\n")

    tokens = tokenize(parse_message(message(body)))

    assert {"proto:https", "proto:www", "proto:http"} <= tokens
    assert {"url:shop.deals.example.co", "url:deals.example.co", "url:example.co",
            "url:other.test", "url:ip-address"} <= tokens
    assert {"url:buy", "url:now", "url:cheap", "url:pills", "url:html", "url:12345",
            "url:ref", "url:mail", "url:skip 30"} <= tokens
    assert "url:co" not in tokens and "url:id" not in tokens  # a TLD alone, short pieces


def test_urls_tokenized_per_part_are_bounded() -> None:
    body = " ".join(f"http://host{n}.example.test/" for n in range(MAX_URLS + 50))

    tokens = tokenize(parse_message(message(body)))

    hosts = {t for t in tokens if t.startswith("url:host")}
    assert len(hosts) == MAX_URLS
    assert f"url:host{MAX_URLS - 1}.example.test" in hosts


def test_case_and_punctuation_of_subject_and_body_are_tokens() -> None:
    raw = message("Hello there, this is calm text.\n", subject="FREE CASH now!!! only $5 ???")

    tokens = tokenize(parse_message(raw))

    # 3 of 4 words of three letters or more are capitals: share 0.75, bucket 5 (the top)
    assert {"subject:upper:5", "subject:mark:!!!", "subject:mark:$",
            "subject:mark:???"} <= tokens
    assert "body:upper:0" in tokens
    assert not {t for t in tokens if t.startswith("body:mark:")}


def test_recipient_count_encoding_and_defects_are_tokens_the_path_and_domains_not() -> None:
    raw = (b"Return-Path: <bounce-123@mailer.bulk.test>\r\n"
           b"Received: from relay.remote.test (relay.remote.test [198.51.100.23])\r\n"
           b"\tby mx.example.test with ESMTP\r\n"
           b"From: a@remote.test\r\nTo: b@example.test, c@example.test, d@other.test\r\n"
           b"Subject: s\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=\"zz\"\r\n"
           b"Content-Transfer-Encoding: 7bit\r\n\r\n"
           b"--zz\r\nContent-Type: text/plain\r\n\r\nbody text\r\n")  # never closed

    tokens = tokenize(parse_message(raw))

    assert {"to:count:3-9", "encoding:7bit"} <= tokens
    # Where it came through and whom it was for: the site's, not the message's.
    assert not {t for t in tokens if t.startswith(("return-path:", "received:", "to:domain:"))}
    assert any(t.startswith("defect:") and "Boundary" in t for t in tokens)
    assert "to:count:0" in tokenize(parse_message(b"From: a@remote.test\r\n\r\nx\r\n"))


def test_words_are_lowercase_bounded_in_length_and_base64_is_skipped() -> None:
    junk = base64.b64encode(bytes(range(256)) * 2).decode()[:76]
    body = (f"Hi OK Wonderful antidisestablishmentarianism  {junk}\n"
            "Quoted: 'words'. Price: $100, 50% off! mail me@example.org.\n")

    tokens = tokenize(parse_message(message(body)))

    assert {"wonderful", "quoted", "words", "price", "$100", "50%", "off", "mail",
            "me@example.org"} <= tokens
    assert not {"hi", "ok"} & tokens
    # 28 characters: only its length class counts; the base64 line leaves no token at all
    assert {t for t in tokens if t.startswith("skip:")} == {"skip:a 20"}
    body_words = {t for t in tokens if ":" not in t}
    assert all(3 <= len(t) <= 20 and t == t.lower() for t in body_words)


def corpus_files(subset: str, count: int) -> list[bytes]:
    folder = CORPUS / "spamassassin" / subset
    if not folder.is_dir():
        pytest.skip(f"mail corpus not found at {CORPUS} (set SPOOLGATE_CORPUS)")
    return [path.read_bytes().partition(b"\n")[2] for path in sorted(folder.iterdir())[:count]]


@pytest.mark.parametrize("subset", ["ham", "spam"])
def test_tokens_of_real_messages_are_words_hosts_and_prefixed_headers(subset: str) -> None:
    for raw in corpus_files(subset, 20):
        parsed = parse_message(raw)
        tokens = tokenize(parsed)

        assert tokens, raw[:200]
        assert any(t.startswith("from:addr:") for t in tokens)
        assert {f"subject:{w}" for w in parsed.subject.lower().split()
                if w.isalpha() and 3 <= len(w) <= 20} <= tokens
        assert all(t == t.strip() and t for t in tokens)
        assert all(len(t) <= 20 for t in tokens if ":" not in t)


# -- arithmetic ---------------------------------------------------------------------------


def test_token_probability_is_robinsons_smoothed_ratio() -> None:
    # spam ratio 3/10, ham ratio 1/10: p = 0.75; n = 4: f = (1 * 0.5 + 4 * 0.75) / (1 + 4)
    assert token_probability(3, 1, 10, 10) == pytest.approx(0.7)
    # ratios, not counts: 2 of 100 spam against 2 of 10 ham leans to ham
    assert token_probability(2, 2, 100, 10) == pytest.approx((0.5 + 4 * (0.02 / 0.22)) / 5)
    assert token_probability(5, 0, 10, 10) == pytest.approx(5.5 / 6)


def test_chi2q_for_four_degrees_is_the_closed_form() -> None:
    for x in (0.1, 1.0, 7.8, 40.0):
        assert chi2q(x, 4) == pytest.approx(math.exp(-x / 2) * (1 + x / 2))
    assert chi2q(0.0, 300) == 1.0


def test_fisher_combining_worked_by_hand() -> None:
    # Two clues 0.9 and 0.8, so chi2Q(x, 4) = P * (1 - ln P) with P the product:
    # spamminess = 1 - 0.02 * (1 - ln 0.02) = 0.9017595; hamminess = 1 - 0.72 * (1 - ln 0.72)
    # = 0.0434790; (0.9017595 - 0.0434790 + 1) / 2 = 0.9291402
    assert fisher_combine([0.9, 0.8]) == pytest.approx(0.929140, abs=1e-5)
    assert fisher_combine([0.1, 0.2]) == pytest.approx(1 - 0.929140, abs=1e-5)
    assert fisher_combine([]) == 0.5
    assert fisher_combine([0.9, 0.1]) == pytest.approx(0.5)


def test_clues_ignore_indifferent_tokens_and_pull_rare_ones_towards_the_prior() -> None:
    # leaning: p = 0.6, f = (0.5 + 10 * 0.6) / 11 = 0.59, too close to 0.5 to count;
    # once: p = 1.0 but seen once, f = (0.5 + 1 * 1.0) / 2 = 0.75, halfway to the prior
    counts = {"once": (1, 0), "even": (5, 5), "spammy": (9, 0), "hammy": (0, 4),
              "leaning": (6, 4)}

    found = {clue.token: clue.probability for clue in clues(counts, 10, 10)}

    assert found == pytest.approx({"spammy": 9.5 / 10, "hammy": 0.5 / 5, "once": 0.75})


def test_clues_are_the_most_significant_tokens() -> None:
    # (10, 0): f = 0.95; (10, 1): f = 0.875; (10, 2): f = 0.81 -- 67, 67 and 66 tokens
    many = {f"t{i}": (10, i % 3) for i in range(MAX_CLUES + 50)}

    strongest = {clue.token for clue in clues(many, 10, 10)}

    assert len(strongest) == MAX_CLUES
    assert {token for token, (_, ham) in many.items() if ham < 2} < strongest


@pytest.mark.parametrize(("probability", "name", "score"), [
    # at a band's lowest probability, its score; inside it, on the line to the next band's
    (0.0, "BAYES_00", -2.5), (0.01, "BAYES_05", -1.5), (0.03, "BAYES_05", -1.25),
    (0.5, "BAYES_50", 0.5), (0.8, "BAYES_80", 2.0), (0.85, "BAYES_80", 2.5),
    (0.99, "BAYES_99", 5.0), (0.995, "BAYES_99", 5.278), (0.9995, "BAYES_999", 5.75),
    (1.0, "BAYES_999", BAYES_MAX_SCORE)])
def test_symbols_follow_spamassassins_bands(probability: float, name: str, score: float) -> None:
    symbol = bayes_symbol(probability, 12)

    assert symbol.name == name
    assert symbol.score == pytest.approx(score, abs=1e-3)
    assert "12 tokens" in symbol.detail


def test_the_score_rises_with_the_probability_without_jumps() -> None:
    grid = [n / 10_000 for n in range(10_001)]
    scores = [bayes_symbol(p, 1).score for p in grid]

    assert scores == sorted(scores)
    assert len(set(scores)) > 1_000  # a threshold can fall between any two messages
    for lowest, _, score in BAYES_BANDS[:-1]:  # just under a band edge: its score, nearly
        assert bayes_symbol(lowest - 1e-9, 1).score == pytest.approx(score, abs=1e-3)


def test_the_bands_cover_zero_to_one_highest_first() -> None:
    lows = [low for low, _, _ in BAYES_BANDS]
    assert lows == sorted(lows, reverse=True)
    assert lows[-1] == 0.0


def test_near_certainty_tags_a_message_on_its_own_and_certain_ham_scores_below_zero() -> None:
    assert bayes_symbol(0.99, 20).score >= 5.0  # the default tag threshold
    assert bayes_symbol(0.0, 20).score < 0 < bayes_symbol(0.9, 20).score


# -- fingerprints -------------------------------------------------------------------------


def test_a_fingerprint_ignores_added_headers_and_line_endings() -> None:
    raw = message("Line one\nLine two\n")
    relayed = (b"Received: from mx.remote.test by gw.example.test\r\nX-Spam-Score: 3.1\r\n"
               + raw.replace(b"\n", b"\r\n").replace(b"Line two", b"Line two   "))

    assert fingerprint(relayed) == fingerprint(raw)
    assert fingerprint(message("Line one\nLine 2\n")) != fingerprint(raw)
    assert fingerprint(message("Line one\nLine two\n", message_id="<2@remote.test>")) \
        != fingerprint(raw)
    assert len(fingerprint(b"no header or body")) == 64


# -- the classifier -------------------------------------------------------------------------


@pytest.fixture
def classifier(sqlite_url: str) -> Iterator[BayesClassifier]:
    store = open_store(sqlite_url)
    bayes = BayesStore(store.engine)
    yield BayesClassifier(bayes, min_spam=2, min_ham=2)
    bayes.close()
    store.close()


def learn(classifier: BayesClassifier, raw: bytes, spam: bool) -> bool:
    return classifier.learn(parse_message(raw), raw, spam)


def test_no_opinion_until_enough_spam_and_ham_are_learned(classifier: BayesClassifier) -> None:
    probe = parse_message(message("alpha"))
    assert classifier.classify(probe) == (None, None)
    learn(classifier, message("alpha", message_id="<s1@x>"), spam=True)
    learn(classifier, message("bravo", message_id="<h1@x>"), spam=False)
    learn(classifier, message("bravo", message_id="<h2@x>"), spam=False)

    assert classifier.classify(probe) == (None, None)


def test_classify_matches_the_hand_computed_probability(classifier: BayesClassifier) -> None:
    """Two spam say "alpha delta", two ham say "bravo": everything else is shared, so it
    counts 0.5 and is left out. alpha: 2 of 2 spam, 0 of 2 ham: f = (0.5 + 2 * 1) / 3 = 5/6."""
    for n in (1, 2):
        learn(classifier, message("alpha delta", message_id=f"<s{n}@x>"), spam=True)
        learn(classifier, message("bravo", message_id=f"<h{n}@x>"), spam=False)

    # One clue: spamminess = 1 - (1 - f) = f, hamminess = 1 - f, so the result is f.
    one, symbol = classifier.classify(parse_message(message("alpha charlie")))
    assert one == pytest.approx(5 / 6)
    # BAYES_80 runs from 2.0 at 0.80 to 3.5 at 0.95: 2.0 + 1.5 * (5/6 - 0.8) / 0.15
    assert symbol is not None and symbol.name == "BAYES_80"
    assert symbol.score == pytest.approx(2 + 1.5 * (5 / 6 - 0.8) / 0.15, abs=1e-3)
    # Two clues of 5/6: (1 - (1/36)(1 + ln 36) - (1 - (25/36)(1 + ln 36/25)) + 1) / 2
    two, _ = classifier.classify(parse_message(message("alpha delta")))
    assert two == pytest.approx(0.910174, abs=1e-6)
    # One each way cancels out.
    even, symbol = classifier.classify(parse_message(message("alpha bravo")))
    assert even == pytest.approx(0.5)
    assert symbol is not None and symbol.name == "BAYES_50"


def test_learning_a_message_twice_is_a_no_op_and_relearning_moves_it(
        classifier: BayesClassifier) -> None:
    raw = message("wire transfer urgent", message_id="<m@x>")
    tokens = tokenize(parse_message(raw))

    assert learn(classifier, raw, spam=True)
    assert not learn(classifier, raw, spam=True)
    assert classifier.store.totals() == (1, 0)
    assert set(classifier.store.counts(tokens).values()) == {(1, 0)}

    assert learn(classifier, raw, spam=False)
    assert classifier.store.totals() == (0, 1)
    assert set(classifier.store.counts(tokens).values()) == {(0, 1)}


def test_learn_many_passes_over_input_that_is_not_a_message(
        classifier: BayesClassifier) -> None:
    raws = [message("one", message_id="<1@x>"), b"", message("two", message_id="<2@x>"),
            message("one", message_id="<1@x>")]

    assert classifier.learn_many((raw, True) for raw in raws) == (2, 0)
    assert classifier.store.totals() == (2, 0)


def test_symbols_add_the_ngram_model_once_it_has_learned_enough(
        classifier: BayesClassifier) -> None:
    probe = message("cheap pills here", subject="Pills", message_id="<p@x>")
    assert classifier.symbols(parse_message(probe), probe) == []  # nothing learned yet
    for n in (1, 2):  # Bayes counts only, as a store trained before the model
        raw = message("cheap pills", message_id=f"<old{n}@x>")
        classifier.store.learn(f"old{n}", tokenize(parse_message(raw)), True)
        classifier.store.learn(f"oldh{n}", {"minutes"}, False)
    [only] = classifier.symbols(parse_message(probe), probe)
    assert only.name.startswith("BAYES_")

    for n in range(4):
        learn(classifier, message("cheap pills now", subject="Pills", message_id=f"<s{n}@x>"),
              spam=True)
        learn(classifier, message("minutes of the meeting", message_id=f"<h{n}@x>"),
              spam=False)

    bayes, model = classifier.symbols(parse_message(probe), probe)
    assert bayes.name.startswith("BAYES_") and model.name == ngrams.SYMBOL
    found = ngrams.features(probe)
    odds = ngrams.log_odds(classifier.store.weights(found), found)
    assert model.score == pytest.approx(ngrams.SCALE * odds, abs=1e-3)
    ham = message("minutes of the meeting", message_id="<q@x>")
    assert classifier.symbols(parse_message(ham), ham)[1].score < 0 < model.score


def test_both_classifiers_together_add_at_most_the_learned_cap(
        classifier: BayesClassifier) -> None:
    for n in range(40):
        learn(classifier, message(f"casino jackpot bonus winner {n}", subject="Win",
                                  message_id=f"<s{n}@x>"), spam=True)
        learn(classifier, message(f"minutes of the meeting {n}", message_id=f"<h{n}@x>"),
              spam=False)
    probe = message("casino jackpot bonus winner", subject="Win", message_id="<p@x>")

    bayes, model = classifier.symbols(parse_message(probe), probe)

    assert bayes.score + model.score == pytest.approx(LEARNED_MAX_SCORE)
    assert bayes.score > LEARNED_MAX_SCORE - ngrams.MAX_SCORE  # so the model was capped
    assert "capped" in model.detail
