"""spoolgate/scan/heuristics.py: each header and structure rule fires on its trait, and not on
ordinary mail from real clients."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest

from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mime.parse import parse_message
from spoolgate.scan.heuristics import MANY_RECIPIENTS, RULES, HeuristicsContext, header_symbols
from tests.conftest import CORPUS

ENVELOPE = Envelope("a@remote.test", (Recipient("b@example.test"),), ClientInfo("192.0.2.1", "h"))
CONTEXT = HeuristicsContext(own_domains=frozenset({"example.test"}))
HEADERS = (b"From: Alice <alice@remote.test>\r\nTo: b@example.test\r\n"
           b"Date: Sun, 29 Nov 2026 06:00:00 +0000\r\nMessage-ID: <1@remote.test>\r\n"
           b"Subject: lunch\r\n")


def names(data: bytes, envelope: Envelope = ENVELOPE) -> set[str]:
    return {s.name for s in header_symbols(parse_message(data), envelope, CONTEXT)}


def html_message(html: str, text: str | None = None) -> bytes:
    message = EmailMessage()
    for line in HEADERS.decode().strip().split("\r\n"):
        key, _, value = line.partition(": ")
        message[key] = value
    if text is None:
        message.set_content(html, subtype="html")
    else:
        message.set_content(text)
        message.add_alternative(html, subtype="html")
    return message.as_bytes()


def test_an_ordinary_plain_message_matches_no_rule() -> None:
    assert names(HEADERS + b"\r\nSee you at noon.\r\n") == set()


@pytest.mark.parametrize(("headers", "rule"), [
    (HEADERS.replace(b"Date: Sun, 29 Nov 2026 06:00:00 +0000\r\n", b""), "MISSING_DATE"),
    (HEADERS.replace(b"Sun, 29 Nov 2026 06:00:00 +0000", b"yesterday at noon"), "INVALID_DATE"),
    (HEADERS.replace(b"Message-ID: <1@remote.test>\r\n", b""), "MISSING_MID"),
    (HEADERS.replace(b"<1@remote.test>", b"12345"), "INVALID_MSGID"),
    (HEADERS.replace(b"Alice <alice@remote.test>",
                     b'"ceo@example.test" <ceo@evil.test>'), "FROM_NAME_SPOOFS_OWN_DOMAIN"),
    (HEADERS.replace(b"lunch", "P\u0430yPal".encode()), "MIXED_SCRIPT_WORDS"),
])
def test_each_header_rule_fires_on_its_trait(headers: bytes, rule: str) -> None:
    assert rule in names(headers + b"\r\nbody\r\n")


def received(stamp: str) -> bytes:
    return f"Received: from a.remote.test by mx.example.test; {stamp}\r\n".encode()


def test_a_date_hours_ahead_of_the_newest_received_stamp_is_in_the_future() -> None:
    on_time = received("Sun, 29 Nov 2026 06:01:00 +0000") + HEADERS
    assert "DATE_IN_FUTURE" not in names(on_time + b"\r\nbody\r\n")
    early = received("Sun, 29 Nov 2026 01:00:00 +0000") + HEADERS
    assert "DATE_IN_FUTURE" in names(early + b"\r\nbody\r\n")
    # Only the newest stamp counts: an older hop's clock is not the receiver's.
    older_hop = (received("Sun, 29 Nov 2026 06:01:00 +0000")
                 + received("Sat, 28 Nov 2026 01:00:00 +0000") + HEADERS)
    assert "DATE_IN_FUTURE" not in names(older_hop + b"\r\nbody\r\n")


def test_no_received_stamp_or_a_zoneless_one_is_no_evidence_of_a_future_date() -> None:
    assert "DATE_IN_FUTURE" not in names(HEADERS + b"\r\nbody\r\n")
    garbled = received("some time ago") + HEADERS
    assert "DATE_IN_FUTURE" not in names(garbled + b"\r\nbody\r\n")
    zoneless = received("Sun, 29 Nov 2026 01:00:00 -0000") + HEADERS
    assert "DATE_IN_FUTURE" not in names(zoneless + b"\r\nbody\r\n")


@pytest.mark.parametrize("to", [b"undisclosed-recipients:;", b"Undisclosed Recipients <>",
                                b"friend:;"])
def test_a_to_naming_no_address_is_undisclosed(to: bytes) -> None:
    assert "TO_UNDISCLOSED" in names(HEADERS.replace(b"b@example.test", to) + b"\r\nx\r\n")


def test_a_missing_to_is_not_undisclosed() -> None:
    # Mailing lists and Bcc'd mail leave out To as often as spam does.
    assert "TO_UNDISCLOSED" not in names(HEADERS.replace(b"To: b@example.test\r\n", b"")
                                         + b"\r\nx\r\n")


def test_images_with_next_to_no_text_and_images_among_words() -> None:
    images = '<a href="https://shop.remote.test/"><img src="https://img.remote.test/a.gif"></a>'
    assert "HTML_IMAGE_LITTLE_TEXT" in names(html_message(images + "<p>Click here</p>"))
    words = " ".join(f"word{i}" for i in range(60))
    assert "HTML_IMAGE_LITTLE_TEXT" not in names(html_message(images + f"<p>{words}</p>"))
    assert "HTML_IMAGE_LITTLE_TEXT" not in names(html_message("<p>Click here</p>"))


def test_a_display_name_with_the_senders_own_address_is_no_spoof() -> None:
    headers = HEADERS.replace(b"Alice <alice@remote.test>",
                              b'"ceo@example.test" <ceo@example.test>')
    assert "FROM_NAME_SPOOFS_OWN_DOMAIN" not in names(headers + b"\r\nbody\r\n")


def test_html_only_with_hidden_text_and_a_lying_link() -> None:
    html = ('<p>Your account</p><div style="display: none">cheap watches viagra</div>'
            '<a href="https://login.evil.test/x">https://www.bank.test/login</a>')
    found = names(html_message(html))
    assert {"HTML_ONLY", "HTML_HIDDEN_TEXT", "HTML_LINK_TEXT_MISMATCH"} <= found


def test_honest_html_with_a_text_alternative_matches_nothing() -> None:
    html = ('<p>Minutes are <a href="https://docs.remote.test/m">docs.remote.test</a>'
            '<img src="cid:logo" style="display:none"> thanks</p>')
    assert names(html_message(html, text="Minutes are at docs.remote.test")) == set()


def test_a_link_to_a_subdomain_of_the_host_it_shows_is_no_mismatch() -> None:
    html = '<a href="https://www.bank.test/login">bank.test</a>'
    assert "HTML_LINK_TEXT_MISMATCH" not in names(html_message(html, text="x"))


def test_unknown_charset_and_broken_mime() -> None:
    data = (HEADERS + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
            b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\nhello\r\n")
    assert {"INVALID_CHARSET", "MIME_MALFORMED"} <= names(data)


def test_too_many_recipients_in_the_envelope_or_the_headers() -> None:
    many = tuple(Recipient(f"u{i}@example.test") for i in range(MANY_RECIPIENTS + 1))
    envelope = Envelope("a@remote.test", many, ClientInfo("192.0.2.1", "h"))
    assert "EXCESSIVE_RECIPIENTS" in names(HEADERS + b"\r\nx\r\n", envelope)
    to = ", ".join(f"u{i}@example.test" for i in range(MANY_RECIPIENTS + 1)).encode()
    assert "EXCESSIVE_RECIPIENTS" in names(HEADERS.replace(b"b@example.test", to) + b"\r\nx\r\n")


def test_every_rule_has_a_description_and_a_modest_score() -> None:
    # No heuristic decides alone: each stays below the default tag threshold of 5.
    assert all(0 < score < 5 and text for score, text in RULES.values())


def test_real_client_mail_of_the_corpus_is_not_tagged_by_heuristics_alone() -> None:
    folder = CORPUS / "hunnysoft-mua"
    if not folder.is_dir():
        pytest.skip(f"corpus not found at {folder} (set SPOOLGATE_CORPUS)")
    paths = sorted(Path(folder).glob("m*.txt"))
    assert len(paths) > 50
    for path in paths:
        symbols = header_symbols(parse_message(path.read_bytes()), ENVELOPE, CONTEXT)
        assert sum(s.score for s in symbols) < 5, (path.name, symbols)
