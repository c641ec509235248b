"""spoolgate/intake/scanning.py: the Subject tag of tagged mail, and the spam headers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from spoolgate.intake.scanning import prefix_subject, spam_headers
from spoolgate.mail.verdict import Action, Findings, Symbol, Verdict


def test_the_prefix_goes_before_the_subject_text() -> None:
    data = b"From: a@b.test\r\nSubject: hello there\r\n\r\nbody\r\n"
    assert prefix_subject(data, "[SPAM]") == (
        b"From: a@b.test\r\nSubject: [SPAM] hello there\r\n\r\nbody\r\n")


def test_an_encoded_word_subject_stays_an_encoded_word_after_a_space() -> None:
    data = b"subject:=?utf-8?q?caf=C3=A9?=\r\n\r\nx\r\n"
    assert prefix_subject(data, "[SPAM]").startswith(b"subject:[SPAM] =?utf-8?q?caf=C3=A9?=")


def test_a_message_without_subject_gets_one_and_the_body_is_never_touched() -> None:
    data = b"From: a@b.test\r\n\r\nSubject: not a header\r\n"
    tagged = prefix_subject(data, "[SPAM]")
    assert tagged == b"Subject: [SPAM]\r\n" + data


def test_tagging_twice_adds_the_prefix_once() -> None:
    data = b"Subject: hi\r\n\r\nx\r\n"
    assert prefix_subject(prefix_subject(data, "[SPAM]"), "[SPAM]") == prefix_subject(data, "[SPAM]")


def test_no_prefix_configured_leaves_the_bytes_alone() -> None:
    data = b"Subject: hi\r\n\r\nx\r\n"
    assert prefix_subject(data, "") is data


@given(st.binary(max_size=300))
def test_the_body_after_the_first_blank_line_is_kept_byte_for_byte(body: bytes) -> None:
    data = b"Subject: s\r\n\r\n" + body
    assert prefix_subject(data, "[SPAM]").endswith(b"\r\n\r\n" + body)


def test_spam_headers_list_the_symbols_and_say_yes_for_tagged_mail() -> None:
    verdict = Verdict(Action.TAG, 7.5, "spam score", (
        Findings("builtin", 7.5, (Symbol("A", 3), Symbol("B", 4.5))),))
    assert spam_headers(verdict) == (b"X-Spam-Score: 7.5\r\n"
                                     b"X-Spam-Status: Yes, score=7.5 tests=A,B\r\n")
