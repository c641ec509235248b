"""spoolgate/scan/content.py: each content rule fires on the kind of text it describes, where
its rule says (Subject, body, the visible text of HTML), and not on ordinary text near it;
each link shape; the prefilter never hides a match; hostile input; the labelled corpus."""

from __future__ import annotations

import time
from collections import Counter
from email.message import EmailMessage
from pathlib import Path

import pytest

from spoolgate.mime.parse import parse_message
from spoolgate.scan.content import LINK_RULES, RULES, Where, content_symbols, fold
from spoolgate.scan.ratware import ratware_symbols
from tests.conftest import CORPUS

RULE = {rule.name: rule for rule in RULES}


def message(body: str = "See you at noon.", subject: str = "lunch",
            to: str = "Bob <bob@example.test>", html: bool = False) -> bytes:
    mail = EmailMessage()
    mail["From"] = "Alice <alice@remote.test>"
    mail["To"] = to
    mail["Subject"] = subject
    mail.set_content(body, subtype="html" if html else "plain")
    return mail.as_bytes()


def names(data: bytes) -> set[str]:
    return {symbol.name for symbol in content_symbols(parse_message(data))}


def test_an_ordinary_message_matches_no_rule() -> None:
    assert names(message("Shall we meet at noon to go over the quarterly figures?")) == set()


# (rule, text it fires on, ordinary text near it that it must not fire on)
PHRASES = [
    ("PHRASE_PHARMA", "Buy Viagra and Cialis, no prescription needed",
     "I picked up my prescription on the way to Somalia"),
    ("PHRASE_ENLARGE", "Male enhancement: bigger and harder in days",
     "We need a bigger disk for the build server"),
    ("PHRASE_REPLICA", "Replica watches of every brand",
     "The database replica is lagging behind the primary"),
    ("PHRASE_LOAN", "Refinance your mortgage even with bad credit",
     "Can I borrow your projector for the talk?"),
    ("PHRASE_MONEY_EASY", "Earn $5,000 a week working from home",
     "We make progress on the payments module"),
    ("PHRASE_ADVANCE_FEE", "I am a barrister; the next of kin of my late client may claim the funds",
     "My father's estate agent called about the flat"),
    ("PHRASE_ACCOUNT_PHISH", "Verify your account within 24 hours or it will be suspended",
     "I updated the account settings page yesterday"),
    ("PHRASE_STOCK", "Hot stock alert: shares are poised to explode",
     "The stock of printer paper is low again"),
    ("PHRASE_DIPLOMA", "University diplomas: obtain a prosperous future",
     "She received her diploma last June"),
    ("PHRASE_SOFTWARE_OEM", "OEM software: Adobe Photoshop for only $59.95",
     "Microsoft released an update to Windows today"),
    ("PHRASE_WEIGHT_LOSS", "Lose 20 pounds with our diet pills",
     "Don't lose the keys to the office"),
    ("PHRASE_CASINO", "Online casino: 200 free spins on signup",
     "The casino scene in the film was too long"),
    ("PHRASE_ADULT", "Hot singles in your area are waiting",
     "Our singles tournament starts at noon"),
    ("PHRASE_URGENCY", "Act now: limited time offer", "This is urgent: the build is broken"),
    ("PHRASE_GUARANTEE", "100% guaranteed, risk-free, no obligation",
     "I can't guarantee we will finish by Friday"),
    ("PHRASE_DISCOUNT", "Save 70% on every order", "Test coverage rose to 85% this week"),
    ("PHRASE_FREE_OFFER", "Claim your free gift today", "Feel free to join us for lunch"),
]
BODY_ONLY = [
    ("PHRASE_NOT_SPAM", "This email is not spam: you are receiving this email because you "
     "signed up", "The spam filter kept my invoice; can you look at it?"),
    ("PHRASE_REMOVE_ME", "To be removed from our list, reply with REMOVE in the subject",
     "Please remove the old backups from the server"),
    ("PHRASE_CLICK_HERE", "Click here to see your prize", "Double-click the icon to install"),
    ("PHRASE_DEAR_STRANGER", "Dear Friend,\nI have an offer for you",
     "Dear Alice,\nmy dear friend Bob says hello\n> Dear Friend, quoted from spam"),
    # prices within one line: "." does not cross lines, so one price per line is no list
    ("PHRASE_PRICE_LIST", "Viagra $3.50, Cialis $2.99, Xanax $1.25",
     "The taxi cost $35\nthe lunch $12\nthe hotel $90"),
]
SUBJECT_ONLY = [
    ("SUBJECT_SHOUTS", "FREE MONEY FOR YOU", "Re: Meeting at 10 AM"),
    ("SUBJECT_SHOUTS", "Act now!!", "Re: [ILUG] NFS question"),
    ("SUBJECT_MONEY", "Win $500 today", "lunch on Friday"),
]


