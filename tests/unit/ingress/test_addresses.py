"""RFC 5321 path parsing: what a gateway accepts, what it refuses, and the canonical form it keeps."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoolgate.ingress.addresses import (
    Mailbox,
    parse_forward_path,
    parse_mailbox,
    parse_reverse_path,
    split_path,
)
from spoolgate.mail.reply import SmtpError

FUZZ = settings(max_examples=300, deadline=None, database=None)


@pytest.mark.parametrize(("path", "utf8", "local", "domain", "quoted", "canonical"), [
    ("user@example.test", False, "user", "example.test", False, "user@example.test"),
    ("First.Last+tag@Example.TEST", False, "First.Last+tag", "example.test", False,
     "First.Last+tag@example.test"),
    ("!#$%&'*+-/=?^_`{|}~@example.test", False, "!#$%&'*+-/=?^_`{|}~", "example.test", False,
     "!#$%&'*+-/=?^_`{|}~@example.test"),
    ("user@localhost", False, "user", "localhost", False, "user@localhost"),
    # Quotes are kept only when the local part needs them.
    ('"john doe"@example.test', False, "john doe", "example.test", True, '"john doe"@example.test'),
    ('"john.doe"@example.test', False, "john.doe", "example.test", False, "john.doe@example.test"),
    ('"\\j\\o\\e"@example.test', False, "joe", "example.test", False, "joe@example.test"),
    ('"a\\"b"@example.test', False, 'a"b', "example.test", True, '"a\\"b"@example.test'),
    ('"a\\\\b"@example.test', False, "a\\b", "example.test", True, '"a\\\\b"@example.test'),
    ('"a..b"@example.test', False, "a..b", "example.test", True, '"a..b"@example.test'),
    ('".a"@example.test', False, ".a", "example.test", True, '".a"@example.test'),
    ('"a@b"@example.test', False, "a@b", "example.test", True, '"a@b"@example.test'),
    ('""@example.test', False, "", "example.test", True, '""@example.test'),
    # Address literals, lower-cased like any domain.
    ("user@[192.0.2.1]", False, "user", "[192.0.2.1]", False, "user@[192.0.2.1]"),
    ("user@[IPv6:2001:DB8::1]", False, "user", "[ipv6:2001:db8::1]", False,
     "user@[ipv6:2001:db8::1]"),
    # A source route is accepted and dropped (RFC 5321 4.1.2, appendix C).
    ("@relay1.test,@relay2.test:user@example.test", False, "user", "example.test", False,
     "user@example.test"),
    ("@relay.test:user@example.test", False, "user", "example.test", False, "user@example.test"),
    # UTF-8 only with SMTPUTF8; domains become A-labels.
    ("用户@例子.广告", True, "用户", "xn--fsqu00a.xn--4rr70v", False, "用户@xn--fsqu00a.xn--4rr70v"),
    ("Dörte@Sörensen.example.com", True, "Dörte", "xn--srensen-90a.example.com", False,
     "Dörte@xn--srensen-90a.example.com"),
    ('"jöhn doe"@example.test', True, "jöhn doe", "example.test", True, '"jöhn doe"@example.test'),
])
def test_valid_paths_parse_to_their_canonical_form(path: str, utf8: bool, local: str, domain: str,
                                                   quoted: bool, canonical: str) -> None:
    mailbox = parse_mailbox(path, utf8)
    assert mailbox == Mailbox(local, domain, quoted)
    assert str(mailbox) == canonical
    assert mailbox.is_literal == domain.startswith("[")
    assert parse_mailbox(str(mailbox), utf8) == mailbox


@pytest.mark.parametrize("path", [
    "userexample.test",             # no '@'
    "@example.test",                # empty local part (read as a broken source route)
    "user@",                        # empty domain
    "user@@example.test",
    "a@b@example.test",
    ".user@example.test",
    "user.@example.test",
    "us..er@example.test",
    "us er@example.test",
    "us\\er@example.test",
    "[user]@example.test",
    "user@-example.test",
    "user@example-.test",
    "user@example..test",
    "user@.example.test",
    "user@example.test.",
    "user@exam_ple.test",
    "user@exa mple.test",
    "user@[192.0.2.1",
    "user@192.0.2.1]",
    "user@[192.0.2.1]x",
    "user@[]",
    "user@[a[b]",
    "user@[a\\b]",
    "user@[a b]",
    "@relay.test user@example.test",  # source route without ':'
    "@:user@example.test",
    "@relay_.test:user@example.test",
    # Dangling quotes and backslashes.
    '"user@example.test',
    'user"@example.test',
    '"us"er"@example.test',
    '"""@example.test',
    '"user\\"@example.test',
    '"@example.test',
    # Control characters, quoted, escaped or bare, in every part.
    "us\x01er@example.test",
    "us\ter@example.test",
    '"us\x01er"@example.test',
    '"us\x7fer"@example.test',
    '"us\\\rer"@example.test',
    '"us\\\x00er"@example.test',
    "user@exa\x00mple.test",
    "user@[192.0.2.1\r]",
    "user@[\t]",
    "user@[\x7f]",
    "user@[é]",
])
def test_invalid_paths_are_refused(path: str) -> None:
    for utf8 in (False, True):
        with pytest.raises(ValueError):
            parse_mailbox(path, utf8)


