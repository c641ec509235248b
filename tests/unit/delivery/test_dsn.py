"""Delivery status notifications, read back with the stdlib parser as a sender's mail client would."""

from __future__ import annotations

import base64
import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.utils import parsedate_to_datetime
from itertools import product

import pytest

from spoolgate.delivery import dsn as dsn_module
from spoolgate.delivery.dsn import (
    FULL_RETURN_LIMIT,
    Action,
    DsnRecipient,
    DsnRequest,
    build_dsn,
    wants_notice,
)
from spoolgate.mail.envelope import Ret

NOW = 1_700_000_000
NOW_TEXT = "Tue, 14 Nov 2023 22:13:20 +0000"
ARRIVAL = NOW - 3600
LAST_ATTEMPT = NOW - 60
GIVE_UP = NOW + 5 * 86400
MTA = "mx.spoolgate.test"
SENDER = "alice@example.net"
ORIGINAL = (b"From: Alice <alice@example.net>\r\nTo: bob@example.test\r\nSubject: the plan\r\n"
            b"Message-ID: <plan-1@example.net>\r\n\r\nHere is the plan.\r\n.dots and all\r\n")
BOB = DsnRecipient("bob@example.test", Action.FAILED, "5.1.1", orcpt="rfc822;Bob@Example.COM",
                   remote_mta="mail.example.test",
                   diagnostic="550 5.1.1 <bob@example.test>: Recipient address rejected: unknown",
                   last_attempt=LAST_ATTEMPT)
CAROL = DsnRecipient("carol@example.test", Action.FAILED, "5.2.2",
                     diagnostic="552 5.2.2 mailbox full")
DAVE_DELAYED = DsnRecipient("dave@example.test", Action.DELAYED, "4.4.1", remote_mta="[192.0.2.25]",
                            diagnostic="451 4.4.1 connection timed out",
                            last_attempt=LAST_ATTEMPT, will_retry_until=GIVE_UP)
ERIN_DELIVERED = DsnRecipient("erin@example.test", Action.DELIVERED, "2.0.0",
                              remote_mta="mail.example.test", diagnostic="250 2.0.0 Ok: queued as X",
                              last_attempt=LAST_ATTEMPT)


def request(*recipients: DsnRecipient, original: bytes = ORIGINAL, **changes: object) -> DsnRequest:
    fields: dict[str, object] = {"queue_id": "4Xq1abCD", "sender": SENDER, "reporting_mta": MTA,
                                 "arrival": ARRIVAL, "recipients": recipients or (BOB, CAROL),
                                 "original": original}
    fields.update(changes)
    return DsnRequest(**fields)  # type: ignore[arg-type]


def assert_wire_clean(dsn: bytes) -> None:
    """CRLF only, no bare CR or LF, no line over 998 octets."""
    assert dsn.endswith(b"\r\n")
    without_crlf = dsn.replace(b"\r\n", b"")
    assert b"\r" not in without_crlf and b"\n" not in without_crlf
    assert max(len(line) for line in dsn.split(b"\r\n")) <= 998


