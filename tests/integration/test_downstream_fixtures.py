"""The downstream helpers of tests.downstream run real servers that behave as documented.

Each test drives one helper with smtplib, imaplib or a raw socket (tests.smtp_wire.Wire)
and checks what arrives or what the server answers, so a delivery test failing later
points at Spoolgate, not at its test double. The replies asserted here are the exact
behaviour the delivery tests can rely on.
"""

from __future__ import annotations

import imaplib
import smtplib
import socket
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.downstream import (
    ConnectionCounter,
    DovecotLmtp,
    PostfixDownstream,
    SmtpSink,
    closed_port,
    is_alive,
    is_listening,
    wait_until,
)
from tests.gateway_process import free_port
from tests.smtp_wire import Wire

pytestmark = pytest.mark.integration

TIMEOUT = 10.0
SENDER = "sender@source.test"


def message(message_id: str, body: str = "Hello.\r\n") -> bytes:
    return (f"From: {SENDER}\r\nTo: someone@example.test\r\nSubject: fixture test\r\n"
            f"Message-ID: {message_id}\r\n\r\n{body}").encode()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    except ConnectionRefusedError:
        return True
    return False


# --- Postfix -------------------------------------------------------------------------------


def test_postfix_delivers_in_arrival_order_and_offers_no_starttls(folder: Path) -> None:
    with PostfixDownstream(folder / "postfix", free_port()) as downstream:
        ids = [f"<order-{n}@source.test>" for n in range(20)]
        with smtplib.SMTP("127.0.0.1", downstream.port, timeout=TIMEOUT) as client:
            client.ehlo()
            assert not client.has_extn("starttls")
            for n, message_id in enumerate(ids):
                client.sendmail(SENDER, [f"user{n}@example.test"], message(message_id))
        messages = downstream.wait_for(20, TIMEOUT)
        assert downstream.message_ids() == ids
        assert [str(m["Delivered-To"]) for m in messages] == [
            f"user{n}@example.test" for n in range(20)]
        assert downstream.log_text().count("status=sent (delivered to maildir)") == 20


def test_postfix_recipients_map_refuses_unknown_local_parts_at_rcpt(folder: Path) -> None:
    with PostfixDownstream(folder / "postfix", free_port(), ("example.test", "other.test"),
                           {"example.test": ["alice"]}) as downstream:
        with smtplib.SMTP("127.0.0.1", downstream.port, timeout=TIMEOUT) as client:
            client.ehlo()
            client.mail(SENDER)
            assert client.rcpt("alice@example.test") == (250, b"2.1.5 Ok")
            code, text = client.rcpt("bob@example.test")
            assert (code, text[:5]) == (550, b"5.1.1")
            assert b"User unknown in virtual mailbox table" in text
            assert client.rcpt("anyone@other.test") == (250, b"2.1.5 Ok")
            code, text = client.rcpt("someone@elsewhere.test")  # never relayed off the machine
            assert (code, text[:5]) == (550, b"5.1.1")
            assert client.data(message("<map@source.test>"))[0] == 250
        messages = downstream.wait_for(2, TIMEOUT)
        assert sorted(str(m["Delivered-To"]) for m in messages) == [
            "alice@example.test", "anyone@other.test"]
        assert [len(list((maildir / "new").iterdir())) for maildir in downstream.maildirs()
                ] == [1, 1]


def test_postfix_takes_large_messages_and_smtputf8(folder: Path) -> None:
    big_body = ("x" * 998 + "\r\n") * 12_000  # 12 MB: above Postfix's default 10240000
    with PostfixDownstream(folder / "postfix", free_port()) as downstream:
        with smtplib.SMTP("127.0.0.1", downstream.port, timeout=TIMEOUT) as client:
            client.ehlo()
            assert client.has_extn("smtputf8")
            client.sendmail(SENDER, ["big@example.test"], message("<big@source.test>", big_body))
            client.sendmail(SENDER, ["jörg@example.test"], message("<utf8@source.test>"),
                            mail_options=["SMTPUTF8"])
        big, utf8 = downstream.wait_for(2, TIMEOUT)
        assert big.get_content() == big_body.replace("\r\n", "\n")
        assert str(utf8["Delivered-To"]) == "jörg@example.test"


