"""The Received: header we prepend and the hop count read from a message's header block."""

from __future__ import annotations

import email.parser
import email.policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoolgate.intake.received import count_received, header_block, received_header
from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient

NOW = 1_700_000_000
DATE = "Tue, 14 Nov 2023 22:13:20 GMT"
CIPHER = "TLSv1.3:TLS_AES_256_GCM_SHA384"


def envelope(helo: str = "client.example.net", tls: str | None = None, smtputf8: bool = False,
             recipients: tuple[str, ...] = ("user@example.test",)) -> Envelope:
    return Envelope(sender="sender@example.net",
                    recipients=tuple(Recipient(address) for address in recipients),
                    client=ClientInfo("192.0.2.7", helo, tls), smtputf8=smtputf8)


# -- count_received -------------------------------------------------------------------------------

@pytest.mark.parametrize(("message", "count"), [
    (b"Subject: x\r\n\r\nbody\r\n", 0),
    (b"Received: a\r\nReceived: b\r\nSubject: x\r\n\r\nbody\r\n", 2),
    (b"RECEIVED: a\r\nreceived: b\r\nReCeIvEd : c\r\nReceived\t: d\r\n\r\n", 4),
    (b"Subject: x\r\n\r\nReceived: in the body\r\nReceived: again\r\n", 0),
    (b"Received: a\r\n\r\nReceived: in the body\r\n", 1),
    (b"Received: a\r\n\tby b; folded\r\nX-Received: not one\r\nResent-Received: nor this\r\n\r\n", 1),
    (b"Subject: x\r\n Received: a continuation line\r\n\r\n", 0),
    (b"Received: only headers\r\nReceived: no body\r\n", 2),
    (b"\r\nReceived: no header block at all\r\n", 0),
    (b"", 0),
    (b"Received a header without a colon\r\n\r\n", 0),
])
def test_count_received(message: bytes, count: int) -> None:
    assert count_received(message) == count


def test_count_received_scales_with_hops() -> None:
    body = b"\r\n" + b"Received: fake hop in the body\r\n" * 100
    for hops in (0, 1, 50, 51):
        assert count_received(b"Received: from h\r\n" * hops + b"Subject: x\r\n" + body) == hops


def test_header_block_ends_at_the_first_empty_line() -> None:
    assert header_block(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore\r\n") == b"A: 1\r\nB: 2\r\n"


# -- received_header ------------------------------------------------------------------------------

def test_exact_format() -> None:
    header = received_header(envelope(), "0123456789BCDF", "mx.example.test", True, NOW)
    assert header == (b"Received: from client.example.net ([192.0.2.7])\r\n"
                      b"\tby mx.example.test (Spoolgate) with ESMTP\r\n"
                      b"\tid 0123456789BCDF\r\n"
                      b"\tfor <user@example.test>; " + DATE.encode() + b"\r\n")


@pytest.mark.parametrize(("esmtp", "tls", "smtputf8", "protocol"), [
    (False, None, False, "with SMTP"),
    (True, None, False, "with ESMTP"),
    (True, CIPHER, False, f"with ESMTPS (using {CIPHER})"),
    (True, None, True, "with UTF8SMTP"),
    (True, CIPHER, True, f"with UTF8SMTPS (using {CIPHER})"),
])
def test_protocol_keywords_of_rfc3848_and_rfc6531(esmtp: bool, tls: str | None, smtputf8: bool,
                                                  protocol: str) -> None:
    header = received_header(envelope(tls=tls, smtputf8=smtputf8), "0123456789BCDF",
                             "mx.example.test", esmtp, NOW).decode()
    assert f"\tby mx.example.test (Spoolgate) {protocol}\r\n" in header


def test_for_clause_only_with_a_single_recipient() -> None:
    header = received_header(envelope(recipients=("a@example.test", "b@example.test")),
                             "0123456789BCDF", "mx.example.test", True, NOW)
    assert b"for <" not in header
    assert header.endswith(b"\tid 0123456789BCDF; " + DATE.encode() + b"\r\n")


def test_missing_helo_is_unknown() -> None:
    header = received_header(envelope(helo=""), "0123456789BCDF", "mx.example.test", True, NOW)
    assert header.startswith(b"Received: from unknown ([192.0.2.7])\r\n")


@pytest.mark.parametrize("helo", [
    "evil\r\nX-Injected: yes",
    "evil\nBcc: victim@example.test",
    "evil) (by trusted.example.test",
    "[127.0.0.1]",
    "a;b",
    "tab\there",
    "back\\slash",
    "ünïcödé.example",
    "x" * 1000,
])
def test_hostile_helo_cannot_break_the_header(helo: str) -> None:
    header = received_header(envelope(helo=helo), "0123456789BCDF", "mx.example.test", True, NOW)
    _assert_one_sound_header(header)


_HOSTILE = st.text(st.sampled_from("()[];\\\r\n\t <>\"'@:x.é\x00\x7f"), max_size=40)


@settings(max_examples=300, deadline=None, database=None)
@given(helo=_HOSTILE, local=_HOSTILE, tls=st.sampled_from([None, CIPHER]),
       smtputf8=st.booleans())
def test_no_client_input_breaks_the_header(helo: str, local: str, tls: str | None,
                                           smtputf8: bool) -> None:
    rcpt = f'"{local}"@example.test'
    header = received_header(envelope(helo=helo, tls=tls, smtputf8=smtputf8, recipients=(rcpt,)),
                             "0123456789BCDF", "mx.example.test", True, NOW)
    _assert_one_sound_header(header)


def _assert_one_sound_header(header: bytes) -> None:
    """One header, folded only where we fold it, whose only parentheses and brackets are ours."""
    text = header.decode("ascii")
    lines = text.split("\r\n")
    assert lines[-1] == ""
    assert "\r" not in "".join(lines) and "\n" not in "".join(lines)
    assert lines[0].startswith("Received: from ")
    assert all(line.startswith("\t") for line in lines[1:-1])
    assert len(lines) in (4, 5)
    helo_word = lines[0].removeprefix("Received: from ").removesuffix(" ([192.0.2.7])")
    assert helo_word and not any(c in helo_word for c in "()[]; \t\\")
    assert text.count("(") == text.count(")") == (3 if "(using " in text else 2)
    assert text.count("[") == text.count("]") == 1
    assert text.count(";") == 1
    parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(header + b"\r\n")
    assert parsed.keys() == ["Received"]
    assert parsed["Received"].rstrip().endswith(DATE)
