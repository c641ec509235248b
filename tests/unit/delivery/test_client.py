"""spoolgate/delivery/client.py: what goes on the wire, and how replies are read."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from spoolgate.config import RetrySettings
from spoolgate.delivery.client import canonical_data, parse_reply, xtext


def _unstuff(wire: bytes) -> bytes:
    assert wire.endswith(b"\r\n.\r\n")
    body = wire[:-3]
    lines = body.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def test_dot_stuffing_and_the_end_marker() -> None:
    wire = canonical_data(b".hidden\r\nline\r\n.\r\nafter\r\n")
    assert wire == b"..hidden\r\nline\r\n..\r\nafter\r\n.\r\n"


def test_bare_cr_and_lf_become_crlf_so_nothing_is_smuggled() -> None:
    wire = canonical_data(b"a\nb\rc\r\n.\nMAIL FROM:<x>\r\n")
    assert b"\r\n.\r\n" not in wire[:-5]
    assert re.search(rb"(?<!\r)\n", wire) is None
    assert re.search(rb"\r(?!\n)", wire) is None


@given(st.binary(max_size=300))
def test_any_bytes_become_one_canonical_message(data: bytes) -> None:
    wire = canonical_data(data)
    assert wire.endswith(b"\r\n.\r\n")
    # The end marker appears exactly once, at the end.
    assert (b"\r\n" + wire).find(b"\r\n.\r\n") == len(wire) - 3
    assert re.search(rb"(?<!\r)\n", wire) is None and re.search(rb"\r(?!\n)", wire) is None
    normalised = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    if not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert _unstuff(wire) == normalised


def test_multiline_reply_with_enhanced_status() -> None:
    reply = parse_reply([b"550-5.1.1 <bob@x>: Recipient address\r\n",
                         b"550 5.1.1 rejected: user unknown\r\n"])
    assert (reply.code, reply.enhanced) == (550, "5.1.1")
    assert reply.text == "<bob@x>: Recipient address rejected: user unknown"


def test_reply_without_enhanced_status_or_with_a_mismatched_one() -> None:
    assert parse_reply([b"250 ok\r\n"]).enhanced == ""
    mismatched = parse_reply([b"451 5.1.1 odd\r\n"])  # class differs from the code: not enhanced
    assert mismatched.enhanced == "" and mismatched.text == "5.1.1 odd"


def test_xtext_encodes_plus_equals_and_non_printables() -> None:
    assert xtext("a+b=c d@x") == "a+2Bb+3Dc+20d@x"
    assert xtext("jörg@x") == "j+C3+B6rg@x"


def test_backoff_doubles_from_the_minimum_up_to_the_maximum() -> None:
    retry = RetrySettings(min_backoff=300, max_backoff=3600)
    assert [retry.backoff(n) for n in range(1, 7)] == [300, 600, 1200, 2400, 3600, 3600]
    assert retry.backoff(10_000) == 3600