def test_postfix_stops_and_starts_again_on_the_same_port_keeping_mail(folder: Path) -> None:
    downstream = PostfixDownstream(folder / "postfix", free_port())
    with downstream:
        with smtplib.SMTP("127.0.0.1", downstream.port, timeout=TIMEOUT) as client:
            client.sendmail(SENDER, ["a@example.test"], message("<before@source.test>"))
        downstream.wait_for(1, TIMEOUT)
        downstream.stop()
        downstream.stop()  # idempotent
        assert not downstream.is_running
        assert refused(downstream.port)
        downstream.start()
        with smtplib.SMTP("127.0.0.1", downstream.port, timeout=TIMEOUT) as client:
            client.sendmail(SENDER, ["a@example.test"], message("<after@source.test>"))
        downstream.wait_for(2, TIMEOUT)
        assert downstream.message_ids() == ["<before@source.test>", "<after@source.test>"]
    assert refused(downstream.port)


def test_postfix_with_tls_offers_starttls_that_the_ca_file_verifies(folder: Path) -> None:
    with PostfixDownstream(folder / "postfix", free_port(), tls=True) as downstream:
        assert downstream.ca_file is not None
        context = ssl.create_default_context(cafile=str(downstream.ca_file))
        with smtplib.SMTP("127.0.0.1", downstream.port, timeout=TIMEOUT) as client:
            client.ehlo()
            assert client.has_extn("starttls")
            client.starttls(context=context)  # checks the name 127.0.0.1 against the SAN
            certificate = client.sock.getpeercert()
            client.sendmail(SENDER, ["tls@example.test"], message("<tls@source.test>"))
        assert set(certificate["subjectAltName"]) == {
            ("DNS", "localhost"), ("IP Address", "127.0.0.1")}
        wire = Wire(downstream.port)
        wire.reply()
        wire.command("EHLO client.test")
        assert wire.command("STARTTLS").startswith("220 2.0.0")
        with pytest.raises(ssl.SSLCertVerificationError):
            context.wrap_socket(wire.sock, server_hostname="mx.elsewhere.test")
        wire.close()
        (received,) = downstream.wait_for(1, TIMEOUT)
        assert "with ESMTPS" in str(received["Received"])


# --- Dovecot -------------------------------------------------------------------------------


@pytest.fixture
def dovecot(folder: Path) -> Iterator[DovecotLmtp]:
    with DovecotLmtp(folder / "dovecot", free_port(), imap_port=free_port(),
                     over_quota=("carol@example.test",)) as server:
        yield server


def lmtp_session(port: int, recipients: Sequence[str]) -> tuple[list[str], Wire]:
    """LHLO, MAIL and one RCPT per recipient; the RCPT replies and the open session."""
    wire = Wire(port)
    assert wire.reply().startswith("220 ")
    assert wire.command("LHLO client.test").startswith("250")
    assert wire.command(f"MAIL FROM:<{SENDER}>") == "250 2.1.0 OK"
    return [wire.command(f"RCPT TO:<{rcpt}>") for rcpt in recipients], wire


def test_dovecot_refuses_an_unknown_user_at_rcpt_not_after_data(dovecot: DovecotLmtp) -> None:
    replies, wire = lmtp_session(dovecot.port, ["nobody@example.test", "alice@example.test"])
    assert replies == [
        "550 5.1.1 <nobody@example.test> User doesn't exist: nobody@example.test",
        "250 2.1.5 OK"]
    assert wire.command("DATA") == "354 OK"
    wire.send(message("<unknown@source.test>") + b".\r\n")
    assert wire.reply().startswith("250 2.0.0 <alice@example.test> ")  # one reply: one RCPT
    assert wire.command("QUIT").startswith("221")
    wire.close()
    (delivered,) = dovecot.wait_for("alice@example.test", 1, TIMEOUT)
    assert delivered["Message-ID"] == "<unknown@source.test>"


