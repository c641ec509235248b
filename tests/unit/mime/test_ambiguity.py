"""spoolgate.mime.ambiguity: each construct parsers read differently is named; plain mail
and what parsers agree on is not; hostile input never raises and stays bounded."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoolgate.mime.ambiguity import CONSTRUCTS, find_ambiguities, unscannable_reason
from spoolgate.mime.parse import Limits

HEAD = "From: a@remote.test\nTo: b@example.test\nSubject: s\nMIME-Version: 1.0\n"


def crlf(text: str) -> bytes:
    return (HEAD + text).replace("\n", "\r\n").encode("utf-8", "surrogateescape")


def constructs(text: str) -> set[str]:
    return {a.construct for a in find_ambiguities(crlf(text))}


def mixed(*parts: str, boundary: str = "b", close: bool = True) -> str:
    body = "".join(f"--{boundary}\n{part}\n" for part in parts)
    return (f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n{body}'
            + (f"--{boundary}--\n" if close else ""))


TEXT = "Content-Type: text/plain\n\nhello"
ZIP = 'Content-Type: application/zip; name="a.zip"\nContent-Transfer-Encoding: base64\n\nUEsDBA=='

AGREED = {
    "plain text": "\nhello\n",
    "multipart": mixed(TEXT, ZIP),
    "nested, other boundary": mixed(
        'Content-Type: multipart/alternative; boundary="c"\n\n--c\n' + TEXT + "\n--c--", ZIP),
    "same names": mixed('Content-Type: application/pdf; name="A.pdf"\n'
                        'Content-Disposition: attachment; filename="a.pdf"\n\nx'),
    "rfc2231 agreeing": mixed("Content-Type: application/pdf; name=\"a.pdf\"\n"
                              "Content-Disposition: attachment; filename*=utf-8''a.pdf\n\nx"),
    "quoted boundary with specials": mixed(TEXT, boundary="==_1@x.test==_"),
    "mbox line of an encapsulated message": mixed(
        "Content-Type: message/rfc822\n\nFrom x Tue May 10 11:28:07 2005\nSubject: in\n\nhi"),
    "x-uuencode transfer encoding": mixed(
        "Content-Type: application/octet-stream\nContent-Transfer-Encoding: x-uuencode\n\n"
        "begin 644 a\n`\nend"),
}


@pytest.mark.parametrize("text", AGREED.values(), ids=AGREED.keys())
def test_what_parsers_agree_on_is_not_flagged(text: str) -> None:
    assert find_ambiguities(crlf(text)) == ()
    assert unscannable_reason(crlf(text)) is None


FLAGGED = {
    "boundary-reused": mixed('Content-Type: multipart/alternative; boundary="b"\n\n--b\n'
                             + TEXT + "\n--b--", ZIP),
    "boundary-prefix": mixed('Content-Type: multipart/alternative; boundary="bb"\n\n--bb\n'
                             + TEXT + "\n--bb--", ZIP),
    "boundary-line-suffix": mixed(TEXT, ZIP).replace("--b\nContent-Type: app",
                                                     "--bx\nContent-Type: app"),
    "boundary-not-found": 'Content-Type: multipart/mixed; boundary="zz"\n\n--b\n' + TEXT,
    "boundary-syntax": mixed(TEXT).replace('boundary="b"', "boundary=b=1").replace(
        "--b", "--b=1"),
    "delimiter-after-close": mixed(TEXT) + "--b\n" + ZIP + "\n",
    "missing-final-boundary": mixed('Content-Type: multipart/alternative; boundary="c"\n\n'
                                    "--c\n" + TEXT, ZIP),
    "empty-part": mixed(TEXT).replace("--b\n", "--b\n--b\n", 1),
    "multipart-without-boundary": "Content-Type: multipart/mixed\n\n--b\n" + TEXT,
    "duplicate-header": "Content-Type: text/plain\nContent-Type: application/zip\n\nx",
    "duplicate-parameter": mixed('Content-Type: application/pdf; name="a.pdf"; name="a.exe"'
                                 "\n\nx"),
    "conflicting-parameter": mixed("Content-Type: application/pdf\nContent-Disposition: "
                                   "attachment; filename=\"a.pdf\"; filename*=utf-8''a.exe"
                                   "\n\nx"),
    "filename-name-mismatch": mixed('Content-Type: application/pdf; name="a.exe"\n'
                                    'Content-Disposition: attachment; filename="a.pdf"\n\nx'),
    "parameter-syntax": mixed("Content-Type: application/pdf; name==?utf-8?B?YS5leGU=?=\n\nx"),
    "content-type-unreadable": "Content-Type: text\n\nx",
    "content-disposition-unreadable": mixed("Content-Type: image/jpeg\nContent-Disposition: "
                                            "=?utf-8?Q?x?=\n\nx"),
    "unknown-transfer-encoding": "Content-Transfer-Encoding: base-64\n\nx",
    "encoded-multipart": mixed(TEXT).replace("\n\n--b", "\nContent-Transfer-Encoding: "
                                             "base64\n\n--b", 1),
    "encoded-message": mixed("Content-Type: message/rfc822\nContent-Transfer-Encoding: "
                             "base64\n\nU3ViamVjdDogeA=="),
    "header-line-malformed": "Content-Type : application/zip\n\nx",
    "nul-in-header": "X-A: \x00\n\nx",
    "bare-cr": "X-A: a\rContent-Type: application/zip\n\nx",
    "base64-garbage": mixed(ZIP + "!!"),
    "uuencode": "\nsee attached\nbegin 644 a.exe\nM86)C\n`\nend\n",
    "yenc": "\n=ybegin line=128 size=3 name=a.exe\nabc\n=yend size=3\n",
    "binhex": "\n(This file must be converted with BinHex 4.0)\n:abc:\n",
}


@pytest.mark.parametrize(("construct", "text"), FLAGGED.items(), ids=FLAGGED.keys())
def test_each_construct_is_named(construct: str, text: str) -> None:
    assert construct in CONSTRUCTS
    assert construct in constructs(text), find_ambiguities(crlf(text))


def test_every_construct_has_a_test_but_the_limits_and_the_last_guard() -> None:
    assert set(CONSTRUCTS) - set(FLAGGED) == {"structure-too-complex", "check-failed"}


def test_the_reason_names_the_construct_and_where() -> None:
    reason = unscannable_reason(crlf(FLAGGED["boundary-reused"]))
    assert reason is not None and "boundary-reused in 1 (b'b')" in reason


def test_more_parts_or_nesting_than_the_limits_is_too_complex_and_fast() -> None:
    parts = mixed(*[TEXT] * 3000)
    nested = "".join(f'Content-Type: multipart/mixed; boundary="n{i}"\n\n--n{i}\n'
                     for i in range(200)) + TEXT
    for text in (parts, nested):
        started = time.monotonic()
        assert "structure-too-complex" in constructs(text)
        assert time.monotonic() - started < 5.0  # a hang detector, not a benchmark


def test_a_big_message_is_read_in_bounded_time() -> None:
    data = crlf(mixed(ZIP.replace("UEsDBA==", "QUFB\n" * 400_000), TEXT))
    started = time.monotonic()
    find_ambiguities(data, Limits())
    assert time.monotonic() - started < 5.0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([
    "--b\n", "--b--\n", "--bb\n", "Content-Type: multipart/mixed; boundary=b\n",
    "Content-Type: message/rfc822\n", 'Content-Type: a/b; name*0="x"; name*0*=y\n',
    "Content-Transfer-Encoding: base64\n", "\n", "\r", "\x00", "x: ;;;\"\n", "begin 644 a\n",
    "M86)C\n", ":\n", " folded\n"]), max_size=60))
def test_never_raises_on_any_arrangement(pieces: list[str]) -> None:
    found = find_ambiguities("".join(pieces).encode())
    assert all(a.construct in CONSTRUCTS and a.construct != "check-failed" for a in found)
