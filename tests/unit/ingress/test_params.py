"""MAIL and RCPT parameters: SIZE, BODY, SMTPUTF8 and the DSN extension (RFC 3461)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoolgate.ingress.params import (
    MAX_ENVID,
    MailParams,
    RcptParams,
    decode_xtext,
    parse_mail_params,
    parse_rcpt_params,
    split_params,
)
from spoolgate.mail.envelope import Notify, Ret
from spoolgate.mail.reply import SmtpError

LIMIT = 10_000


def mail(text: str, utf8_offered: bool = True) -> MailParams:
    return parse_mail_params(text, LIMIT, utf8_offered)


def mail_refusal(text: str, utf8_offered: bool = True) -> tuple[int, str]:
    with pytest.raises(SmtpError) as caught:
        mail(text, utf8_offered)
    return caught.value.reply.code, caught.value.reply.enhanced


def rcpt_refusal(text: str) -> tuple[int, str]:
    with pytest.raises(SmtpError) as caught:
        parse_rcpt_params(text)
    return caught.value.reply.code, caught.value.reply.enhanced


def test_no_parameters() -> None:
    assert mail("") == MailParams(size=None, body="7BIT", smtputf8=False, ret=None, envid=None)
    assert parse_rcpt_params("") == RcptParams(notify=frozenset(), orcpt=None)


def test_everything_at_once() -> None:
    params = mail("size=500 Body=8bitmime SMTPUTF8 ret=hdrs ENVID=QQ+2B1")
    assert params == MailParams(size=500, body="8BITMIME", smtputf8=True, ret=Ret.HDRS, envid="QQ+1")
    assert parse_rcpt_params("notify=success,failure ORCPT=rfc822;a@example.test") == RcptParams(
        notify=frozenset({Notify.SUCCESS, Notify.FAILURE}), orcpt="rfc822;a@example.test")


# -- SIZE ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "1", str(LIMIT)])
def test_size_within_the_limit(value: str) -> None:
    assert mail(f"SIZE={value}").size == int(value)


def test_size_over_the_limit_is_552() -> None:
    with pytest.raises(SmtpError) as caught:
        mail(f"SIZE={LIMIT + 1}")
    assert (caught.value.reply.code, caught.value.reply.enhanced) == (552, "5.3.4")
    assert str(LIMIT) in caught.value.reply.text
    assert mail_refusal("SIZE=" + "9" * 40) == (552, "5.3.4")


@pytest.mark.parametrize("text", ["SIZE", "SIZE=", "SIZE=abc", "SIZE=-1", "SIZE=1.5", "SIZE=+5",
                                  "SIZE==5", "SIZE=١٢", "SIZE=0x10"])
def test_size_that_is_not_a_number_is_501(text: str) -> None:
    assert mail_refusal(text) == (501, "5.5.4")


# -- BODY, SMTPUTF8, RET --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "body"), [("BODY=7BIT", "7BIT"), ("BODY=8bitmime", "8BITMIME"),
                                            ("body=8BitMime", "8BITMIME")])
def test_body(text: str, body: str) -> None:
    assert mail(text).body == body


@pytest.mark.parametrize("text", ["BODY", "BODY=BINARYMIME", "BODY=8BIT"])
def test_bad_body_is_501(text: str) -> None:
    assert mail_refusal(text) == (501, "5.5.4")


def test_smtputf8() -> None:
    assert mail("SMTPUTF8").smtputf8 is True
    assert mail("smtputf8").smtputf8 is True
    assert mail_refusal("SMTPUTF8=yes") == (501, "5.5.4")
    assert mail_refusal("SMTPUTF8", utf8_offered=False) == (555, "5.5.4")


@pytest.mark.parametrize(("text", "ret"), [("RET=FULL", Ret.FULL), ("RET=hdrs", Ret.HDRS)])
def test_ret(text: str, ret: Ret) -> None:
    assert mail(text).ret is ret


@pytest.mark.parametrize("text", ["RET", "RET=ALL", "RET=FULL,HDRS"])
def test_bad_ret_is_501(text: str) -> None:
    assert mail_refusal(text) == (501, "5.5.4")


# -- ENVID and xtext ------------------------------------------------------------------------------

@pytest.mark.parametrize(("xtext", "decoded"), [
    ("abc", "abc"),
    ("a+2Bb", "a+b"),
    ("+2B+2B", "++"),
    ("a+3Db", "a=b"),
    ("a+20b", "a b"),
    ("QUEUE-42.Zz", "QUEUE-42.Zz"),
])
def test_xtext_decoding(xtext: str, decoded: str) -> None:
    assert decode_xtext(xtext) == decoded
    assert mail(f"ENVID={xtext}").envid == decoded


@pytest.mark.parametrize("text", [
    "ENVID",
    "ENVID=a+2b",       # hexchar is upper case only
    "ENVID=a+2",
    "ENVID=a+",
    "ENVID=a+GG",
    "ENVID=a=b",        # '=' must be encoded
    "ENVID=é",
    "ENVID=a+0D+0Ab",   # decodes to CR LF: would break a DSN header
    "ENVID=a+1B[31m",   # an escape sequence for the operator's terminal
    "ENVID=a+00",
    "ENVID=a+7F",
    "ENVID=a+FF",
])
def test_bad_envid_is_501(text: str) -> None:
    assert mail_refusal(text) == (501, "5.5.4")


def test_envid_length_limit_is_on_the_decoded_value() -> None:
    assert mail("ENVID=" + "x" * MAX_ENVID).envid == "x" * MAX_ENVID
    assert mail("ENVID=" + "+2B" * MAX_ENVID).envid == "+" * MAX_ENVID
    assert mail_refusal("ENVID=" + "x" * (MAX_ENVID + 1)) == (501, "5.5.4")


# -- NOTIFY ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "notify"), [
    ("NEVER", {Notify.NEVER}),
    ("never", {Notify.NEVER}),
    ("SUCCESS", {Notify.SUCCESS}),
    ("FAILURE,DELAY", {Notify.FAILURE, Notify.DELAY}),
    ("delay,Success,FAILURE", {Notify.SUCCESS, Notify.FAILURE, Notify.DELAY}),
])
def test_notify(value: str, notify: set[Notify]) -> None:
    assert parse_rcpt_params(f"NOTIFY={value}").notify == frozenset(notify)


@pytest.mark.parametrize("value", [
    "",
    "=",
    "=NEVER,SUCCESS",
    "=FAILURE,NEVER",
    "=SUCCESS,SUCCESS",
    "=success,SUCCESS",
    "=NEVER,NEVER",
    "=SUCCESS,",
    "=,",
    "=ALWAYS",
    "=SUCCESS;FAILURE",
])
def test_bad_notify_is_501(value: str) -> None:
    assert rcpt_refusal("NOTIFY" + value) == (501, "5.5.4")


# -- ORCPT ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "orcpt"), [
    ("rfc822;Joe@Example.TEST", "rfc822;Joe@Example.TEST"),
    ("RFC822;joe+2Btag@example.test", "rfc822;joe+tag@example.test"),
    ("rfc822;a+3Db@example.test", "rfc822;a=b@example.test"),
    ("rfc822;+22a+20b+22@example.test", 'rfc822;"a b"@example.test'),
    ("utf-8;j\\x{00E9}r\\x{f4}me@example.test", "utf-8;jérôme@example.test"),
    ("UTF-8;用户@例子.广告", "utf-8;用户@例子.广告"),
    ("x-local;whatever", "x-local;whatever"),
])
def test_orcpt(value: str, orcpt: str) -> None:
    assert parse_rcpt_params(f"ORCPT={value}").orcpt == orcpt


@pytest.mark.parametrize("value", [
    "",
    "=",
    "=rfc822",                 # no semicolon
    "=rfc822:joe@example.test",
    "=rfc822;",
    "=;joe@example.test",
    "=rf c822;joe",
    "=rfc822;joe+2x@example.test",
    "=rfc822;joe+0D+0A@example.test",
    "=rfc822;joe+7F@example.test",
    "=utf-8;joe\\x{0A}@example.test",
    "=utf-8;joe\\x{FFFFFF}@example.test",  # beyond Unicode
    "=utf-8;joe\\x{D800}@example.test",    # a surrogate, not a character
])
def test_bad_orcpt_is_501(value: str) -> None:
    assert rcpt_refusal("ORCPT" + value) == (501, "5.5.4")


# -- keywords -------------------------------------------------------------------------------------

def test_keywords_are_case_insensitive_and_values_keep_their_case() -> None:
    assert split_params("size=1 Envid=AbC orcpt=rfc822;A@B smtputf8") == {
        "SIZE": "1", "ENVID": "AbC", "ORCPT": "rfc822;A@B", "SMTPUTF8": None}
    assert mail("envid=MiXeD+2BCase").envid == "MiXeD+Case"
    assert parse_rcpt_params("orcpt=rfc822;MiXeD@Case.TEST").orcpt == "rfc822;MiXeD@Case.TEST"


@pytest.mark.parametrize("text", ["SIZE=1 SIZE=2", "SIZE=1 size=1", "BODY=7BIT body=8BITMIME",
                                  "SMTPUTF8 SMTPUTF8", "RET=FULL RET=HDRS", "ENVID=a ENVID=a"])
def test_duplicate_mail_keywords_are_501(text: str) -> None:
    assert mail_refusal(text) == (501, "5.5.4")


@pytest.mark.parametrize("text", ["NOTIFY=NEVER NOTIFY=NEVER", "ORCPT=rfc822;a ORCPT=rfc822;b"])
def test_duplicate_rcpt_keywords_are_501(text: str) -> None:
    assert rcpt_refusal(text) == (501, "5.5.4")


@pytest.mark.parametrize("text", ["=1", "-X=1", "SI_ZE=1", "ÄRGER=1", "SIZ€=1", "X.Y=1"])
def test_keyword_syntax_errors_are_501(text: str) -> None:
    assert mail_refusal(text) == (501, "5.5.4")
    assert rcpt_refusal(text) == (501, "5.5.4")


@pytest.mark.parametrize("text", ["AUTH=<>", "MT-PRIORITY=3", "BY=120;R", "X-FOO", "NOTIFY=NEVER"])
def test_unknown_mail_keywords_are_555(text: str) -> None:
    with pytest.raises(SmtpError) as caught:
        mail(text)
    assert (caught.value.reply.code, caught.value.reply.enhanced) == (555, "5.5.4")
    assert text.partition("=")[0] in caught.value.reply.text


@pytest.mark.parametrize("text", ["SIZE=1", "RRVS=2030-01-01T00:00:00Z", "X-FOO", "ENVID=x"])
def test_unknown_rcpt_keywords_are_555(text: str) -> None:
    assert rcpt_refusal(text) == (555, "5.5.4")


_FRAGMENTS = st.sampled_from(["SIZE", "BODY", "RET", "ENVID", "SMTPUTF8", "NOTIFY", "ORCPT", "=",
                              " ", ";", ",", "+", "+2B", "+0D", "+FF", "\\x{", "}", "FFFFFF",
                              "D800", "41", "rfc822", "utf-8", "NEVER", "SUCCESS", "7BIT", "é",
                              "\x00", "\r\n", "9" * 30])


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(st.one_of(_FRAGMENTS, st.text(max_size=4)), max_size=24).map("".join))
def test_parsers_only_ever_raise_smtp_replies(text: str) -> None:
    """A parameter line can only ever be answered; it never becomes an internal error."""
    for parse in (lambda t: parse_mail_params(t, LIMIT), parse_rcpt_params):
        try:
            params = parse(text)
        except SmtpError as error:
            assert error.reply.code in (501, 552, 555)
            continue
        if isinstance(params, MailParams) and params.envid is not None:
            assert all(32 <= ord(c) < 127 for c in params.envid)
        if isinstance(params, RcptParams) and params.orcpt is not None:
            assert not any(ord(c) < 32 or ord(c) == 127 for c in params.orcpt)
            params.orcpt.encode("utf-8")