def test_every_rule_is_exercised_here() -> None:
    tested = {name for name, _, _ in PHRASES + BODY_ONLY + SUBJECT_ONLY}
    assert tested == set(RULE), "a new rule needs a case here"
    assert {name for name, _, _ in PHRASES} == {r.name for r in RULES if r.where is Where.ANY}


@pytest.mark.parametrize(("rule", "spam", "ordinary"), PHRASES, ids=[p[0] for p in PHRASES])
def test_a_phrase_rule_fires_in_the_subject_the_body_and_html_text(
        rule: str, spam: str, ordinary: str) -> None:
    assert rule in names(message(subject=spam))
    assert rule in names(message(body=spam))
    assert rule in names(message(body=f"<p>{spam}</p>", html=True))
    assert rule not in names(message(ordinary, subject=ordinary))
    assert rule not in names(message(f"<p>{ordinary}</p>", subject=ordinary, html=True))


@pytest.mark.parametrize(("rule", "spam", "ordinary"), BODY_ONLY, ids=[p[0] for p in BODY_ONLY])
def test_a_body_rule_fires_in_the_body_only(rule: str, spam: str, ordinary: str) -> None:
    assert rule in names(message(body=spam))
    assert rule in names(message(body="<p>" + spam.replace("\n", "<br>") + "</p>", html=True))
    assert rule not in names(message(subject=spam.replace("\n", " ")))
    assert rule not in names(message(body=ordinary))


@pytest.mark.parametrize(("rule", "spam", "ordinary"), SUBJECT_ONLY,
                         ids=[p[0] for p in SUBJECT_ONLY])
def test_a_subject_rule_fires_in_the_subject_only(rule: str, spam: str, ordinary: str) -> None:
    assert rule in names(message(subject=spam))
    assert rule not in names(message(body=spam))
    assert rule not in names(message(subject=ordinary))


def test_markup_does_not_count_as_text() -> None:
    hidden = ('<p title="viagra replica watches" class="free-gift">Minutes</p>'
              '<!-- click here, act now --><style>.dear-friend {color: blue}</style>')
    assert names(message(hidden, html=True)) == set()


def test_a_symbol_shows_the_matched_words() -> None:
    [symbol] = [s for s in content_symbols(parse_message(message("Cheap  VIAGRA\n here")))
                if s.name == "PHRASE_PHARMA"]
    assert symbol.detail == "VIAGRA"
    assert symbol.score == RULE["PHRASE_PHARMA"].score


def test_each_rule_fires_at_most_once_per_message() -> None:
    spam = ("Viagra! Cialis! Xanax! Click here. Click below. Act now. Buy now. "
            "http://192.0.2.1/a http://192.0.2.2/b http://bit.ly/x http://tinyurl.com/y "
            "V-I-A-G-R-A c!al!s zero\u200bwidth\u00adhyphen")
    found = [s.name for s in content_symbols(parse_message(message(spam, subject="$5 $6 !!")))]
    assert len(found) == len(set(found))
    assert {"PHRASE_PHARMA", "URI_NUMERIC_HOST", "URI_SHORTENER", "WORDS_SPELLED_APART",
            "INVISIBLE_CHARACTERS"} <= set(found)


@pytest.mark.parametrize("text", [
    "VIAGRA", "v\u0130agra", "v\u0131agra", "\u017fexy girls", "FREE GIFT", "\u212aamagra",
    "Cl\u0130ck HERE", "m\u00e9lange of r\u00e9sum\u00e9s, no prescription"])
def test_the_prefilter_never_hides_what_the_pattern_finds(text: str) -> None:
    # re.I matches dotless i, long s, the Kelvin sign and capital I with a dot as ASCII letters
    for rule in RULES:
        found = rule.search(text, fold(text))
        expected = rule.pattern.search(text)
        assert (found and found.group()) == (expected and expected.group()), rule.name


def test_the_common_rules_have_a_prefilter() -> None:
    # Without one, a rule still works but searches every text: a pattern the parse cannot read.
    assert [rule.name for rule in RULES if rule.words is None] == ["SUBJECT_SHOUTS"]


# -- links ----------------------------------------------------------------------------