def test_dovecot_over_quota_user_fails_alone_after_data(dovecot: DovecotLmtp) -> None:
    recipients = ["alice@example.test", "carol@example.test", "bob@example.test"]
    replies, wire = lmtp_session(dovecot.port, recipients)
    assert replies == ["250 2.1.5 OK"] * 3
    assert wire.command("DATA") == "354 OK"
    wire.send(message("<quota@source.test>") + b".\r\n")
    after_dot = [wire.reply() for _ in recipients]
    wire.close()
    assert after_dot[0].startswith("250 2.0.0 <alice@example.test> ")
    assert after_dot[1] == ("552 5.2.2 <carol@example.test> "
                            "Quota exceeded (mailbox for user is full)")
    assert after_dot[2].startswith("250 2.0.0 <bob@example.test> ")
    assert dovecot.wait_for("bob@example.test", 1, TIMEOUT)[0]["Message-ID"] == (
        "<quota@source.test>")
    assert len(dovecot.messages("alice@example.test")) == 1
    assert dovecot.messages("carol@example.test") == []


def test_dovecot_imap_shows_what_lmtp_delivered(dovecot: DovecotLmtp) -> None:
    assert dovecot.imap_port is not None
    with smtplib.LMTP("127.0.0.1", dovecot.port, timeout=TIMEOUT) as client:
        client.sendmail(SENDER, ["alice@example.test"], message("<imap@source.test>"))
    dovecot.wait_for("alice@example.test", 1, TIMEOUT)
    with imaplib.IMAP4("127.0.0.1", dovecot.imap_port, timeout=TIMEOUT) as imap:
        imap.login("alice@example.test", "secret")
        assert imap.select("INBOX") == ("OK", [b"1"])
        _, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert b"<imap@source.test>" in data[0][1]


def test_dovecot_stop_leaves_no_process_and_frees_the_ports(folder: Path) -> None:
    server = DovecotLmtp(folder / "dovecot", free_port(), imap_port=free_port())
    with server:
        pids = server.process_ids()
        assert len(pids) >= 4  # master, log, config, anvil, ...
        server.stop()
        server.stop()
        assert [pid for pid in pids if is_alive(pid)] == []
        assert refused(server.port) and refused(server.imap_port)
        server.start()  # and again on the same ports
        assert server.is_running


# --- smtp-sink -----------------------------------------------------------------------------


@pytest.fixture
def sinks(folder: Path) -> Iterator[list[SmtpSink]]:
    started: list[SmtpSink] = []
    yield started
    for sink in started:
        sink.stop()


def start_sink(sinks: list[SmtpSink], folder: Path, options: Sequence[str] = ()) -> SmtpSink:
    sink = SmtpSink(free_port(), folder, options)
    sinks.append(sink)
    return sink.start()


def open_transaction(port: int, timeout: float = TIMEOUT) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=timeout)
    client.ehlo()
    assert client.mail(SENDER)[0] == 250
    assert client.rcpt("user@example.test")[0] == 250
    return client


def test_sink_accepts_counts_messages_and_ended_sessions(sinks: list, folder: Path) -> None:
    sink = start_sink(sinks, folder)
    assert sink.count() == 0 and sink.connections() == 0  # the start-up probe did not connect
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        assert not client.has_extn("size") and not client.has_extn("smtputf8")
        client.sendmail(SENDER, ["a@example.test"], message("<s1@source.test>"))
        client.sendmail(SENDER, ["a@example.test"], message("<s2@source.test>"))
        assert sink.wait_for(2, TIMEOUT) == 2
        assert sink.connections() == 0  # a session is counted when it ends
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=TIMEOUT) as client:
        client.sendmail(SENDER, ["a@example.test"], message("<s3@source.test>"))
    wait_until(lambda: sink.connections() == 2, TIMEOUT, "two ended sessions")
    assert sink.count() == 3


def test_sink_soft_rejects_rcpt(sinks: list, folder: Path) -> None:
    sink = start_sink(sinks, folder, SmtpSink.SOFT_REJECT_RCPT)
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert not client.has_extn("pipelining")  # -r implies -p
        client.mail(SENDER)
        assert client.rcpt("user@example.test") == (450, b"4.3.0 Error: command failed")