@pytest.mark.parametrize("path", ["jöhn@example.test", '"jöhn"@example.test',
                                  "user@exämple.test", "@exämple.test:user@example.test"])
def test_utf8_needs_smtputf8(path: str) -> None:
    with pytest.raises(ValueError, match="SMTPUTF8"):
        parse_mailbox(path, utf8=False)
    parse_mailbox(path, utf8=True)


def test_an_impossible_internationalised_domain_is_a_syntax_error() -> None:
    with pytest.raises(ValueError, match="internationalised"):
        parse_mailbox("user@" + "ü" * 64 + ".test", utf8=True)


def test_local_part_limit_is_64_octets_not_characters() -> None:
    assert parse_mailbox("a" * 64 + "@example.test").local == "a" * 64
    with pytest.raises(ValueError, match="64 octets"):
        parse_mailbox("a" * 65 + "@example.test")
    assert parse_mailbox("é" * 32 + "@example.test", utf8=True).local == "é" * 32
    with pytest.raises(ValueError, match="64 octets"):
        parse_mailbox("é" * 33 + "@example.test", utf8=True)
    # The limit applies to the local part itself, not to its quotes and escapes.
    assert parse_mailbox('"' + "a\\ " * 32 + '"@example.test').local == "a " * 32


def test_path_limit_is_256_characters() -> None:
    domain = ".".join(["d" * 60] * 4)  # 243 characters
    fits = "u" * (256 - len(domain) - 1) + "@" + domain
    assert len(fits) == 256
    assert parse_mailbox(fits).domain == domain
    with pytest.raises(ValueError, match="256"):
        parse_mailbox("u" + fits)


@pytest.mark.parametrize(("arg", "inside", "params"), [
    ("<user@example.test>", "user@example.test", ""),
    ("  <user@example.test>  SIZE=10 BODY=8BITMIME ", "user@example.test", "SIZE=10 BODY=8BITMIME"),
    ("<>", "", ""),
    ('<"a>b c"@example.test> NOTIFY=NEVER', '"a>b c"@example.test', "NOTIFY=NEVER"),
    ('<"a\\">"@example.test>', '"a\\">"@example.test', ""),
    ("user@example.test SIZE=1", "user@example.test", "SIZE=1"),  # no brackets: tolerated
])
def test_split_path(arg: str, inside: str, params: str) -> None:
    assert split_path(arg) == (inside, params)