LINKS = [
    ("URI_NUMERIC_HOST", ["http://192.0.2.7/login", "http://3221225991/", "http://0xC0000207/x"],
     ["http://www.example.test/2024/10/1.2.3.4", "http://1.2.3.4.example.test/",
      "version 1.2.3.4 is out"]),
    ("URI_PORT", ["http://shop.example.test:8080/buy"],
     ["http://shop.example.test:80/", "https://shop.example.test:443/", "at 10:30 today"]),
    ("URI_USERINFO", ["http://www.bank.test@evil.test/login"],
     ["http://user@host.example.test/", "mail bob@example.test please"]),
    ("URI_REDIRECT", ["http://r.example.test/go?url=http://evil.test/",
                      "https://t.example.test/c?a=1&redirect=www.evil.test"],
     ["http://example.test/search?q=http-status", "http://example.test/p?page=2&lang=en"]),
    ("URI_SHORTENER", ["http://bit.ly/3xYz", "https://www.tinyurl.com/abc"],
     ["https://www.example.test/bit.ly", "http://bitly.example.test/"]),
    ("URI_ENCODED_HOST", ["http://w%77w.example.test/", "http://www&#46;example.test/"],
     ["http://example.test/a%20b", "http://example.test/?q=%41"]),
    ("URI_RANDOM_HOST", ["http://xk3j9q2m7z8w1.example.test/", "http://www.qzxrtvb.test/"],
     ["http://www.mailinglists.example.test/", "http://www.example.test/"
      "k3j9q2m7z8w1k3j9q2", "http://server42.example.test/"]),
]


@pytest.mark.parametrize(("rule", "shaped", "plain"), LINKS, ids=[link[0] for link in LINKS])
def test_a_link_shape_fires_in_text_and_in_hrefs(rule: str, shaped: list[str],
                                                 plain: list[str]) -> None:
    for link in shaped:
        assert rule in names(message(f"See {link} now")), link
        assert rule in names(message(f'<a href="{link}">your bank</a>', html=True)), link
    for text in plain:
        assert rule not in names(message(f"See {text} now")), text
        assert rule not in names(message(f'<a href="{text}">here</a>', html=True)), text


def test_a_link_in_the_subject_or_shown_as_anchor_text_is_not_read_as_a_link() -> None:
    assert "URI_NUMERIC_HOST" not in names(message(subject="http://192.0.2.7/"))
    html = '<a href="https://www.example.test/">http://192.0.2.7/</a>'
    # anchor text is visible text: a link written out in the text counts, as in plain text
    assert "URI_NUMERIC_HOST" in names(message(html, html=True))
    assert "URI_NUMERIC_HOST" not in names(message('<img alt="http://192.0.2.7/">', html=True))


def test_every_link_rule_is_exercised_here() -> None:
    tested = {link[0] for link in LINKS} | {
        "WORDS_SPELLED_APART", "INVISIBLE_CHARACTERS", "SUBJECT_HAS_RECIPIENT", "WORD_SALAD"}
    assert tested == set(LINK_RULES)


# -- tricks ---------------------------------------------------------------------------


@pytest.mark.parametrize("spelled", ["V-i-a-g-r-a", "v i a g r a", "V.I.A.G.R.A", "c!al!s",
                                     "m0rtgage", "fr3e m0ney"])
def test_words_spelled_apart_or_with_digits(spelled: str) -> None:
    assert "WORDS_SPELLED_APART" in names(message(f"Get {spelled} here"))
    assert "WORDS_SPELLED_APART" in names(message(subject=f"Get {spelled} here"))


@pytest.mark.parametrize("ordinary", ["U.S.A. and the E.U.", "a b c d e f", "mp3 and html5",
                                      "b2b, 4x4, 1337", "money free viagra", "i-n-v-o-i-c-e"])
def test_ordinary_initials_versions_and_plain_words_are_not_spelled_apart(ordinary: str) -> None:
    assert "WORDS_SPELLED_APART" not in names(message(ordinary, subject=ordinary))


def test_invisible_characters_in_the_subject_or_body() -> None:
    assert "INVISIBLE_CHARACTERS" in names(message("vi\u200bagra"))
    assert "INVISIBLE_CHARACTERS" in names(message(subject="fr\u00adee gift"))
    # removed before the phrase rules read the text: the hidden word is still found
    assert "PHRASE_PHARMA" in names(message("vi\u200bagra"))
    assert "INVISIBLE_CHARACTERS" not in names(message("caf\u00e9 \u2013 na\u00efve"))


def test_a_subject_naming_the_recipients_mailbox() -> None:
    to = "jsmith@example.test"
    assert "SUBJECT_HAS_RECIPIENT" in names(message(subject="jsmith, your invoice", to=to))
    assert "SUBJECT_HAS_RECIPIENT" in names(message(subject="Hello JSMITH!", to=to))
    assert "SUBJECT_HAS_RECIPIENT" not in names(message(subject="jsmithson's notes", to=to))
    assert "SUBJECT_HAS_RECIPIENT" not in names(
        message(subject="Re: mail from jsmith@example.test", to=to))
    assert "SUBJECT_HAS_RECIPIENT" not in names(message(subject="bob, lunch?", to="bob@x.test"))