@pytest.mark.parametrize(("options", "expected"), [
    (SmtpSink.TEMPFAIL_AFTER_DATA, (450, b"4.3.0 Error: command failed")),
    (SmtpSink.REJECT_AFTER_DATA, (500, b"5.3.0 Error: command failed")),
    (SmtpSink.REJECT_AFTER_DATA + ("-B", "554 5.7.1 rejected by policy"),
     (554, b"5.7.1 rejected by policy")),
    (SmtpSink.SHUTDOWN_AFTER_DOT, (421, b"4.0.0 Server closing connection")),
], ids=["4xx", "5xx", "5xx-own-text", "421"])
def test_sink_replies_after_the_dot(sinks: list, folder: Path, options: tuple[str, ...],
                                    expected: tuple[int, bytes]) -> None:
    sink = start_sink(sinks, folder, options)
    with open_transaction(sink.port) as client:
        assert client.data(message("<dot@source.test>")) == expected
    assert sink.count() == 1  # the message was received in full before the reply


def test_sink_hangs_after_the_dot(sinks: list, folder: Path) -> None:
    sink = start_sink(sinks, folder, SmtpSink.HANG_AFTER_DOT)
    client = open_transaction(sink.port, timeout=0.5)
    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        client.data(message("<hang@source.test>"))
    client.close()
    assert sink.count() == 1


def test_sink_hangs_before_354(sinks: list, folder: Path) -> None:
    sink = start_sink(sinks, folder, SmtpSink.HANG_BEFORE_354)
    client = open_transaction(sink.port, timeout=0.5)
    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        client.data(message("<hang354@source.test>"))
    client.close()
    assert sink.count() == 0


def test_sink_disconnects_after_the_dot_without_reply(sinks: list, folder: Path) -> None:
    sink = start_sink(sinks, folder, SmtpSink.DISCONNECT_AFTER_DOT)
    client = open_transaction(sink.port)
    with pytest.raises(smtplib.SMTPServerDisconnected, match="^Connection unexpectedly closed$"):
        client.data(message("<gone@source.test>"))
    client.close()
    assert sink.count() == 1


def test_sink_closes_the_connection_mid_data(sinks: list, folder: Path) -> None:
    sink = start_sink(sinks, folder, SmtpSink.CLOSE_MID_DATA)
    wire = Wire(sink.port)
    wire.reply()
    wire.command("EHLO client.test")
    wire.command(f"MAIL FROM:<{SENDER}>")
    wire.command("RCPT TO:<user@example.test>")
    assert wire.command("DATA").startswith("354 ")
    assert wire.reply() == "550 This violates SMTP"  # sent unasked, then it stops reading
    assert wire.at_eof()
    wire.close()
    assert sink.count() == 0


def test_sink_without_esmtp_makes_clients_fall_back_to_helo(sinks: list, folder: Path) -> None:
    sink = start_sink(sinks, folder, SmtpSink.NO_ESMTP)
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=TIMEOUT) as client:
        assert client.ehlo() == (500, b"5.5.1 Error: unknown command")
        assert client.helo()[0] == 250
        client.sendmail(SENDER, ["a@example.test"], message("<helo@source.test>"))
    assert sink.count() == 1


def test_sink_can_leave_out_enhanced_status_codes(sinks: list, folder: Path) -> None:
    sink = start_sink(sinks, folder, SmtpSink.NO_ENHANCED_CODES)
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert not client.has_extn("enhancedstatuscodes")
        assert client.mail(SENDER) == (250, b"2.1.0 Ok")  # the replies still carry them


# --- A server that is down -----------------------------------------------------------------


def test_connection_counter_counts_attempts_and_answers_421() -> None:
    with ConnectionCounter(free_port()) as counter:
        for _ in range(3):
            with pytest.raises(smtplib.SMTPConnectError) as refused_by:
                smtplib.SMTP("127.0.0.1", counter.port, timeout=TIMEOUT)
            assert refused_by.value.smtp_code == 421
        assert counter.wait_for(3, TIMEOUT) == 3
    assert not is_listening(counter.port)
    assert refused(counter.port)
    assert counter.count == 3


def test_connection_counter_can_close_without_a_word() -> None:
    with ConnectionCounter(free_port(), reply=None) as counter:
        with socket.create_connection(("127.0.0.1", counter.port), timeout=TIMEOUT) as sock:
            assert sock.recv(100) == b""
        assert counter.wait_for(1, TIMEOUT) == 1


def test_closed_port_refuses_connections() -> None:
    assert refused(closed_port())