@pytest.mark.parametrize(("arg", "problem"), [
    ("<user@example.test", "missing '>'"),
    ('<"user>@example.test', "missing '>'"),
    ("<user@example.test>x", "text after '>'"),
    ("<user@example.test><x@example.test>", "text after '>'"),
])
def test_split_path_refuses_broken_brackets(arg: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        split_path(arg)


def test_reverse_and_forward_paths_carry_their_replies() -> None:
    assert parse_reverse_path("<>", False) == (None, "")
    sender, params = parse_reverse_path("<Sender@Example.TEST> SIZE=5", False)
    assert (str(sender), params) == ("Sender@example.test", "SIZE=5")
    rcpt, params = parse_forward_path("<rcpt@example.test> NOTIFY=NEVER", False)
    assert (str(rcpt), params) == ("rcpt@example.test", "NOTIFY=NEVER")
    for arg in ("<bad@>", "<user@example.test", "<jöhn@example.test>"):
        with pytest.raises(SmtpError) as caught:
            parse_reverse_path(arg, False)
        assert (caught.value.reply.code, caught.value.reply.enhanced) == (501, "5.1.7")
    for arg in ("<>", "<bad@>", "<user@example.test>junk"):
        with pytest.raises(SmtpError) as caught:
            parse_forward_path(arg, False)
        assert (caught.value.reply.code, caught.value.reply.enhanced) == (501, "5.1.3")


# -- properties over arbitrary input and the flanker corpus ------------------------------------

_NON_ASCII = "\u0080-\U0010ffff"


def _rfc5321_mailbox(utf8: bool) -> re.Pattern[str]:
    """Mailbox of RFC 5321 4.1.2 (with RFC 6531's UTF-8 when *utf8*), written out independently."""
    extra = _NON_ASCII if utf8 else ""
    atext = rf"[A-Za-z0-9!#$%&'*+\-/=?^_`{{|}}~{extra}]"
    quoted = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{extra}]|\\[\x20-\x7e])*"'
    let_dig = rf"[A-Za-z0-9{extra}]"
    sub_domain = rf"{let_dig}(?:[A-Za-z0-9\-{extra}]*{let_dig})?"
    literal = r"\[[\x21-\x5a\x5e-\x7e]+\]"
    return re.compile(rf"(?P<local>{atext}+(?:\.{atext}+)*|{quoted})"
                      rf"@(?:{sub_domain}(?:\.{sub_domain})*|{literal})")


def _corpus_lines(corpus: Path, name: str) -> list[str]:
    lines = []
    for line in (corpus / "flanker" / name).read_text(encoding="utf-8").splitlines():
        line = re.sub(r"\s{2,}#.*$", "", line)  # the files' own trailing remarks
        if line.strip() and not line.startswith("#"):
            lines.append(line)
    return lines


@pytest.mark.parametrize("name", ["mailbox_valid.txt", "mailbox_invalid.txt"])
def test_corpus_agrees_with_the_rfc5321_grammar(corpus: Path, name: str) -> None:
    """The flanker lists are RFC 5322 mailboxes (display names, comments, obsolete forms);
    judged by RFC 5321's grammar instead, the parser must agree on every line, and refuse
    only with ValueError."""
    lines = _corpus_lines(corpus, name)
    assert len(lines) > 80
    accepted = 0
    for utf8 in (False, True):
        grammar = _rfc5321_mailbox(utf8)
        for line in lines:
            match = grammar.fullmatch(line)
            expected = (match is not None and len(line) <= 256
                        and len(match["local"].encode("utf-8")) <= 64)
            try:
                mailbox = parse_mailbox(line, utf8)
            except ValueError:
                assert not expected, f"refused a valid RFC 5321 mailbox: {line!r} (utf8={utf8})"
                continue
            assert expected, f"accepted what RFC 5321 does not: {line!r} (utf8={utf8})"
            assert parse_mailbox(str(mailbox), utf8) == mailbox
            accepted += 1
    assert accepted > 0


_PIECES = st.sampled_from(['"', "\\", "@", ".", "[", "]", ":", ",", "<", ">", " ", "\r", "\n",
                           "\x00", "é", "例", "-", "a", "xn--", "IPv6:", "%", "!"])


@FUZZ
@given(st.lists(st.one_of(_PIECES, st.text(max_size=5)), max_size=30).map("".join), st.booleans())
def test_parsing_only_ever_raises_value_error_and_round_trips(path: str, utf8: bool) -> None:
    try:
        mailbox = parse_mailbox(path, utf8)
    except ValueError:
        return
    text = str(mailbox)
    assert parse_mailbox(text, utf8) == mailbox
    assert not any(ord(c) < 32 or ord(c) == 127 for c in text)
    assert mailbox.domain == mailbox.domain.lower()


@FUZZ
@given(st.lists(st.one_of(_PIECES, st.text(max_size=5)), max_size=30).map("".join), st.booleans())
def test_path_commands_only_ever_raise_their_smtp_replies(arg: str, utf8: bool) -> None:
    for parse, enhanced in ((parse_reverse_path, "5.1.7"), (parse_forward_path, "5.1.3")):
        try:
            parse(arg, utf8)
        except SmtpError as error:
            assert (error.reply.code, error.reply.enhanced) == (501, enhanced)
