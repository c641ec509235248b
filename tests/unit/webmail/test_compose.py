"""The MIME spoolgate/webmail/compose.py builds: headers, Bcc, quoting, threading, encodings."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest

from spoolgate.mime.parse import parse_message
from spoolgate.webmail.compose import (
    ComposeError,
    Draft,
    Upload,
    build_message,
    envelope_recipients,
    forward_draft,
    message_bytes,
    parse_addresses,
    quote,
    reply_draft,
)
from tests.webmail_mail import text_message

ALICE = "alice@example.test"
NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def _built(draft: Draft, original: bytes | None = None) -> bytes:
    return message_bytes(build_message(ALICE, draft, hostname="mail.example.test", now=NOW,
                                       original=original))


def _parsed(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def test_headers_are_generated_and_bcc_is_never_a_header() -> None:
    data = _built(Draft(to="Bob <bob@partner.test>", cc="carol@partner.test",
                        bcc="secret@hidden.test", subject="Plans", body="Hello\r\n"))
    msg = _parsed(data)
    assert msg["From"] == ALICE
    assert msg["To"] == "Bob <bob@partner.test>" and msg["Cc"] == "carol@partner.test"
    assert msg["Date"] == "Sun, 29 Nov 2026 10:00:00 +0000"
    assert msg["Message-ID"].endswith("@mail.example.test>")
    assert b"secret@hidden.test" not in data and "Bcc" not in msg
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert msg.get_content().replace("\r\n", "\n") == "Hello\n"


def test_non_ascii_subject_names_and_body_are_encoded() -> None:
    data = _built(Draft(to="Jöhn Dœ <john@partner.test>", subject="Grüße aus Köln",
                        body="Viele Grüße €\n"))
    assert data.isascii()
    assert b"=?utf-8?" in data
    msg = _parsed(data)
    assert msg["Subject"] == "Grüße aus Köln"
    assert msg["To"].addresses[0].display_name == "Jöhn Dœ"
    assert msg.get_content().replace("\r\n", "\n") == "Viele Grüße €\n"


def test_subject_line_breaks_cannot_add_headers() -> None:
    msg = _parsed(_built(Draft(to="bob@partner.test", subject="Hi\r\nBcc: evil@x.test")))
    assert "Bcc" not in msg and msg["Subject"] == "Hi Bcc: evil@x.test"


def test_attachment_bytes_are_exact_and_the_filename_follows_rfc_2231() -> None:
    payload = bytes(range(256)) * 10
    data = _built(Draft(to="bob@partner.test", body="see attached",
                        uploads=(Upload("Bericht März.pdf", "application/pdf", payload),)))
    assert b"filename*=utf-8''Bericht%20M%C3%A4rz.pdf" in data
    part = parse_message(data).attachments()[0]
    assert part.payload == payload and part.filename == "Bericht März.pdf"
    assert part.content_type == "application/pdf"


def test_an_upload_claiming_a_text_type_is_attached_as_bytes() -> None:
    data = _built(Draft(to="bob@partner.test",
                        uploads=(Upload("a.html", "text/html", b"<p>\r\nx\n"),)))
    assert parse_message(data).attachments()[0].payload == b"<p>\r\nx\n"


def test_forward_as_attachment_is_message_rfc822_of_the_original() -> None:
    original = text_message(ALICE, subject="Original")
    msg = _parsed(_built(Draft(to="bob@partner.test", subject="Fwd: Original"), original))
    inner = [p for p in msg.walk() if p.get_content_type() == "message/rfc822"]
    assert len(inner) == 1
    forwarded = inner[0].get_content()
    assert forwarded["Subject"] == "Original" and "see you." in forwarded.get_content()


def test_addresses_follow_the_gateways_rules() -> None:
    assert [a.addr_spec for a in parse_addresses("To", "A <a@x.test>, b@Y.TEST")] == \
        ["a@x.test", "b@y.test"]
    for bad in ("bob", "bob@", "bob@-x.test", "a b@x.test", "bob@x..test", "ü@x.test",
                "a@x.test\nBcc: c@d.test", "x" * 65 + "@x.test"):
        with pytest.raises(ComposeError):
            parse_addresses("To", bad)
    with pytest.raises(ComposeError, match="^Cc: "):
        parse_addresses("Cc", "nobody")


def test_envelope_recipients_are_deduplicated_case_insensitively() -> None:
    to = parse_addresses("To", "a@x.test, B@x.test")
    bcc = parse_addresses("Bcc", "b@X.test, c@x.test")
    assert envelope_recipients(to, (), bcc) == ("a@x.test", "B@x.test", "c@x.test")


def _original(**headers: str) -> bytes:
    msg = email.message.EmailMessage()
    msg["From"] = "Bob Builder <bob@partner.test>"
    msg["To"] = "Alice <alice@example.test>, dave@partner.test"
    msg["Cc"] = "carol@partner.test, ALICE@example.test"
    msg["Subject"] = "Re: Quarterly numbers"
    msg["Date"] = "Sat, 28 Nov 2026 09:00:00 +0000"
    msg["Message-ID"] = "<two@partner.test>"
    msg["References"] = "<zero@partner.test> <one@partner.test>"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("Numbers:\n> earlier\n\nbye\n")
    return bytes(msg)


def test_reply_threads_quotes_and_prefixes_re_once() -> None:
    draft = reply_draft(parse_message(_original()), ALICE, reply_all=False)
    assert draft.to == "Bob Builder <bob@partner.test>" and draft.cc == ""
    assert draft.subject == "Re: Quarterly numbers"
    assert draft.in_reply_to == "<two@partner.test>"
    assert draft.references == "<zero@partner.test> <one@partner.test> <two@partner.test>"
    assert "On Sat, 28 Nov 2026 09:00:00 +0000, Bob Builder <bob@partner.test> wrote:\n" \
        in draft.body
    assert "> Numbers:\n> > earlier\n>\n> bye\n" in draft.body
    msg = _parsed(_built(draft))
    assert msg["In-Reply-To"] == "<two@partner.test>"
    assert msg["References"] == draft.references


def test_reply_goes_to_reply_to_when_there_is_one() -> None:
    draft = reply_draft(parse_message(_original(Reply_To="list@partner.test")), ALICE,
                        reply_all=False)
    assert draft.to == "list@partner.test"


def test_reply_all_adds_to_and_cc_without_the_user() -> None:
    draft = reply_draft(parse_message(_original()), ALICE, reply_all=True)
    assert draft.to == "Bob Builder <bob@partner.test>"
    assert draft.cc == "dave@partner.test, carol@partner.test"


def test_forward_inline_carries_the_original_headers_and_text() -> None:
    draft = forward_draft(parse_message(_original()), "QID", as_attachment=False)
    assert draft.subject == "Fwd: Re: Quarterly numbers" and draft.forward_of == ""
    assert "From: Bob Builder <bob@partner.test>" in draft.body
    assert "Subject: Re: Quarterly numbers" in draft.body and "Numbers:" in draft.body
    attached = forward_draft(parse_message(_original()), "QID", as_attachment=True)
    assert attached.forward_of == "QID" and attached.body == ""


def test_forward_prefix_is_not_doubled() -> None:
    assert forward_draft(parse_message(text_message(ALICE, subject="Fwd: x")), "Q",
                         as_attachment=True).subject == "Fwd: x"


def test_quote_marks_every_line() -> None:
    assert quote("a\r\n\r\nb\n") == "> a\n>\n> b\n"


def test_injected_message_ids_are_dropped() -> None:
    msg = _parsed(_built(Draft(to="b@x.test", in_reply_to="<a@b>\r\nBcc: x@y.test",
                               references="junk <c@d> more")))
    assert msg["In-Reply-To"] == "<a@b>" and msg["References"] == "<c@d>"
    assert "Bcc" not in msg
