"""Content rules of the built-in scanner: what spam says and how it hides it.

Owns the rules that read a message's words and links rather than its headers: the phrases
of the kinds of spam that every mailbox has seen for twenty years (pills, replica watches,
loans, lotteries and advance-fee fraud, phishing for accounts, stock tips, diplomas,
cheap software, adult content, "this is not spam"), the tricks that hide those words from
filters (letters spaced or punctuated apart, digits for letters, invisible characters),
and the shapes of links that bulk senders use (numeric hosts, ports, user-info, redirects,
shorteners, long random host labels). They describe spam, not any one collection: none
names a site, a person, a year or a list.

Each rule is a :class:`ContentRule` in :data:`RULES`, a registry: a rule is added by adding
an entry; the literal words its pattern needs are read from the pattern, and a text holding
none of them is not searched (most of the cost of case-insensitive alternations, spared
without a second list to keep in step). Scores are in SpamAssassin's scale (5 tags); no
rule here decides alone. Pure functions of the one parse (:mod:`spoolgate.mime.parse`): no
I/O, bounded text, nothing a message contains makes them raise.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from re import _constants as sre  # private: how re parses a pattern, to read its words
from re import _parser as sre_parse
from urllib.parse import unquote

from spoolgate.mail.verdict import Symbol
from spoolgate.mime.parse import ParsedMessage, addresses, html_to_text

MAX_TEXT = 64 * 1024  # characters of visible body text the phrase rules read
MAX_MARKUP = 256 * 1024  # characters of HTML read for links
MAX_LINKS = 200


class Where(Enum):
    SUBJECT = "subject"
    BODY = "body"
    ANY = "subject or body"


@dataclass(frozen=True, slots=True)
class ContentRule:
    """A pattern that, found in the Subject and/or the visible body text, adds *score*.

    *words* are the pattern's literal words of which every match contains one (lower-cased;
    None when the pattern has none): a text of none of them is not searched, which spares
    most of the time the case-insensitive alternations take.
    """

    name: str
    score: float
    description: str
    where: Where
    pattern: re.Pattern[str]
    words: frozenset[str] | None = field(default=None, compare=False)

    def search(self, haystack: str, folded: str) -> re.Match[str] | None:
        """The first match in *haystack*, whose :func:`fold` is *folded*."""
        if self.words is not None and not any(word in folded for word in self.words):
            return None
        return self.pattern.search(haystack)


def _rule(name: str, score: float, description: str, where: Where, pattern: str) -> ContentRule:
    return ContentRule(name, score, description, where, re.compile(pattern, re.I),
                       _needed_words(pattern))


# str.lower() is the case folding of re.I for every ASCII character but these: re.I also
# reads dotless i as i and long s as s, and takes "İ" as "i" where lower() makes two
# characters of it (checked against re.I for every code point and printable ASCII).
_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s"})


def fold(text: str) -> str:
    """*text* as the prefilter of :class:`ContentRule` reads it: a character re.I matches
    with an ASCII character becomes that character lower-cased."""
    return text.lower() if text.isascii() else text.translate(_FOLD).lower()


def _needed_words(pattern: str) -> frozenset[str] | None:
    try:
        words = _needed(sre_parse.parse(pattern, re.I).data)
    except Exception:  # a future re whose parse tree reads otherwise: no prefilter
        return None
    return words if words and all(word.isascii() for word in words) else None


def _needed(items: list) -> frozenset[str] | None:
    """Literal strings of which every match of the parsed sequence *items* contains one
    (None when there are none): the most selective of its runs of literal characters and
    of the sets its groups and alternations need, by their shortest string."""
    found: list[frozenset[str]] = []
    run = ""
    for op, value in items:
        if op is sre.LITERAL:
            run += chr(value)
            continue
        if run:
            found.append(frozenset({run.lower()}))
            run = ""
        if op is sre.SUBPATTERN:
            needed = _needed(value[3])
        elif op is sre.BRANCH:
            each = [_needed(branch) for branch in value[1]]
            needed = None if None in each else frozenset().union(*each)
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT) and value[0] >= 1:
            needed = _needed(value[2])
        else:
            needed = None
        if needed:
            found.append(needed)
    if run:
        found.append(frozenset({run.lower()}))
    return max(found, key=lambda words: min(map(len, words)), default=None)


# Word lists are alternations inside \b...\b; each rule is one kind of spam or one trick.
RULES: tuple[ContentRule, ...] = (
    _rule("PHRASE_PHARMA", 2.5, "sells prescription drugs", Where.ANY,
          r"\b(?:viagra|cialis|levitra|valium|xanax|vicodin|tramadol|phentermine|ambien"
          r"|soma|propecia|meridia|oxycontin|hydrocodone|kamagra|erectile|impotence"
          r"|(?:online|canadian?|mexican|discount) (?:pharmacy|drugstore|meds)"
          r"|(?:no|without a?) prescription(?: needed| required)?|generic (?:drugs|pills|meds))\b"),
    _rule("PHRASE_ENLARGE", 2.5, "promises enhancement", Where.ANY,
          r"\b(?:penis|enlarge(?:ment)?|bigger (?:and|&) (?:harder|longer)|male enhancement"
          r"|(?:last|lasts) longer in bed|her (?:wildest )?dreams|hardness|libido|orgasms?)\b"),
    _rule("PHRASE_REPLICA", 2.0, "sells replica luxury goods", Where.ANY,
          r"\b(?:replica (?:watch|watches|rolex|handbags?|bags|designer|jewelry)|rolex|swiss (?:made )?watch(?:es)?|designer (?:watch(?:es)?|handbags)"
          r"|luxury watch(?:es)?|(?:louis vuitton|gucci|prada|omega|breitling|cartier)\b"
          r".{0,40}\$\d)"),
    _rule("PHRASE_LOAN", 1.5, "offers loans, mortgages or debt relief", Where.ANY,
          r"\b(?:mortgage|refinanc\w*|home loan|debt (?:relief|consolidation|free)"
          r"|(?:low|lower|fixed) (?:interest )?rates?|bad credit|credit (?:repair|report|score)"
          r"|pre-?approved|cash (?:advance|loan)|payday loan|lenders? compete)\b"),
    _rule("PHRASE_MONEY_EASY", 2.0, "promises easy money", Where.ANY,
          r"\b(?:(?:make|earn|making|earning) (?:\$[\d,]+|money|cash|extra (?:income|cash)"
          r"|(?:up to )?\d[\d,]* (?:dollars|a (?:week|month|day)))"
          r"|(?:work|working) (?:from|at) home|extra income|financial freedom|be your own boss"
          r"|(?:home|online) business opportunit\w+|multi-?level marketing|\bmlm\b"
          r"|(?:double|triple) your (?:money|income)|no experience (?:needed|required)"
          r"|residual income|get paid to)\b"),
    _rule("PHRASE_ADVANCE_FEE", 3.0, "advance-fee fraud: a fortune for a favour", Where.ANY,
          r"\b(?:next of kin|(?:foreign|trusted) (?:partner|business partner)|barrister"
          r"|(?:late|deceased) (?:client|husband|father)(?:'s)? (?:fund|estate|account|will)"
          r"|(?:transfer|claim|release) (?:of )?(?:the|this|these) (?:sum|fund|funds|money)"
          r"|(?:diplomatic|security) (?:company|courier|vault)|confidential (?:business )?"
          r"(?:transaction|proposal)|(?:western union|moneygram) (?:transfer|payment)"
          r"|(?:lottery|lotto|sweepstakes?) (?:winner|award|program|board)|winning (?:number"
          r"|notification)|claims? (?:agent|officer)|(?:percent|%) of the (?:total )?(?:sum|fund"
          r"|amount) (?:for|as|to) you)\b"),
    _rule("PHRASE_ACCOUNT_PHISH", 2.5, "asks to verify or restore an account", Where.ANY,
          r"\b(?:(?:verify|confirm|validate|update|reactivate|restore|unlock) (?:your|the)"
          r" (?:account|identity|password|billing|mailbox|email account|information|details)"
          r"|(?:account|mailbox) (?:has been |will be |is )?(?:suspended|locked|disabled|limited"
          r"|deactivated|closed|blocked)|(?:mailbox|email|inbox) (?:quota|size|storage)"
          r" (?:exceeded|limit|full)|(?:unusual|suspicious) (?:activity|sign-?in|login)"
          r"|security (?:alert|notice|update) (?:for|on) your"
          r"|failure to (?:verify|comply|update)|webmail (?:upgrade|administrator|team))\b"),
    _rule("PHRASE_STOCK", 2.0, "tips a stock", Where.ANY,
          r"\b(?:stock (?:alert|pick|profile|to watch)|hot stock|penny stock|otc ?bb|pink sheets"
          r"|(?:symbol|ticker) ?: ?[a-z]{3,5}\b|(?:target|projected) price|strong buy"
          r"|investor alert|shares? (?:are|is) (?:set|poised|about) to)\b"),
    _rule("PHRASE_DIPLOMA", 2.5, "sells degrees", Where.ANY,
          r"\b(?:university diplomas?|(?:obtain|get|receive) (?:a|your) (?:prosperous future|degree"
          r"|diploma)|no (?:required )?(?:tests|classes|books|exams),|bachelors?,? masters?,"
          r"|non-accredited|diploma (?:program|within))\b"),
    _rule("PHRASE_SOFTWARE_OEM", 2.0, "sells cheap software", Where.ANY,
          r"\b(?:oem software|(?:microsoft|adobe|windows|office|photoshop|autocad)\b.{0,40}"
          r"\$\s?\d{2,3}(?:\.\d\d)?\b|software (?:at|for) (?:low|cheap|discount)"
          r"|(?:download|cheap) software)\b"),
    _rule("PHRASE_WEIGHT_LOSS", 2.0, "promises weight loss", Where.ANY,
          r"\b(?:lose (?:weight|[\d\s-]+ ?(?:lbs?|pounds|kg))|weight loss|fat (?:loss|burn\w*)"
          r"|diet pills?|burn fat|appetite suppressant|hoodia|acai)\b"),
    _rule("PHRASE_CASINO", 2.0, "promotes online gambling", Where.ANY,
          r"\b(?:online casino|casino bonus|free spins|blackjack|roulette|slot machines?"
          r"|poker (?:room|bonus)|(?:welcome|deposit|signup) bonus)\b"),
    _rule("PHRASE_ADULT", 2.5, "adult content", Where.ANY,
          r"\b(?:(?:free|hardcore|teen|amateur) porn\w*|porn (?:sites?|movies|videos|stars)"
          r"|(?:nude|naked) (?:girls|teens|women|pics|photos|celebrities)"
          r"|sexy? (?:girls|teens|women|wives|singles)"
          r"|hot (?:girls|singles|babes|teens)|horny|lonely (?:wives|women|housewives)"
          r"|(?:adult|live) (?:dating|webcams?|video)|camgirls?|barely legal)\b"),
    _rule("PHRASE_NOT_SPAM", 3.0, "insists it is not spam", Where.BODY,
          r"\b(?:this (?:e-?mail |message )?is not (?:spam|unsolicited)|not (?:a )?spam"
          r"|bill s\.? ?1618|section 301|under (?:the )?(?:bill|us law|federal law)"
          r".{0,40}(?:cannot|can not|not) be considered spam|you (?:are receiving|received)"
          r" this (?:e-?mail|message) because you (?:(?:have )?(?:opted|signed|registered|agreed)"
          r"|are (?:on|a member)))"),
    _rule("PHRASE_REMOVE_ME", 1.5, "offers removal from a mailing it never asked for",
          Where.BODY,
          r"\b(?:to be removed from (?:our|this|the|my|future|all)|(?:remove|removal) (?:me|request)|reply with (?:\"|')?remove"
          r"|(?:(?:with|type|put) )?[\"']?remove[\"']? in the subject|no longer wish to receive"
          r"|opt[- ]?out (?:of|from|below|here)|to (?:stop|discontinue) receiving)\b"),
    _rule("PHRASE_URGENCY", 1.0, "pushes to act now", Where.ANY,
          r"\b(?:act now|order now|call now|buy now|don'?t (?:delete|miss|wait)|limited time"
          r"|(?:offer|sale) ends|expires? (?:today|soon|tonight)|while supplies last"
          r"|today only|last chance|urgent (?:reply|response|attention|assistance)"
          r"|once in a lifetime)\b"),
    _rule("PHRASE_GUARANTEE", 1.0, "guarantees, risk-free, no obligation", Where.ANY,
          r"\b(?:100 ?% (?:free|guaranteed|satisfaction|natural|legal|safe|secure)"
          r"|risk[- ]free|no obligation|money[- ]back guarantee|satisfaction guaranteed"
          r"|no (?:hidden|setup) (?:costs|fees)|no catch|no strings attached|guaranteed"
          r" (?:results|income|approval|lowest))\b"),
    _rule("PHRASE_DISCOUNT", 1.0, "a price cut in percent", Where.ANY,
          r"(?:\b(?:save|up to|get|discounts?|off|reduced by|cut(?: prices)? (?:to|by))"
          r"\s*-?\d{2}\s?%|\b\d{2}\s?% (?:off|discount|savings?)\b)"),
    _rule("PHRASE_FREE_OFFER", 1.0, "free gifts and offers", Where.ANY,
          r"\b(?:free (?:gift|trial|offer|bonus|sample|shipping|access|membership|quote"
          r"|consultation|instant|info|money|cash|vacation|cruise|ipod|laptop)"
          r"|you(?:'ve| have)? (?:just )?won (?:a|an|the) \w+|claim your (?:free|prize|gift|reward))"
          r"\b"),
    _rule("PHRASE_CLICK_HERE", 0.8, "click here / click below", Where.BODY,
          r"\b(?:click (?:here|below|the link|on the link|this link|now)|follow the link below"
          r"|visit (?:our|the) (?:web ?site|site) (?:below|here|now))\b"),
    _rule("PHRASE_DEAR_STRANGER", 1.0, "greets a stranger", Where.BODY,
          r"(?m)^[^\w>]{0,5}(?:dear (?:friend|sir(?:/| or )madam|sir|madam|valued (?:customer|member|user)"
          r"|(?:e-?mail |account |web ?mail )?(?:user|customer|member|client|beneficiary"
          r"|account holder|winner)))"),
    _rule("PHRASE_PRICE_LIST", 0.8, "lists prices", Where.BODY,
          r"(?:\$\s?\d+(?:\.\d\d)?\b.{0,60}){3}"),
    _rule("SUBJECT_SHOUTS", 1.5, "Subject in capitals or with repeated ! or $", Where.SUBJECT,
          # capitals are told from small letters case-sensitively: under re.I [^a-z] is no letter
          r"(?:!!|\$\$|!\s*$|^(?-i:(?=[^a-z]*[A-Z]{3}[^a-z]*$)(?=(?:[^A-Za-z]*[A-Za-z]){8})).*$)"),
    _rule("SUBJECT_MONEY", 1.0, "Subject names an amount of money or a percentage",
          Where.SUBJECT, r"(?:\$\s?\d|\d\s?%|\d+ ?(?:usd|eur|dollars)\b)"),
)
_RULES_BY_WHERE = {where: tuple(r for r in RULES if r.where in (where, Where.ANY))
                   for where in (Where.SUBJECT, Where.BODY)}

# Spam spells its words apart so that filters miss them: "V-i-a-g-r-a", "v i a g r a",
# "c1al1s", "V.I.A.G.R.A". A run of single letters split by one separator, or a word
# with a digit standing in for a letter, each counted when it spells a word of the
# obfuscated vocabulary.
_SPELLED_APART = re.compile(r"\b(?:[a-z0-9][\s.\-_*|'+]){3,}[a-z0-9]\b", re.I)
_LEET = str.maketrans("013457@$!|", "oieastasil")
_TARGET_WORDS = frozenset("""viagra cialis levitra valium xanax pharmacy pills meds rolex
    replica casino mortgage refinance loan credit cash money free sex porn penis enlarge
    weight diet offer winner lottery prize urgent account password verify bank paypal
    discount cheap sale order buy click""".split())
# Runs of letters and stand-ins that hold a stand-in, each read in pieces of 12 characters
# (longer than any target word); the run's start is anchored, so one pass over the text
# whatever it holds.
_STAND_IN_RUN = re.compile(r"(?<![a-z0-9@$!|])[a-z0-9@$!|]*[0-9@$!|][a-z0-9@$!|]*", re.I)
_PIECE, _SHORTEST_PIECE = 12, 4
_INVISIBLE = re.compile("[\u00ad\u200b\u200c\u200d\u2060\ufeff]")

# Links: (name, score, description) of each shape, detected in :func:`_link_shapes`.
LINK_RULES: dict[str, tuple[float, str]] = {
    "URI_NUMERIC_HOST": (2.0, "a link to a bare IP address"),
    "URI_PORT": (0.8, "a link to a web server on an unusual port"),
    "URI_USERINFO": (2.5, "a link that hides its host behind user@ (http://bank.com@evil)"),
    "URI_REDIRECT": (1.0, "a link through an open redirector (a URL inside the query)"),
    "URI_SHORTENER": (1.0, "a link through a URL shortener"),
    "URI_ENCODED_HOST": (2.0, "a link whose host is percent- or entity-encoded"),
    "URI_RANDOM_HOST": (1.0, "a link whose host label looks machine-made"),
    "WORDS_SPELLED_APART": (2.5, "words spelled apart or with digits for letters"),
    "INVISIBLE_CHARACTERS": (1.5, "invisible characters inside words"),
    "SUBJECT_HAS_RECIPIENT": (1.5, "Subject addresses the recipient by the mailbox name"),
    "WORD_SALAD": (2.5, "random words to poison statistical filters (hash-buster text)"),
}
_SHORTENERS = frozenset("""bit.ly tinyurl.com goo.gl t.co ow.ly is.gd buff.ly tiny.cc
    rebrand.ly cutt.ly shorturl.at rb.gy t.ly s.id v.gd x.co lnkd.in""".split())
_LINK = re.compile(r"(?i)\b(?:https?://|www\.)[^\s\"'<>()]+")
_HREF = re.compile(r"(?i)(?:href|src|action)\s*=\s*[\"']?([^\s\"'<>]+)")
# A host may be written in character references (www&#46;evil): "#" ends it otherwise.
_HOST = re.compile(r"(?i)^(?:https?://)?(?:([^/?#@]*)@)?((?:&#x?[0-9a-f]+;?|[^/?#:])*)"
                   r"(?::(\d+))?")
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$|^0x[0-9a-f]+$|^\d{8,10}$", re.I)
_LABEL_RANDOM = re.compile(r"^(?=.*\d)(?=.*[a-z])[a-z0-9]{12,}$|^[bcdfghjklmnpqrstvwxz]{6,}$")
# Word salad: text made by drawing words at random, to drown a message's words in ones
# filters learned as ham. English never puts an article before an article, preposition
# or conjunction ("the of", "a and"), a preposition before a preposition or conjunction
# ("of to", "in and"), or two conjunctions together; random text does it every few
# lines. Counted over the visible text: SALAD_PAIRS of them, and SALAD_RATE per 100 words.
_ARTICLES = frozenset({"the", "a", "an"})
_PREPOSITIONS = frozenset({"of", "in", "to", "for", "on", "by", "with", "at", "from", "into"})
_CONJUNCTIONS = frozenset({"and", "or", "but", "nor"})
# The words counted: runs of ASCII letters, and each other letter on its own (how the
# rule has always counted: "théâtre" is "th", "é", "â", "tre").
_WORD_RUN = re.compile(r"[A-Za-z]+|[^\x00-\x7f]")


def _any_case(words: frozenset[str]) -> str:
    """An alternation of *words* in any ASCII case (re.I would also match İ, ı, ſ, K)."""
    return "|".join("".join(f"[{c}{c.upper()}]" for c in word)
                    for word in sorted(words, key=len, reverse=True))


# Two whole words with only white space between them (consecutive words of the text), the
# second read ahead so that pairs may overlap ("the the the" is two); a position that
# starts no function word is passed over at its first letter.
_FUNCTION_WORDS = _ARTICLES | _PREPOSITIONS | _CONJUNCTIONS
_INITIALS = "".join(sorted({c for word in _FUNCTION_WORDS for c in (word[0], word[0].upper())}))
_UNGRAMMATICAL_PAIR = re.compile(rf"(?<![A-Za-z])(?=[{_INITIALS}])(?:" + "|".join(
    rf"(?:{_any_case(first)})(?=\s+(?:{_any_case(second)})(?![A-Za-z]))"
    for first, second in ((_ARTICLES, _FUNCTION_WORDS),
                          (_PREPOSITIONS, _PREPOSITIONS | _CONJUNCTIONS),
                          (_CONJUNCTIONS, _CONJUNCTIONS))) + ")")
SALAD_PAIRS, SALAD_RATE = 4, 1.0
_SUBJECT_TAGS = re.compile(r"\[[^\]]*\]|\([^)]*\)")  # [list-name] tags, not a greeting
_REDIRECT = re.compile(r"(?i)[?&][a-z_]*(?:url|redirect|goto|link|target|dest|u)=(?:https?|www)")


def content_symbols(parsed: ParsedMessage) -> list[Symbol]:
    """Every content rule that matches *parsed*, once each, as symbols with their scores."""
    subject = _INVISIBLE.sub("", parsed.subject)
    text, markup = _visible_text(parsed)
    symbols = [Symbol(rule.name, rule.score, _shown(match.group()))
               for rule, match in _matches(subject, text)]
    symbols += [Symbol(name, LINK_RULES[name][0], detail)
                for name, detail in _link_shapes(text, markup)]
    symbols += [Symbol(name, LINK_RULES[name][0], detail)
                for name, detail in _tricks(parsed, subject, text)]
    return symbols


def _matches(subject: str, text: str) -> Iterator[tuple[ContentRule, re.Match[str]]]:
    seen: set[str] = set()
    for where, haystack in ((Where.SUBJECT, subject), (Where.BODY, text)):
        folded = fold(haystack)
        for rule in _RULES_BY_WHERE[where]:
            if rule.name in seen:
                continue
            match = rule.search(haystack, folded)
            if match:
                seen.add(rule.name)
                yield rule, match


def _visible_text(parsed: ParsedMessage) -> tuple[str, str]:
    """(what the inline text parts show, the HTML markup they carry), bounded."""
    shown: list[str] = []
    markup: list[str] = []
    budget = MAX_TEXT
    for part in parsed.parts:
        if part.text is None or part.filename is not None or part.disposition == "attachment":
            continue
        if part.content_type == "text/html":
            markup.append(part.text[:MAX_MARKUP])
            text = html_to_text(part.text[:MAX_MARKUP])
        elif part.content_type.startswith("text/"):
            text = part.text
        else:
            continue
        shown.append(text[:budget])
        budget -= len(shown[-1])
        if budget <= 0:
            break
    return _INVISIBLE.sub("", "\n".join(shown)), "\n".join(markup)


def _shown(matched: str) -> str:
    return " ".join(matched.split())[:60]


def _link_shapes(text: str, markup: str) -> Iterator[tuple[str, str]]:
    links = [m.group() for m in _LINK.finditer(text)][:MAX_LINKS]
    links += [m.group(1) for m in _HREF.finditer(markup)][:MAX_LINKS]
    found: dict[str, str] = {}
    for link in links:
        if link.lower().startswith(("http:", "https:", "www.")):
            for name in _shape(link):
                found.setdefault(name, link[:80])
    yield from found.items()


def _shape(link: str) -> Iterator[str]:
    """The names of the link rules that *link* matches."""
    match = _HOST.match(link)
    if match is None:
        return
    userinfo, host, port = match.group(1), match.group(2).lower().rstrip("."), match.group(3)
    if "%" in host or "&#" in host:
        yield "URI_ENCODED_HOST"
        host = unquote(host)
    if _IPV4.match(host):
        yield "URI_NUMERIC_HOST"
    if port and port not in ("80", "443"):
        yield "URI_PORT"
    if userinfo and "." in userinfo:
        yield "URI_USERINFO"
    if _REDIRECT.search(link):
        yield "URI_REDIRECT"
    if host.removeprefix("www.") in _SHORTENERS:
        yield "URI_SHORTENER"
    labels = host.split(".")
    if len(labels) >= 2 and any(_LABEL_RANDOM.match(label) for label in labels[:-1]):
        yield "URI_RANDOM_HOST"


def _tricks(parsed: ParsedMessage, subject: str, text: str) -> Iterator[tuple[str, str]]:
    spelled = _spelled_apart(f"{subject}\n{text[:MAX_TEXT]}")
    if spelled:
        yield "WORDS_SPELLED_APART", spelled
    hidden = next(filter(None, map(_INVISIBLE.search, _texts_as_written(parsed))), None)
    if hidden:
        yield "INVISIBLE_CHARACTERS", f"U+{ord(hidden.group()):04X}"
    salad = _word_salad(text)
    if salad:
        yield "WORD_SALAD", salad
    mailbox = _recipient_mailbox(parsed)
    untagged = _SUBJECT_TAGS.sub(" ", subject)
    if mailbox and re.search(rf"(?i)(?<![\w@.]){re.escape(mailbox)}(?![\w@:])", untagged):
        yield "SUBJECT_HAS_RECIPIENT", mailbox


def _spelled_apart(text: str) -> str:
    for match in _SPELLED_APART.finditer(text):
        letters = re.sub(r"[\s.\-_*|'+]", "", match.group()).lower()
        if letters.translate(_LEET) in _TARGET_WORDS:
            return match.group()
    for match in _STAND_IN_RUN.finditer(text):
        run = match.group()
        for start in range(0, len(run) - _SHORTEST_PIECE + 1, _PIECE):
            piece = run[start:start + _PIECE]
            word = piece.lower()
            if (not word.isalpha() and not word.isdigit()
                    and word.translate(_LEET) in _TARGET_WORDS):
                return piece
    return ""


def _word_salad(text: str) -> str:
    """How ungrammatical *text* is, when it reads as words drawn at random; else ""."""
    text = text[:MAX_TEXT]
    pairs = sum(1 for _ in _UNGRAMMATICAL_PAIR.finditer(text))
    if pairs < SALAD_PAIRS:
        return ""
    words = sum(1 for w in _WORD_RUN.finditer(text) if w.group().lower().isalpha())
    if pairs * 100 >= SALAD_RATE * max(words, 1):
        return f"{pairs} impossible word pairs in {words} words"
    return ""


def _texts_as_written(parsed: ParsedMessage) -> Iterator[str]:
    """The Subject, then each text part as decoded (markup and all), bounded: where an
    invisible character hides, before the visible text drops it."""
    yield parsed.subject
    yield from (p.text[:MAX_TEXT] for p in parsed.parts if p.text is not None)


def _recipient_mailbox(parsed: ParsedMessage) -> str:
    """The local part of the first To address, when it is long enough to be a name
    rather than a coincidence (spam greets a harvested address by its mailbox name)."""
    listed = addresses(parsed.to)
    if not listed:
        return ""
    local = listed[0][1].partition("@")[0]
    return local if len(local) >= 4 and local.isalnum() else ""

