"""spoolgate/scan/ratware.py: each mark of bulk-mailing software or shouting HTML fires on its
trait, and not on what real mail programs and people write. (The labelled corpus's rates of
these rules are checked with the content rules', in test_content.py.)"""

from __future__ import annotations

import time
from email.message import EmailMessage

import pytest

from spoolgate.mime.parse import parse_message
from spoolgate.scan.ratware import RULES, ratware_symbols

OUTLOOK_EXPRESS = "Microsoft Outlook Express 6.00.2600.0000"
MIMEOLE = "Produced By Microsoft MimeOLE V6.00.2600.0000"


def message(body: str = "See you at noon.", subject: str = "lunch",
            sender: str = "Alice <alice@remote.test>", html: bool = False,
            **headers: str) -> bytes:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = "bob@example.test"
    mail["Subject"] = subject
    mail["Message-ID"] = "<1.lunch@remote.test>"
    for name, value in headers.items():
        del mail[name.replace("_", "-")]
        mail[name.replace("_", "-")] = value
    mail.set_content(body, subtype="html" if html else "plain")
    return mail.as_bytes()


def names(data: bytes) -> set[str]:
    return {symbol.name for symbol in ratware_symbols(parse_message(data))}


def test_an_ordinary_message_matches_no_rule() -> None:
    assert names(message()) == set()


# -- the mailer and its Message-ID ----------------------------------------------------


@pytest.mark.parametrize("mailer", [OUTLOOK_EXPRESS, "Microsoft Outlook, Build 10.0.2616"])
def test_outlook_with_a_message_id_no_outlook_makes_is_forged(mailer: str) -> None:
    found = names(message(X_Mailer=mailer, X_MimeOLE=MIMEOLE,
                          Message_ID="<20021010123456.7781.qmail@bulk.remote.test>"))
    assert "FORGED_OUTLOOK_MSGID" in found


@pytest.mark.parametrize("message_id", [
    "<000801c2a1b2$3c4d5e60$0a00a8c0@workstation>",  # Outlook Express, Outlook 2002 and later
    "<NFBBJCOMLLKGAECCOPJDEEJOCBAA.alice@remote.test>",  # Outlook 2000, Internet-only mode
    "<DB7PR02MB1234ABCD@DB7PR02MB1234.eurprd02.prod.outlook.com>",  # Microsoft's servers
    "<abc123@mail.outlook.com>",
])
def test_outlooks_own_message_ids_are_not_forged(message_id: str) -> None:
    data = message(X_Mailer="Microsoft Outlook, Build 10.0.2616", Message_ID=message_id)
    assert "FORGED_OUTLOOK_MSGID" not in names(data)


def test_outlook_for_macintosh_and_other_mailers_are_not_judged_by_their_message_id() -> None:
    other = "<20021010123456.7781@remote.test>"
    mac = "Microsoft Outlook for Macintosh, Build 10.0.2616"
    assert names(message(X_Mailer=mac, Message_ID=other)) == set()
    assert names(message(X_Mailer="Mozilla Thunderbird 1.5", Message_ID=other)) == set()
    # 28 letters of which one is past P is no Outlook 2000 Message-ID
    assert "FORGED_OUTLOOK_MSGID" in names(message(
        X_Mailer="Microsoft Outlook, Build 10.0.2616",
        Message_ID="<NFBBJCOMLLKGAECCOPJDEEJOCBAZ.alice@remote.test>"))


def test_outlook_express_without_mime_ole() -> None:
    msgid = "<000801c2a1b2$3c4d5e60$0a00a8c0@workstation>"
    assert "OUTLOOK_EXPRESS_NO_MIMEOLE" in names(message(X_Mailer=OUTLOOK_EXPRESS,
                                                         Message_ID=msgid))
    assert names(message(X_Mailer=OUTLOOK_EXPRESS, X_MimeOLE=MIMEOLE, Message_ID=msgid)) == set()
    # Outlook proper and Outlook Express for the Mac add no X-MimeOLE
    assert names(message(X_Mailer="Microsoft Outlook, Build 10.0.2616", Message_ID=msgid)) == set()
    assert names(message(X_Mailer="Microsoft Outlook Express Macintosh Edition - 5.01",
                         Message_ID=msgid)) == set()