def test_a_list_tag_naming_the_list_mailbox_is_not_the_recipients_name() -> None:
    to = "ilug@linux.example.test"
    assert "SUBJECT_HAS_RECIPIENT" not in names(message(subject="[ILUG] NFS question", to=to))
    assert "SUBJECT_HAS_RECIPIENT" not in names(message(subject="Re: (ilug) NFS", to=to))


# -- hostile input --------------------------------------------------------------------


@pytest.mark.parametrize(("subject", "body", "html"), [
    ("x", "!" * 5_000_000, False),
    (" " * 100_000, "x", False),
    ("x", "<b>" * 100_000 + "deep", True),
    ("x", "<div><font color=red size=7>" * 30_000, True),
    ("x", "http://" + "a" * 1_000_000 + ".test/", False),
    ("x", '<a href="http://' + "1" * 1_000_000 + '/">x</a>', True),
    ("x", "v i a g r " * 200_000, False),
    ("x", "$1 " * 1_000_000, False),
], ids=["bangs", "spaces", "nested", "nested-fonts", "long-link", "long-href", "letters",
        "prices"])
def test_hostile_input_is_judged_without_error_in_bounded_time(subject: str, body: str,
                                                                html: bool) -> None:
    parsed = parse_message(message(body, subject=subject, html=html))
    started = time.monotonic()
    found = content_symbols(parsed)
    assert time.monotonic() - started < 10.0  # a hang detector, not a benchmark
    assert len({s.name for s in found}) == len(found)
    assert all(len(s.detail) <= 80 for s in found)


# -- the labelled corpus ----------------------------------------------------------------

HAM = ("spamassassin/ham", "csdmc2010/ham")
SPAM = ("spamassassin/spam", "csdmc2010/spam")
MAX_HAM_SHARE = 0.02


def labelled(folders: tuple[str, ...]) -> list[Path]:
    roots = [CORPUS / folder for folder in folders]
    missing = [str(root) for root in roots if not root.is_dir()]
    if missing:
        pytest.skip(f"labelled corpus not found at {', '.join(missing)} (set SPOOLGATE_CORPUS)")
    return sorted(path for root in roots for path in root.iterdir() if path.is_file())


def rule_names(path: Path) -> set[str]:
    parsed = parse_message(path.read_bytes())
    return {s.name for s in (*content_symbols(parsed), *ratware_symbols(parsed))}


def test_no_content_or_ratware_rule_fires_on_more_than_2_percent_of_ham() -> None:
    # Pooled over both collections. Measured (2026-11-29): the most frequent are
    # SUBJECT_SHOUTS 1.7 % (2.3 % of spamassassin/ham alone) and PHRASE_REMOVE_ME 1.5 %
    # (2.2 % of spamassassin/ham alone); every other rule fires on at most 1.2 %.
    paths = labelled(HAM)
    fired = Counter(name for path in paths for name in rule_names(path))
    too_often = {name: f"{count / len(paths):.1%}" for name, count in fired.items()
                 if count > MAX_HAM_SHARE * len(paths)}
    assert not too_often, too_often


def test_most_spam_has_a_content_or_ratware_symbol() -> None:
    # Measured (2026-11-29): 97 % of spamassassin/spam and 85 % of csdmc2010/spam, 90 % pooled
    # (and 8.9 % of the ham above). The floor is well below, for rules the lead retunes.
    paths = labelled(SPAM)
    flagged = sum(bool(rule_names(path)) for path in paths)
    assert flagged >= 0.75 * len(paths), f"{flagged} of {len(paths)} spam flagged"


# A hash-buster paragraph as 2010 spam drew it from an encyclopedia, and prose with as many
# short function words that English would write.
SALAD = ("of symbol climate Spychips began archaic this depositary Originally and population "
         "Sasaki city which towels the Burkert groundwater in than Mineralogy in Retention This "
         "modern DNA of the Union element until A York Patrick In exploration out Albert Fuller "
         "the of a and the in of to Prussia and or the for President that bursts the a of")
PROSE = ("The minutes of the meeting are attached. In the first part of the talk we went over "
         "the plan for the move to the new office, and in the second we agreed on a date for "
         "the review of the budget with the board and the staff of the branch in York.")


def test_word_salad_is_told_by_word_pairs_english_never_has() -> None:
    assert "WORD_SALAD" in names(message(SALAD * 2))
    assert "WORD_SALAD" not in names(message(PROSE * 4))
    assert "WORD_SALAD" not in names(message("the of"))  # a slip is not salad