def build(req: DsnRequest, message_id_domain: str | None = None) -> tuple[bytes, EmailMessage]:
    dsn = build_dsn(req, NOW, message_id_domain)
    assert_wire_clean(dsn)
    message = email.message_from_bytes(dsn, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert message.defects == []
    return dsn, message


def parts(message: EmailMessage) -> list[Message]:
    found = list(message.iter_parts())
    assert [p.get_content_type() for p in found[:2]] == ["text/plain", "message/delivery-status"]
    assert len(found) == 3
    return found


def blocks(message: EmailMessage) -> list[Message]:
    """The per-message block followed by one block per recipient."""
    return parts(message)[1].get_payload()  # type: ignore[return-value]


def raw_content(dsn: bytes, message: EmailMessage, index: int) -> bytes:
    """The exact bytes of part *index* after its header section, cut at the MIME delimiters."""
    delimiter = b"\r\n--" + message.get_boundary().encode("ascii")
    piece = dsn.split(delimiter)[index + 1]
    assert piece.startswith(b"\r\n")
    return piece[2:].split(b"\r\n\r\n", 1)[1]


def when(value: str) -> float:
    return parsedate_to_datetime(value).timestamp()


# -- wants_notice ---------------------------------------------------------------------------------

NOTICES = {
    None: {Action.FAILED, Action.DELAYED},
    "": {Action.FAILED, Action.DELAYED},
    "NEVER": set(),
    "SUCCESS": {Action.DELIVERED, Action.RELAYED},
    "FAILURE": {Action.FAILED},
    "DELAY": {Action.DELAYED},
    "DELAY,FAILURE": {Action.FAILED, Action.DELAYED},
    "FAILURE,SUCCESS": {Action.FAILED, Action.DELIVERED, Action.RELAYED},
    "DELAY,SUCCESS": {Action.DELAYED, Action.DELIVERED, Action.RELAYED},
    "DELAY,FAILURE,SUCCESS": set(Action),
    "failure, delay": {Action.FAILED, Action.DELAYED},
}


@pytest.mark.parametrize(("notify", "action"), list(product(NOTICES, Action)))
def test_wants_notice(notify: str | None, action: Action) -> None:
    assert wants_notice(notify, action) is (action in NOTICES[notify])


# -- failure with two recipients -----------------------------------------------------------------

def test_failure_headers() -> None:
    dsn, message = build(request())
    assert message["From"] == f"Mail Delivery System <MAILER-DAEMON@{MTA}>"
    assert message["From"].addresses[0].addr_spec == f"MAILER-DAEMON@{MTA}"
    assert message["To"].addresses[0].addr_spec == SENDER
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert message["Date"] == NOW_TEXT
    assert message["Date"].datetime == datetime.fromtimestamp(NOW, UTC)
    assert message["Message-ID"].startswith("<") and message["Message-ID"].endswith(f"@{MTA}>")
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert message.get_boundary()
    assert dsn.isascii()


def test_failure_explains_each_recipient_to_people() -> None:
    _, message = build(request())
    text = parts(message)[0]
    assert text.get_content_charset() == "utf-8"
    content = " ".join(text.get_content().split())
    assert MTA in content
    assert ("<bob@example.test>: host mail.example.test said: 550 5.1.1 <bob@example.test>:"
            " Recipient address rejected: unknown") in content
    assert "<carol@example.test>: 552 5.2.2 mailbox full" in content
    assert "could not be delivered" in content


def test_failure_delivery_status_fields() -> None:
    _, message = build(request())
    per_message, bob, carol = blocks(message)
    assert per_message["Reporting-MTA"] == f"dns; {MTA}"
    assert "Original-Envelope-Id" not in per_message
    assert when(per_message["Arrival-Date"]) == ARRIVAL

    assert bob["Original-Recipient"] == "rfc822;Bob@Example.COM"
    assert bob["Final-Recipient"] == "rfc822; bob@example.test"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.1.1"
    assert bob["Remote-MTA"] == "dns; mail.example.test"
    assert bob["Diagnostic-Code"] == f"smtp; {BOB.diagnostic}"
    assert when(bob["Last-Attempt-Date"]) == LAST_ATTEMPT
    assert "Will-Retry-Until" not in bob

    assert "Original-Recipient" not in carol
    assert carol["Final-Recipient"] == "rfc822; carol@example.test"
    assert carol["Action"] == "failed"
    assert carol["Status"] == "5.2.2"
    assert carol["Diagnostic-Code"] == "smtp; 552 5.2.2 mailbox full"
    for absent in ("Remote-MTA", "Last-Attempt-Date", "Will-Retry-Until"):
        assert absent not in carol


def test_small_failure_without_ret_returns_the_whole_original() -> None:
    dsn, message = build(request())
    returned = parts(message)[2]
    assert returned.get_content_type() == "message/rfc822"
    assert returned.get_payload()[0]["Subject"] == "the plan"
    assert raw_content(dsn, message, 2) == ORIGINAL


def test_failure_ignores_will_retry_until() -> None:
    failed = DsnRecipient("bob@example.test", Action.FAILED, "5.4.7", will_retry_until=GIVE_UP)
    _, message = build(request(failed))
    assert "Will-Retry-Until" not in blocks(message)[1]


def test_envid_is_reported() -> None:
    _, message = build(request(envid="QQ314159+x"))
    assert blocks(message)[0]["Original-Envelope-Id"] == "QQ314159+x"


def test_message_id_is_fresh_and_on_the_given_domain() -> None:
    _, first = build(request())
    _, second = build(request(), message_id_domain="example.org")
    assert second["Message-ID"].endswith("@example.org>")
    _, third = build(request())
    assert first["Message-ID"] != third["Message-ID"]


# -- delay and success ---------------------------------------------------------------------------

def test_delay_report() -> None:
    dsn, message = build(request(DAVE_DELAYED))
    assert message["Subject"] == "Delayed Mail (still being retried)"
    _, dave = blocks(message)
    assert dave["Final-Recipient"] == "rfc822; dave@example.test"
    assert dave["Action"] == "delayed"
    assert dave["Status"] == "4.4.1"
    assert dave["Remote-MTA"] == "dns; [192.0.2.25]"
    assert dave["Diagnostic-Code"] == "smtp; 451 4.4.1 connection timed out"
    assert when(dave["Last-Attempt-Date"]) == LAST_ATTEMPT
    assert when(dave["Will-Retry-Until"]) == GIVE_UP
    text = " ".join(parts(message)[0].get_content().split())
    assert "will retry until Sun, 19 Nov 2023 22:13:20 +0000" in text
    returned = parts(message)[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert raw_content(dsn, message, 2) == ORIGINAL.split(b"\r\n\r\n")[0] + b"\r\n"


def test_success_report() -> None:
    relayed = DsnRecipient("frank@example.test", Action.RELAYED, "2.0.0")
    dsn, message = build(request(ERIN_DELIVERED, relayed))
    assert message["Subject"] == "Successful Mail Delivery Report"
    _, erin, frank = blocks(message)
    assert (erin["Action"], erin["Status"]) == ("delivered", "2.0.0")
    assert erin["Diagnostic-Code"] == "smtp; 250 2.0.0 Ok: queued as X"
    assert (frank["Action"], frank["Final-Recipient"]) == ("relayed", "rfc822; frank@example.test")
    assert parts(message)[2].get_content_type() == "text/rfc822-headers"
    assert b"Here is the plan" not in dsn


@pytest.mark.parametrize(("recipients", "subject"), [
    ((DAVE_DELAYED, BOB), "Undelivered Mail Returned to Sender"),
    ((ERIN_DELIVERED, CAROL), "Undelivered Mail Returned to Sender"),
    ((ERIN_DELIVERED, DAVE_DELAYED), "Delayed Mail (still being retried)"),
])
def test_mixed_report_subject(recipients: tuple[DsnRecipient, ...], subject: str) -> None:
    _, message = build(request(*recipients))
    assert message["Subject"] == subject
    assert [b["Action"] for b in blocks(message)[1:]] == [r.action.value for r in recipients]


# -- RET and the returned original ---------------------------------------------------------------

def test_ret_full_returns_the_exact_original_even_for_a_delay() -> None:
    dsn, message = build(request(DAVE_DELAYED, ret=Ret.FULL))
    returned = parts(message)[2]
    assert returned.get_content_type() == "message/rfc822"
    inner = returned.get_payload()[0]
    assert inner["Message-ID"] == "<plan-1@example.net>"
    assert inner.get_content().splitlines() == ["Here is the plan.", ".dots and all"]
    assert raw_content(dsn, message, 2) == ORIGINAL


def test_ret_full_normalizes_line_ends_only() -> None:
    original = b"Subject: bare\nX-Mixed: yes\r\rbody line\nlast line"
    dsn, message = build(request(original=original, ret=Ret.FULL))
    assert raw_content(dsn, message, 2) == (b"Subject: bare\r\nX-Mixed: yes\r\n\r\nbody line\r\n"
                                            b"last line")


def test_ret_hdrs_returns_headers_only() -> None:
    dsn, message = build(request(ret=Ret.HDRS))
    returned = parts(message)[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    content = returned.get_content()
    assert "Subject: the plan" in content and "Message-ID: <plan-1@example.net>" in content
    assert "Here is the plan" not in content
    assert b"Here is the plan" not in dsn
    assert raw_content(dsn, message, 2) == ORIGINAL.split(b"\r\n\r\n")[0] + b"\r\n"


def test_large_failure_without_ret_returns_headers() -> None:
    original = ORIGINAL + (b"y" * 78 + b"\r\n") * (FULL_RETURN_LIMIT // 80 + 1)
    assert len(original) > FULL_RETURN_LIMIT
    dsn, message = build(request(original=original))
    assert parts(message)[2].get_content_type() == "text/rfc822-headers"
    assert b"y" * 78 not in dsn
    dsn, message = build(request(original=original, ret=Ret.FULL))
    assert raw_content(dsn, message, 2) == original


def test_original_without_a_body() -> None:
    original = b"Subject: only headers\r\nFrom: a@example.net"
    dsn, message = build(request(original=original, ret=Ret.HDRS))
    assert raw_content(dsn, message, 2) == original + b"\r\n"


# -- 8-bit originals -----------------------------------------------------------------------------

EIGHT_BIT_BODY = (b"From: alice@example.net\r\nSubject: plain ascii header\r\n"
                  b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
                  b"\r\nGr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\r\n\xff\xfe raw bytes too\r\n")
EIGHT_BIT_HEADERS = (b"From: J\xc3\xbcrgen <j\xc3\xbcrgen@example.net>\r\n"
                     b"Subject: \xc3\x9cbersicht\r\n\r\nbody\r\n")


def base64_part(dsn: bytes, message: EmailMessage, kind: str) -> bytes:
    returned = parts(message)[2]
    assert returned.get_content_type() == kind
    assert returned["Content-Transfer-Encoding"] == "base64"
    return base64.b64decode(raw_content(dsn, message, 2), validate=False)


def test_eight_bit_original_comes_back_exactly_in_a_seven_bit_dsn() -> None:
    dsn, message = build(request(original=EIGHT_BIT_BODY, ret=Ret.FULL))
    assert dsn.isascii()
    assert base64_part(dsn, message, "message/global") == EIGHT_BIT_BODY


def test_eight_bit_headers_come_back_as_global_headers() -> None:
    dsn, message = build(request(original=EIGHT_BIT_HEADERS, ret=Ret.HDRS))
    assert dsn.isascii()
    assert base64_part(dsn, message, "message/global-headers") == EIGHT_BIT_HEADERS.split(
        b"\r\n\r\n")[0] + b"\r\n"


def test_ascii_headers_of_an_eight_bit_body_stay_text() -> None:
    dsn, message = build(request(original=EIGHT_BIT_BODY, ret=Ret.HDRS))
    assert parts(message)[2].get_content_type() == "text/rfc822-headers"
    assert raw_content(dsn, message, 2) == EIGHT_BIT_BODY.split(b"\r\n\r\n")[0] + b"\r\n"


def test_over_long_original_line_is_encoded_not_cut() -> None:
    original = b"Subject: long\r\n\r\n" + b"z" * 5000 + b"\r\n"
    dsn, message = build(request(original=original, ret=Ret.FULL))
    assert base64_part(dsn, message, "message/global") == original


def test_utf8_recipient_and_orcpt_use_the_utf8_address_type() -> None:
    jurgen = DsnRecipient("j\u00fcrgen@example.test", Action.FAILED, "5.1.1",
                          orcpt="utf-8;J\u00fcrgen+x@example.test", diagnostic="550 5.1.1 f\u00fcr")
    dsn, message = build(request(jurgen))
    _, block = blocks(message)
    assert block["Final-Recipient"] == "utf-8; j\\x{FC}rgen@example.test"
    assert block["Original-Recipient"] == "utf-8;J\\x{FC}rgen\\x{2B}x@example.test"
    assert block["Diagnostic-Code"] == "smtp; 550 5.1.1 f\\x{FC}r"
    assert "<j\u00fcrgen@example.test>" in parts(message)[0].get_content()
    assert dsn.isascii()


# -- strangers' text -----------------------------------------------------------------------------

HOSTILE = "\r\nBcc: evil@example.org\r\n\r\n--boundary\r\nContent-Type: text/html\r\n\x00"


def test_hostile_values_cannot_add_headers_or_parts() -> None:
    victim = DsnRecipient("bob@example.test" + HOSTILE, Action.FAILED, "5.1.1",
                          orcpt="rfc822;bob@example.test" + HOSTILE,
                          remote_mta="mx.example.test" + HOSTILE, diagnostic="550 no" + HOSTILE)
    dsn, message = build(request(victim, CAROL, sender=SENDER + HOSTILE, envid="id" + HOSTILE))
    assert "Bcc" not in message
    assert message["To"].addresses[0].addr_spec.startswith(SENDER)
    per_message, bob, carol = blocks(message)
    for block in (per_message, bob, carol):
        assert "Bcc" not in block and "Content-Type" not in block
    assert bob["Final-Recipient"].startswith("rfc822; bob@example.test Bcc: evil@example.org")
    assert bob["Diagnostic-Code"].startswith("smtp; 550 no Bcc: evil@example.org")
    assert carol["Final-Recipient"] == "rfc822; carol@example.test"
    assert not [line for line in dsn.split(b"\r\n") if line.lower().startswith(b"bcc")]
    assert b"\x00" not in dsn
    assert "text/html" not in [p.get_content_type() for p in message.walk()]


def test_boundary_avoids_text_already_in_the_original(monkeypatch: pytest.MonkeyPatch) -> None:
    boundaries = iter(["a" * 32, "a" * 32, "b" * 32])
    monkeypatch.setattr(dsn_module.secrets, "token_hex",
                        lambda n: next(boundaries) if n == 16 else "c" * 2 * n)
    original = b"Subject: trap\r\n\r\n--=_spoolgate_" + b"a" * 32 + b"--\r\n"
    dsn, message = build(request(original=original, ret=Ret.FULL))
    assert message.get_boundary() == "=_spoolgate_" + "b" * 32
    assert raw_content(dsn, message, 2) == original


@pytest.mark.parametrize("diagnostic", [
    "550 5.7.1 " + "word " * 2000,
    "550 5.7.1 " + "x" * 5000,
    "550 5.7.1 " + "\u00fc" * 3000,
])
def test_very_long_diagnostic_keeps_lines_short(diagnostic: str) -> None:
    victim = DsnRecipient("bob@example.test", Action.FAILED, "5.7.1", diagnostic=diagnostic)
    dsn, message = build(request(victim))  # build() checks every line is at most 998 octets
    value = blocks(message)[1]["Diagnostic-Code"]
    expected = "smtp; " + "".join(c if c.isascii() else "\\x{FC}" for c in diagnostic.strip())
    assert value.replace(" ", "") == expected.replace(" ", "")
    text = "".join(parts(message)[0].get_content().split())
    assert diagnostic.replace(" ", "") in text


# -- refusals ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sender", ["", "\r\n"])
def test_null_sender_never_gets_a_dsn(sender: str) -> None:
    with pytest.raises(ValueError, match="null sender"):
        build_dsn(request(sender=sender), NOW)


def test_no_recipients_is_refused() -> None:
    with pytest.raises(ValueError, match="recipient"):
        build_dsn(request(recipients=()), NOW)


@pytest.mark.parametrize("status", ["", "550", "5.1", "6.0.0", "5.1.1\r\nBcc: x", "x.1.1"])
def test_malformed_status_is_refused(status: str) -> None:
    bad = DsnRecipient("bob@example.test", Action.FAILED, status)
    with pytest.raises(ValueError, match="RFC 3463"):
        build_dsn(request(bad), NOW)