# -- the Subject ----------------------------------------------------------------------


@pytest.mark.parametrize("subject", [
    "Your approval        needed",
    "Great offer for you  ab1:234", "Hot deals   2002.10", "Hello friend qf83kd92x"])
def test_a_subject_padded_or_ending_in_a_batch_number(subject: str) -> None:
    assert "SUBJECT_RATWARE_ID" in names(message(subject=subject))


@pytest.mark.parametrize("subject", [
    "Re: meeting at 10:30", "Release 2.4.19 is out", "Re: Hello  world",
    "Your code 12345678", "Minutes of 2002-08-22", "report2002 attached"])
def test_ordinary_subjects_with_numbers_are_no_batch_ids(subject: str) -> None:
    assert "SUBJECT_RATWARE_ID" not in names(message(subject=subject))


@pytest.mark.parametrize("subject", ["ADV: cheap ink", "[ADV]: printer offer", "adv - loans",
                                     "\u672a\u627f\u8afe\u5e83\u544a\u203b sale"])
def test_a_legal_advertisement_label(subject: str) -> None:
    assert "SUBJECT_ADVERTISEMENT" in names(message(subject=subject))


@pytest.mark.parametrize("subject", ["Advice on the thesis", "Adventure weekend", "Re: ADV tag"])
def test_words_starting_with_adv_are_no_label(subject: str) -> None:
    assert "SUBJECT_ADVERTISEMENT" not in names(message(subject=subject))


# -- other headers --------------------------------------------------------------------


@pytest.mark.parametrize(("priority", "unusual"), [
    ("1 (Highest)", True), ("2", True), ("5 (Lowest)", True), ("3 (Normal)", False),
    ("3", False), ("", False)])
def test_a_priority_other_than_normal(priority: str, unusual: bool) -> None:
    assert ("PRIORITY_UNUSUAL" in names(message(X_Priority=priority))) is unusual


@pytest.mark.parametrize(("sender", "digits"), [
    ("sales48213@bulk.remote.test", True), ("Offers <jlee2002@remote.test>", True),
    ("alice@remote.test", False), ("r2d2@remote.test", False), ("bob42@remote.test", False),
    ("12345@remote.test", False), ("john.smith1@remote.test", False)])
def test_a_sender_mailbox_ending_in_several_digits(sender: str, digits: bool) -> None:
    assert ("FROM_LOCAL_DIGITS" in names(message(sender=sender))) is digits


# -- HTML and text that shout ---------------------------------------------------------


@pytest.mark.parametrize("html", ['<font size="7">BUY</font>', "<font face=arial size=+4>x</font>",
                                  '<p style="font-size: 48px">x</p>', "<span style='FONT-SIZE: 36pt'>"])
def test_huge_fonts(html: str) -> None:
    assert "HTML_FONT_HUGE" in names(message(html, html=True))


@pytest.mark.parametrize("html", ['<font size="2">x</font>', '<p style="font-size: 12px">x</p>',
                                  '<font size="+1">x</font>', '<p style="font-size: 2em">x</p>'])
def test_ordinary_font_sizes(html: str) -> None:
    assert "HTML_FONT_HUGE" not in names(message(html, html=True))


@pytest.mark.parametrize("html", ['<font color="red">FREE</font>', "<font color=#FF0000>x</font>",
                                  '<p style="color: #ff0000">x</p>', '<b style="color:yellow">'])
def test_loud_colours(html: str) -> None:
    assert "HTML_FONT_RED" in names(message(html, html=True))


@pytest.mark.parametrize("html", ['<font color="#333333">x</font>', '<p style="color: blue">x</p>',
                                  '<p style="color: #ff00aa">x</p>'])
