"""spoolgate/intake/auth_results.py: our Authentication-Results header and forged ones removed."""

from __future__ import annotations

import email
import email.policy
import re

from hypothesis import given
from hypothesis import strategies as st

from spoolgate.intake.auth_results import authentication_results_header, strip_forged_results
from spoolgate.mail.verdict import AuthResult

ID = "mx.example.test"
BODY = (b"\r\n"
        b"Hello.\r\n"
        b"Authentication-Results: mx.example.test; dkim=pass header.d=bank.example\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example.test; spf=pass\r\n")


def _results() -> list[AuthResult]:
    return [AuthResult("spf", "pass", "", (("smtp.mailfrom", "example.org"),)),
            AuthResult("dkim", "pass", "", (("header.d", "example.org"), ("header.s", "sel"),
                                            ("header.b", "abcdefgh"))),
            AuthResult("dmarc", "pass", "", (("header.from", "example.org"),))]


def _body(data: bytes) -> bytes:
    """Everything from the first empty line on (what strip must never change)."""
    match = re.search(rb"(?:^|\n)(\r?\n)", data)
    return data[match.start(1):] if match else b""


# The header


def test_one_result_per_folded_line() -> None:
    assert authentication_results_header(ID, _results()) == (
        b"Authentication-Results: mx.example.test;\r\n"
        b"\tspf=pass smtp.mailfrom=example.org;\r\n"
        b"\tdkim=pass header.d=example.org header.s=sel header.b=abcdefgh;\r\n"
        b"\tdmarc=pass header.from=example.org\r\n")


def test_none_without_results() -> None:
    assert authentication_results_header(ID, []) == b"Authentication-Results: mx.example.test; none\r\n"


def test_values_that_are_not_tokens_are_quoted() -> None:
    header = authentication_results_header(ID, [AuthResult(
        "dkim", "fail", 'body hash "mismatch"',
        (("header.i", "@example.org"), ("header.b", "ab/c+d=="), ("header.d", "a;b")))])
    assert header == (b"Authentication-Results: mx.example.test;\r\n"
                      b'\tdkim=fail reason="body hash \\"mismatch\\"" header.i=@example.org\r\n'
                      b'\t header.b="ab/c+d==" header.d="a;b"\r\n')


def test_a_sender_controlled_value_cannot_break_out_of_the_field() -> None:
    header = authentication_results_header(ID, [AuthResult(
        "spf", "permerror", "bad\r\nX-Spam: no\r\n", (("smtp.mailfrom", "é.example\x00"),))])
    assert header == (b"Authentication-Results: mx.example.test;\r\n"
                      b'\tspf=permerror reason="bad??X-Spam: no" smtp.mailfrom="?.example?"\r\n')
    parsed = email.message_from_bytes(header + b"\r\n", policy=email.policy.default)
    assert list(parsed.keys()) == ["Authentication-Results"]


def test_long_lines_fold_between_properties() -> None:
    long = AuthResult("dkim", "fail", "x" * 60, (("header.d", "d" * 50 + ".example"),))
    lines = authentication_results_header(ID, [long]).split(b"\r\n")
    assert lines == [b"Authentication-Results: mx.example.test;", b"\tdkim=fail",
                     b"\t reason=" + b"x" * 60, b"\t header.d=" + b"d" * 50 + b".example", b""]


def test_the_header_round_trips_through_the_stdlib_parser() -> None:
    header = authentication_results_header(ID, _results())
    parsed = email.message_from_bytes(header + b"\r\nbody\r\n", policy=email.policy.default)
    assert " ".join(parsed["Authentication-Results"].split()) == (
        "mx.example.test; spf=pass smtp.mailfrom=example.org; dkim=pass header.d=example.org "
        "header.s=sel header.b=abcdefgh; dmarc=pass header.from=example.org")


# Removing forged headers


def test_our_id_is_removed_folded_in_any_case_and_after_a_comment() -> None:
    data = (b"Received: from a by b; Mon, 2 Jun 2025 10:00:00 +0000\r\n"
            b"AUTHENTICATION-RESULTS: (forged (nested \\) comment)) MX.Example.TEST;\r\n"
            b"\tspf=pass smtp.mailfrom=bank.example;\r\n"
            b"\tdkim=pass header.d=bank.example\r\n"
            b"Authentication-Results : \"mx.example.test\"; dmarc=pass\r\n"
            b"Authentication-Results:mx.example.test;dmarc=pass\r\n"
            b"Subject: hi\r\n") + BODY
    assert strip_forged_results(data, ID) == (
        b"Received: from a by b; Mon, 2 Jun 2025 10:00:00 +0000\r\n"
        b"Subject: hi\r\n") + BODY


def test_other_ids_stay() -> None:
    data = (b"Authentication-Results: mx.google.com; spf=pass\r\n"
            b"Authentication-Results: mx.example.test.evil; spf=pass\r\n"
            b"Authentication-Results: (mx.example.test) relay.example.test; spf=pass\r\n"
            b"X-Authentication-Results: mx.example.test; spf=pass\r\n"
            b"Subject: hi\r\n\r\nbody\r\n")
    assert strip_forged_results(data, ID) == data


def test_body_lines_that_look_like_headers_stay() -> None:
    data = b"Subject: hi\r\n" + BODY
    assert strip_forged_results(data, ID) == data


def test_a_message_without_a_body_separator_is_all_header() -> None:
    data = (b"Subject: hi\r\n"
            b"Authentication-Results: mx.example.test; spf=pass\r\n"
            b" dkim=pass")
    assert strip_forged_results(data, ID) == b"Subject: hi\r\n"


def test_a_message_that_starts_with_its_body_is_left_alone() -> None:
    data = b"\r\nAuthentication-Results: mx.example.test; spf=pass\r\n"
    assert strip_forged_results(data, ID) == data


def test_line_endings_are_kept() -> None:
    data = b"A: 1\r\nAuthentication-Results: mx.example.test; none\r\nB: 2\n\r\nC\r\n"
    assert strip_forged_results(data, ID) == b"A: 1\r\nB: 2\n\r\nC\r\n"


header_lines = st.sampled_from([
    b"Authentication-Results: mx.example.test; spf=pass\r\n",
    b"authentication-results: (x) MX.EXAMPLE.TEST; none\r\n",
    b"Authentication-Results: other.example; none\r\n",
    b"\tdkim=pass\r\n", b"Subject: hi\r\n", b"\r\n", b"\n", b"x\r", b"",
])


@given(st.lists(st.one_of(header_lines, st.binary(max_size=40)), max_size=12))
def test_strip_never_changes_the_body_and_never_raises(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    stripped = strip_forged_results(data, ID)
    assert _body(stripped) == _body(data)
    assert stripped.endswith(_body(data))
    assert strip_forged_results(stripped, ID) == stripped
    assert not re.search(rb"(?im)^authentication-results[ \t]*:[ \t]*mx\.example\.test",
                         stripped[:len(stripped) - len(_body(stripped))])


@given(st.binary(max_size=300))
def test_strip_keeps_every_byte_of_messages_without_our_header(data: bytes) -> None:
    if b"mx.example.test" not in data.lower():
        assert strip_forged_results(data, ID) == data