def test_quiet_colours(html: str) -> None:
    assert "HTML_FONT_RED" not in names(message(html, html=True))


def test_font_markup_in_plain_text_is_no_html() -> None:
    text = 'Use <font size="7" color="red"> for the banner, font-size: 48px.'
    assert names(message(text)) == set()


SHOUTING = "BUY THE BEST PRODUCTS AT LOW PRICES\nORDER TODAY AND SAVE ON EVERYTHING\n"


def test_several_lines_of_capitals_in_text_or_html() -> None:
    assert "BODY_YELLING" in names(message("Hello,\n" + SHOUTING))
    assert "BODY_YELLING" in names(message(SHOUTING.replace("\n", "<br>"), html=True))


@pytest.mark.parametrize("text", [
    "Hello,\nBUY THE BEST PRODUCTS AT LOW PRICES\nthanks\n",  # one line is a heading
    "FYI\nASAP\nNB: RSVP\nOK\n",  # short lines of capitals
    "> " + SHOUTING.replace("\n", "\n> ") + "\nWhat a silly spam.\n",  # quoted shouting
    "Buy the best products at low prices\nOrder today and save on everything\n"])
def test_headings_acronyms_and_quoted_shouting_are_not_yelling(text: str) -> None:
    assert "BODY_YELLING" not in names(message(text))


@pytest.mark.parametrize("text", ["Amazing offer!!!", "Buy! Now! Today! Cheap!"])
def test_runs_of_exclamation_marks(text: str) -> None:
    assert "BODY_EXCLAIMS" in names(message(text))
    assert "BODY_EXCLAIMS" in names(message(f"<p>{text}</p>", html=True))


@pytest.mark.parametrize("text", ["Thanks!", "Great! See you at noon!",
                                  "> WOW!!! BUY NOW!!!\nNo thanks."])
def test_a_few_exclamations_or_quoted_ones_are_no_run(text: str) -> None:
    assert "BODY_EXCLAIMS" not in names(message(text))


def test_exclamations_in_the_subject_are_not_the_bodys() -> None:
    assert "BODY_EXCLAIMS" not in names(message(subject="Hello!!!"))


def test_each_rule_fires_at_most_once_and_with_its_score() -> None:
    html = ('<font size="7" color="red">BUY!!!</font><font size=7 color=red>NOW!!!</font>'
            + SHOUTING.replace("\n", "<br>") * 3)
    data = message(html, subject="ADV: offer         x", sender="sales48213@remote.test",
                   html=True, X_Priority="1", X_Mailer=OUTLOOK_EXPRESS,
                   Message_ID="<1@bulk.remote.test>")
    found = ratware_symbols(parse_message(data))
    assert sorted(s.name for s in found) == sorted(RULES)
    assert all(s.score == RULES[s.name][0] and len(s.detail) <= 80 for s in found)


@pytest.mark.parametrize(("subject", "body", "html"), [
    ("x", "!" * 5_000_000, False),
    (" " * 100_000, "x", False),
    ("x" + " " * 100_000 + "1.1", "x", False),
    ("x", "<b>" * 100_000 + "deep", True),
    ("x", "<div><font color=red size=7>" * 30_000, True),
    ("x", ("SHOUTING LINE OF CAPITAL LETTERS\n" * 100_000), False),
    ("x", "http://" + "a" * 1_000_000 + ".test/", False),
], ids=["bangs", "spaces", "spaces-batch", "nested", "nested-fonts", "capitals", "long-link"])
def test_hostile_input_is_judged_without_error_in_bounded_time(subject: str, body: str,
                                                                html: bool) -> None:
    parsed = parse_message(message(body, subject=subject, html=html))
    started = time.monotonic()
    found = ratware_symbols(parsed)
    assert time.monotonic() - started < 10.0  # a hang detector: 100k spaces once took 48 s
    assert len({s.name for s in found}) == len(found)
