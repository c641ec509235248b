"""Every reply of the SMTP ingress, seen from real clients talking to a running gateway.

Four gateways serve the module: ``mx`` (defaults, STARTTLS configured), ``limited`` (a
recipient list for example.test, 3 recipients, 10 KiB messages, 3 errors per session),
``crowded`` (3 sessions, 2 per IP) and ``sleepy`` (1 s idle timeout). Clients are smtplib,
raw sockets where the bytes on the wire matter, and swaks, whose transcript is parsed.
"""

from __future__ import annotations

import json
import re
import smtplib
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from spoolgate.ingress.tls import write_self_signed
from spoolgate.mail.queueid import is_queue_id
from spoolgate.store.store import Store, open_store
from tests.gateway_process import GatewayProcess
from tests.smtp_wire import TIMEOUT, Wire, insecure_context

pytestmark = pytest.mark.integration

ROUTE = "smtp://127.0.0.1:2526"
QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as (\S+)$")
MESSAGE = b"From: a@src.test\r\nSubject: replies\r\n\r\nHello.\r\n"


# -- gateways -----------------------------------------------------------------------------

@contextmanager
def running_gateway(tmp_path_factory: pytest.TempPathFactory, name: str,
                    **kwargs) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp(name)
    gateway = GatewayProcess(folder, f"sqlite:///{folder / 'spoolgate.db'}", **kwargs)
    try:
        yield gateway.start()
    finally:
        gateway.kill()


@pytest.fixture(scope="module")
def mx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    certs = tmp_path_factory.mktemp("certs")
    write_self_signed(certs / "cert.pem", certs / "key.pem", "mx.test.example")
    smtp = {"tls_cert": str(certs / "cert.pem"), "tls_key": str(certs / "key.pem")}
    with running_gateway(tmp_path_factory, "mx", smtp=smtp) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    smtp = {"max_recipients": 3, "max_message_size": 10240, "max_errors": 3}
    domains = [{"name": "example.test", "route": ROUTE, "recipients": ["alice"]},
               {"name": "open.test", "route": ROUTE}]
    with running_gateway(tmp_path_factory, "limited", smtp=smtp, domains=domains) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    smtp = {"max_sessions": 3, "max_sessions_per_ip": 2}
    with running_gateway(tmp_path_factory, "crowded", smtp=smtp) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def sleepy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with running_gateway(tmp_path_factory, "sleepy", smtp={"idle_timeout": 1}) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def mx_store(mx: GatewayProcess) -> Iterator[Store]:
    store = open_store(mx.store_url)
    yield store
    store.close()


@pytest.fixture(scope="module")
def limited_store(limited: GatewayProcess) -> Iterator[Store]:
    store = open_store(limited.store_url)
    yield store
    store.close()


# -- clients ------------------------------------------------------------------------------

def client(gateway: GatewayProcess, ehlo: bool = True) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", gateway.port, local_hostname="client.test", timeout=TIMEOUT)
    if ehlo:
        smtp.ehlo()
    return smtp


def said(reply: tuple[int, bytes]) -> str:
    """smtplib's (code, text) as the one line the server sent."""
    return f"{reply[0]} {reply[1].decode('utf-8', 'replace')}"


def status(reply: tuple[int, bytes]) -> str:
    """Basic and enhanced code of a reply, e.g. ``550 5.7.1``."""
    return " ".join(said(reply).split()[:2])


def send_data(smtp: smtplib.SMTP, data: bytes) -> str:
    """After a 354: send *data* (CRLF-terminated) and the end-of-data dot; return the reply."""
    smtp.send(data + b".\r\n")
    return said(smtp.getreply())


def transaction(smtp: smtplib.SMTP, sender: str, recipients: list[str],
                data: bytes = MESSAGE) -> str:
    """MAIL, RCPT for each recipient (all must be accepted), DATA; return the final reply."""
    assert said(smtp.docmd(f"MAIL FROM:{sender}")) == "250 2.1.0 Ok"
    for recipient in recipients:
        assert said(smtp.docmd(f"RCPT TO:{recipient}")) == "250 2.1.5 Ok"
    assert said(smtp.docmd("DATA")).startswith("354 ")
    return send_data(smtp, data)


def queue_id(reply: str) -> str:
    match = QUEUED.match(reply)
    assert match, reply
    assert is_queue_id(match.group(1)), reply
    return match.group(1)


def swaks(gateway: GatewayProcess, *args: str) -> list[tuple[str, str]]:
    """Run swaks against *gateway*; return (command, reply) pairs read from its transcript.

    The command is the first line swaks sent after the previous reply (``<data>`` for the
    message after a 354); the reply's lines are joined with newlines.
    """
    result = subprocess.run(["swaks", "--server", f"127.0.0.1:{gateway.port}",
                             "--helo", "client.test", *args],
                            capture_output=True, text=True, timeout=60)
    pairs: list[tuple[str, str]] = []
    sent: str | None = None
    lines: list[str] = []
    for line in result.stdout.splitlines():
        tag, text = line[:4], line[4:]
        if tag in (" -> ", " ~> ") and sent is None:
            after_354 = bool(pairs) and pairs[-1][1].startswith("354")
            sent = "<data>" if after_354 else text
        elif tag in ("<-  ", "<~  ", "<** ", "<~* "):
            lines.append(text)
            if text[3:4] != "-":
                pairs.append((sent or "<greeting>", "\n".join(lines)))
                sent, lines = None, []
    assert pairs, f"no SMTP transcript from swaks: {result.stdout}{result.stderr}"
    return pairs


def reply_to(pairs: list[tuple[str, str]], command: str) -> str:
    replies = [reply for sent, reply in pairs if sent == command]
    assert replies, f"swaks never sent {command!r}: {pairs}"
    return replies[-1]


def show(gateway: GatewayProcess, qid: str) -> dict:
    result = gateway.cli("queue", "show", qid, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- EHLO -----------------------------------------------------------------------------------

EXTENSIONS = ["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN"]


def test_ehlo_offers_extensions_and_starttls_when_tls_is_configured(mx: GatewayProcess) -> None:
    with client(mx, ehlo=False) as smtp:
        code, text = smtp.ehlo()
        assert code == 250
        assert text.decode().split("\n") == ["mx.test.example", "SIZE 26214400", *EXTENSIONS,
                                             "STARTTLS"]
        smtp.starttls(context=insecure_context())
        code, text = smtp.ehlo()
        assert text.decode().split("\n") == ["mx.test.example", "SIZE 26214400", *EXTENSIONS]


def test_ehlo_without_tls_configured_has_no_starttls(limited: GatewayProcess) -> None:
    with client(limited, ehlo=False) as smtp:
        code, text = smtp.ehlo()
        assert code == 250
        assert text.decode().split("\n") == ["mx.test.example", "SIZE 10240", *EXTENSIONS]
        assert said(smtp.docmd("STARTTLS")).startswith("454 ")


def test_second_starttls_is_refused_and_session_goes_on(mx: GatewayProcess) -> None:
    with client(mx) as smtp:
        smtp.starttls(context=insecure_context())
        smtp.ehlo()
        assert said(smtp.docmd("STARTTLS")) == "554 5.5.1 Error: TLS already active"
        assert said(smtp.docmd("NOOP")) == "250 2.0.0 OK"


def test_helo_session_is_plain_smtp(mx: GatewayProcess, mx_store: Store) -> None:
    with client(mx, ehlo=False) as smtp:
        assert said(smtp.helo()) == "250 mx.test.example"
        assert status(smtp.docmd("MAIL FROM:<a@src.test> BODY=8BITMIME")) == "501 5.5.4"
        qid = queue_id(transaction(smtp, "<a@src.test>", ["<helo@example.test>"]))
    assert b"\tby mx.test.example (Spoolgate) with SMTP\r\n" in mx_store.message_data(qid)


# -- accepted messages ----------------------------------------------------------------------

def test_accepted_message_gets_queue_id_and_is_stored(mx: GatewayProcess, mx_store: Store) -> None:
    with client(mx) as smtp:
        qid = queue_id(transaction(smtp, "<a@src.test>", ["<alice@example.test>"]))
    stored = mx_store.message_data(qid)
    assert stored.endswith(b"\r\n" + MESSAGE)
    header = stored[:-len(MESSAGE)].decode()
    assert header.startswith("Received: from client.test ([127.0.0.1])\r\n")
    assert "\tby mx.test.example (Spoolgate) with ESMTP\r\n" in header
    assert f"\tid {qid}\r\n\tfor <alice@example.test>;" in header
    assert "using" not in header


def test_received_header_names_tls_cipher_after_starttls(mx: GatewayProcess,
                                                         mx_store: Store) -> None:
    with client(mx) as smtp:
        smtp.starttls(context=insecure_context())
        smtp.ehlo()
        cipher, version, _ = smtp.sock.cipher()
        qid = queue_id(transaction(smtp, "<a@src.test>", ["<tls@example.test>"]))
    stored = mx_store.message_data(qid)
    assert (f"\tby mx.test.example (Spoolgate) with ESMTPS (using {version}:{cipher})\r\n"
            f"\tid {qid}\r\n").encode() in stored
    assert stored.endswith(MESSAGE)


def test_swaks_message_accepted_with_queue_id(mx: GatewayProcess, mx_store: Store) -> None:
    pairs = swaks(mx, "--from", "a@src.test", "--to", "carol@example.test",
                  "--header", "Subject: swaks accepted")
    assert reply_to(pairs, "EHLO client.test").split("\n")[1] == "250-SIZE 26214400"
    assert reply_to(pairs, "RCPT TO:<carol@example.test>") == "250 2.1.5 Ok"
    qid = queue_id(reply_to(pairs, "<data>"))
    assert reply_to(pairs, "QUIT") == "221 2.0.0 Bye"
    stored = mx_store.message_data(qid)
    assert b"\r\nSubject: swaks accepted\r\n" in stored
    assert b"X-Mailer: swaks" in stored


def test_swaks_over_starttls_is_stored_as_esmtps(mx: GatewayProcess, mx_store: Store) -> None:
    pairs = swaks(mx, "--from", "a@src.test", "--to", "dave@example.test", "--tls")
    assert reply_to(pairs, "STARTTLS").startswith("220 ")
    qid = queue_id(reply_to(pairs, "<data>"))
    assert re.search(rb"with ESMTPS \(using TLSv1\.[23]:\S+\)\r\n\tid " + qid.encode(),
                     mx_store.message_data(qid))


def test_null_sender_is_accepted(mx: GatewayProcess, mx_store: Store) -> None:
    with client(mx) as smtp:
        qid = queue_id(transaction(smtp, "<>", ["<bounces@example.test>"]))
    detail = mx_store.show(qid)
    assert detail.entry.sender == ""
    assert [r.address for r in detail.entry.recipients] == ["bounces@example.test"]


def test_swaks_null_sender_is_accepted(mx: GatewayProcess, mx_store: Store) -> None:
    pairs = swaks(mx, "--from", "<>", "--to", "bounces@example.test")
    assert reply_to(pairs, "MAIL FROM:<>") == "250 2.1.0 Ok"
    qid = queue_id(reply_to(pairs, "<data>"))
    assert mx_store.show(qid).entry.sender == ""


def test_dsn_parameters_are_stored_decoded(mx: GatewayProcess) -> None:
    with client(mx) as smtp:
        assert said(smtp.docmd("MAIL FROM:<a@src.test> RET=HDRS ENVID=QQ+2Bid+3D1")) == "250 2.1.0 Ok"
        assert said(smtp.docmd("RCPT TO:<alice@example.test> NOTIFY=SUCCESS,DELAY "
                               "ORCPT=rfc822;Alice+2Bdsn@Example.test")) == "250 2.1.5 Ok"
        assert said(smtp.docmd("RCPT TO:<bob@example.test> NOTIFY=NEVER")) == "250 2.1.5 Ok"
        assert said(smtp.docmd("RCPT TO:<carol@example.test>")) == "250 2.1.5 Ok"
        assert said(smtp.docmd("DATA")).startswith("354 ")
        qid = queue_id(send_data(smtp, MESSAGE))
    detail = show(mx, qid)
    assert (detail["ret"], detail["envid"]) == ("HDRS", "QQ+id=1")
    alice, bob, carol = detail["entry"]["recipients"]
    assert alice["address"] == "alice@example.test"
    # NOTIFY is a set of conditions: its order on the wire carries no meaning.
    assert set(alice["notify"].split(",")) == {"SUCCESS", "DELAY"}
    assert alice["orcpt"] == "rfc822;Alice+dsn@Example.test"
    assert (bob["notify"], bob["orcpt"]) == ("NEVER", None)
    assert (carol["notify"], carol["orcpt"]) == (None, None)


def test_smtputf8_address_needs_the_smtputf8_parameter(mx: GatewayProcess,
                                                       mx_store: Store) -> None:
    with client(mx) as smtp:
        smtp.command_encoding = "utf-8"
        assert status(smtp.docmd("MAIL FROM:<jörg@src.test>")) == "501 5.1.7"
        assert said(smtp.docmd("MAIL FROM:<a@src.test>")) == "250 2.1.0 Ok"
        assert status(smtp.docmd("RCPT TO:<jürgen@example.test>")) == "501 5.1.3"
        assert said(smtp.docmd("RSET")) == "250 2.0.0 OK"
        assert said(smtp.docmd("MAIL FROM:<jörg@src.test> SMTPUTF8")) == "250 2.1.0 Ok"
        assert said(smtp.docmd("RCPT TO:<jürgen@example.test>")) == "250 2.1.5 Ok"
        assert said(smtp.docmd("DATA")).startswith("354 ")
        qid = queue_id(send_data(smtp, MESSAGE))
    detail = mx_store.show(qid)
    assert detail.smtputf8
    assert detail.entry.sender == "jörg@src.test"
    assert [r.address for r in detail.entry.recipients] == ["jürgen@example.test"]


def test_queue_list_shows_accepted_messages_queued(mx: GatewayProcess) -> None:
    with client(mx) as smtp:
        first = queue_id(transaction(smtp, "<list@src.test>", ["<one@example.test>",
                                                                "<two@example.test>"]))
        second = queue_id(transaction(smtp, "<>", ["<three@example.test>"]))
    result = mx.cli("queue", "list", "--json")
    assert result.returncode == 0, result.stderr
    entries = {entry["queue_id"]: entry for entry in json.loads(result.stdout)}
    assert entries[first]["sender"] == "list@src.test"
    assert [(r["address"], r["state"]) for r in entries[first]["recipients"]] == [
        ("one@example.test", "queued"), ("two@example.test", "queued")]
    assert entries[second]["sender"] == ""
    assert [(r["address"], r["state"]) for r in entries[second]["recipients"]] == [
        ("three@example.test", "queued")]


# -- pipelining -----------------------------------------------------------------------------

def test_pipelined_commands_are_answered_in_order(mx: GatewayProcess, mx_store: Store) -> None:
    wire = Wire(mx.port)
    assert wire.reply().startswith("220 ")
    assert wire.command("EHLO client.test").startswith("250-")
    wire.send(b"MAIL FROM:<pipe@src.test>\r\nRCPT TO:<one@example.test>\r\n"
              b"RCPT TO:<two@evil.test>\r\nRCPT TO:<three@example.test>\r\nDATA\r\n")
    assert [wire.reply() for _ in range(5)] == [
        "250 2.1.0 Ok", "250 2.1.5 Ok", "550 5.7.1 Relay access denied", "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>"]
    wire.send(MESSAGE + b".\r\nQUIT\r\n")
    qid = queue_id(wire.reply())
    assert wire.reply() == "221 2.0.0 Bye"
    assert wire.at_eof()
    assert [r.address for r in mx_store.show(qid).entry.recipients] == [
        "one@example.test", "three@example.test"]


def test_transaction_pipelined_after_end_of_data(mx: GatewayProcess, mx_store: Store) -> None:
    wire = Wire(mx.port)
    assert wire.reply().startswith("220 ")
    wire.send(b"EHLO client.test\r\nMAIL FROM:<first@src.test>\r\nRCPT TO:<one@example.test>\r\n"
              b"DATA\r\n")
    assert wire.reply().startswith("250-mx.test.example\n")
    assert [wire.reply() for _ in range(3)] == ["250 2.1.0 Ok", "250 2.1.5 Ok",
                                                "354 End data with <CR><LF>.<CR><LF>"]
    wire.send(b"Subject: first\r\n\r\n1\r\n.\r\nMAIL FROM:<second@src.test>\r\n"
              b"RCPT TO:<two@example.test>\r\nDATA\r\n")
    first = queue_id(wire.reply())
    assert [wire.reply() for _ in range(3)] == ["250 2.1.0 Ok", "250 2.1.5 Ok",
                                                "354 End data with <CR><LF>.<CR><LF>"]
    wire.send(b"Subject: second\r\n\r\n2\r\n.\r\nQUIT\r\n")
    second = queue_id(wire.reply())
    assert wire.reply() == "221 2.0.0 Bye"
    assert mx_store.message_data(first).endswith(b"\r\nSubject: first\r\n\r\n1\r\n")
    assert mx_store.message_data(second).endswith(b"\r\nSubject: second\r\n\r\n2\r\n")
    assert mx_store.show(second).entry.sender == "second@src.test"


# -- syntax and sequence --------------------------------------------------------------------

@pytest.mark.parametrize(("setup", "command", "expected"), [
    ([], "EHLO", "501 5.5.4"),
    ([], "RCPT TO:<alice@example.test>", "503 5.5.1"),
    ([], "DATA", "503 5.5.1"),
    ([], "MAIL <a@src.test>", "501 5.5.4"),
    ([], "MAIL FROM:<a@>", "501 5.1.7"),
    ([], "MAIL FROM:<a@src.test> FOO=1", "555 5.5.4"),
    ([], "MAIL FROM:<a@src.test> BODY=9BIT", "501 5.5.4"),
    ([], "MAIL FROM:<a@src.test> RET=ALL", "501 5.5.4"),
    ([], "MAIL FROM:<a@src.test> ENVID=a=b", "501 5.5.4"),
    ([], "MAIL FROM:<a@src.test> SIZE=lots", "501 5.5.4"),
    (["MAIL FROM:<a@src.test>"], "MAIL FROM:<a@src.test>", "503 5.5.1"),
    (["MAIL FROM:<a@src.test>"], "RCPT TO:<b@>", "501 5.1.3"),
    (["MAIL FROM:<a@src.test>"], "RCPT TO:<>", "501 5.1.3"),
    (["MAIL FROM:<a@src.test>"], "RCPT TO:<b@example.test> FOO=1", "555 5.5.4"),
    (["MAIL FROM:<a@src.test>"], "RCPT TO:<b@example.test> NOTIFY=NEVER,DELAY", "501 5.5.4"),
    (["MAIL FROM:<a@src.test>"], "RCPT TO:<b@example.test> ORCPT=rfc822", "501 5.5.4"),
    (["MAIL FROM:<a@src.test>"], "DATA", "554 5.5.1"),
    (["MAIL FROM:<a@src.test>", "RCPT TO:<b@example.test>"], "DATA now", "501 5.5.4"),
    ([], "FROB", "500 5.5.2"),
    ([], "VRFY alice@example.test", "252 2.5.0"),
    ([], "RSET", "250 2.0.0"),
    ([], "NOOP", "250 2.0.0"),
    ([], "QUIT", "221 2.0.0"),
])
def test_command_replies(mx: GatewayProcess, setup: list[str], command: str,
                         expected: str) -> None:
    with client(mx) as smtp:
        for line in setup:
            assert said(smtp.docmd(line)).startswith("250 ")
        assert status(smtp.docmd(command)) == expected


def test_mail_before_helo_is_refused(mx: GatewayProcess) -> None:
    with client(mx, ehlo=False) as smtp:
        assert smtp.docmd("MAIL FROM:<a@src.test>")[0] == 503


def test_relay_denied(mx: GatewayProcess) -> None:
    with client(mx) as smtp:
        assert said(smtp.docmd("MAIL FROM:<a@src.test>")) == "250 2.1.0 Ok"
        assert said(smtp.docmd("RCPT TO:<bob@evil.test>")) == "550 5.7.1 Relay access denied"
        assert status(smtp.docmd("DATA")) == "554 5.5.1"


def test_swaks_relay_denied(mx: GatewayProcess) -> None:
    pairs = swaks(mx, "--from", "a@src.test", "--to", "bob@evil.test")
    assert reply_to(pairs, "RCPT TO:<bob@evil.test>") == "550 5.7.1 Relay access denied"
    assert "<data>" not in [sent for sent, _ in pairs]


# -- limits on commands and data ------------------------------------------------------------

def test_overlong_command_lines_get_500(mx: GatewayProcess) -> None:
    wire = Wire(mx.port)
    assert wire.reply().startswith("220 ")
    assert wire.command("EHLO client.test").startswith("250-")
    assert wire.command("NOOP " + "x" * 600) == "500 5.5.2 Command line too long"
    # Longer than the reader's buffer: read to its end and refused the same way.
    assert wire.command("MAIL FROM:<" + "x" * 3000 + "@src.test>") == (
        "500 5.5.2 Command line too long")
    assert wire.command("MAIL FROM:<a@src.test>") == "250 2.1.0 Ok"


def test_nul_in_a_command_gets_500(mx: GatewayProcess, mx_store: Store) -> None:
    before = mx_store.count_messages()
    wire = Wire(mx.port)
    assert wire.reply().startswith("220 ")
    assert wire.command(b"EHLO client\x00.test").startswith("500 5.5.2 ")
    assert wire.command("EHLO client.test").startswith("250-")
    assert wire.command(b"MAIL FROM:<a\x00b@src.test>").startswith("500 5.5.2 ")
    assert wire.command(b"NO\x00OP").startswith("500 5.5.2 ")
    assert wire.command("MAIL FROM:<a@src.test>") == "250 2.1.0 Ok"
    assert wire.command(b"RCPT TO:<bob@example.test\x00>").startswith("500 5.5.2 ")
    assert wire.command("DATA").startswith("554 5.5.1 ")
    assert mx_store.count_messages() == before


def test_data_line_limit_counts_crlf_but_not_a_stuffed_dot(mx: GatewayProcess,
                                                           mx_store: Store) -> None:
    longest = b"y" * 998 + b"\r\n"  # 1000 octets with its CRLF: the limit
    dotted = b"." + b"y" * 997 + b"\r\n"  # as long, sent with its transparency dot doubled
    too_long = "500 5.5.2 Message refused: line longer than 1000 octets (RFC 5321 4.5.3.1.6)"
    with client(mx) as smtp:
        qid = queue_id(transaction(smtp, "<a@src.test>", ["<lines@example.test>"],
                                   b"Subject: long\r\n\r\n" + longest + b"." + dotted))
        assert mx_store.message_data(qid).endswith(b"\r\n\r\n" + longest + dotted)
        for line in (b"y" + longest, b".." + dotted):  # 1001 octets once unstuffed
            assert transaction(smtp, "<a@src.test>", ["<lines@example.test>"],
                               b"Subject: too long\r\n\r\n" + line) == too_long
        assert said(smtp.docmd("NOOP")) == "250 2.0.0 OK"


def test_bare_lf_in_data_is_refused(mx: GatewayProcess) -> None:
    with client(mx) as smtp:
        assert transaction(smtp, "<a@src.test>", ["<bare@example.test>"],
                           b"Subject: bare\r\n\r\none\ntwo\r\n") == (
            "550 5.5.2 Message refused: bare CR or LF in data (RFC 5321 2.3.8)")
        assert said(smtp.docmd("NOOP")) == "250 2.0.0 OK"


def received_lines(count: int) -> bytes:
    return b"".join(b"Received: from hop%d.src.test by hop%d.src.test; "
                    b"Sat, 28 Nov 2026 10:00:00 +0000\r\n" % (i, i + 1) for i in range(count))


def test_received_header_limit(mx: GatewayProcess, mx_store: Store) -> None:
    with client(mx) as smtp:
        qid = queue_id(transaction(smtp, "<a@src.test>", ["<loop@example.test>"],
                                   received_lines(50) + MESSAGE))
        assert mx_store.message_data(qid).count(b"Received: ") == 51
        assert transaction(smtp, "<a@src.test>", ["<loop@example.test>"],
                           received_lines(51) + MESSAGE) == "554 5.4.6 Too many hops (mail loop?)"
        assert said(smtp.docmd("NOOP")) == "250 2.0.0 OK"


def test_declared_size_over_limit_refused_at_mail(mx: GatewayProcess,
                                                  limited: GatewayProcess) -> None:
    with client(mx) as smtp:
        assert status(smtp.docmd("MAIL FROM:<a@src.test> SIZE=26214401")) == "552 5.3.4"
        assert said(smtp.docmd("MAIL FROM:<a@src.test> SIZE=26214400")) == "250 2.1.0 Ok"
    with client(limited) as smtp:
        assert said(smtp.docmd("MAIL FROM:<a@src.test> SIZE=10241")) == (
            "552 5.3.4 Message size exceeds fixed limit of 10240 octets")
        assert said(smtp.docmd("MAIL FROM:<a@src.test> SIZE=10240")) == "250 2.1.0 Ok"


def test_oversized_data_refused_and_session_usable(limited: GatewayProcess,
                                                   limited_store: Store) -> None:
    before = limited_store.count_messages()
    big = b"Subject: big\r\n\r\n" + (b"z" * 78 + b"\r\n") * 200  # 16 KB
    with client(limited) as smtp:
        assert transaction(smtp, "<a@src.test>", ["<alice@example.test>"], big) == (
            "552 5.3.4 Message size exceeds fixed limit of 10240 octets")
        assert limited_store.count_messages() == before
        assert said(smtp.docmd("RSET")) == "250 2.0.0 OK"
        qid = queue_id(transaction(smtp, "<a@src.test>", ["<alice@example.test>"]))
    assert limited_store.message_data(qid).endswith(MESSAGE)


def test_swaks_oversized_data_refused(limited: GatewayProcess, tmp_path: Path) -> None:
    body = tmp_path / "big.txt"
    body.write_bytes((b"z" * 78 + b"\n") * 200)
    pairs = swaks(limited, "--from", "a@src.test", "--to", "alice@example.test",
                  "--body", str(body))
    assert reply_to(pairs, "<data>") == (
        "552 5.3.4 Message size exceeds fixed limit of 10240 octets")
    assert reply_to(pairs, "QUIT") == "221 2.0.0 Bye"


# -- recipients -----------------------------------------------------------------------------

def test_unknown_user_of_a_listed_domain(limited: GatewayProcess) -> None:
    with client(limited) as smtp:
        assert said(smtp.docmd("MAIL FROM:<a@src.test>")) == "250 2.1.0 Ok"
        assert said(smtp.docmd("RCPT TO:<bob@example.test>")) == (
            "550 5.1.1 Recipient address rejected: user unknown")
        assert said(smtp.docmd("RCPT TO:<Alice@example.test>")) == "250 2.1.5 Ok"


def test_swaks_unknown_user(limited: GatewayProcess) -> None:
    pairs = swaks(limited, "--from", "a@src.test", "--to", "bob@example.test")
    assert reply_to(pairs, "RCPT TO:<bob@example.test>") == (
        "550 5.1.1 Recipient address rejected: user unknown")
    assert "<data>" not in [sent for sent, _ in pairs]


def test_too_many_recipients_keeps_the_first_ones(limited: GatewayProcess,
                                                  limited_store: Store) -> None:
    with client(limited) as smtp:
        assert said(smtp.docmd("MAIL FROM:<a@src.test>")) == "250 2.1.0 Ok"
        for name in ("a", "b", "c"):
            assert said(smtp.docmd(f"RCPT TO:<{name}@open.test>")) == "250 2.1.5 Ok"
        assert said(smtp.docmd("RCPT TO:<d@open.test>")) == "452 4.5.3 Too many recipients"
        assert said(smtp.docmd("DATA")).startswith("354 ")
        qid = queue_id(send_data(smtp, MESSAGE))
    assert [r.address for r in limited_store.show(qid).entry.recipients] == [
        "a@open.test", "b@open.test", "c@open.test"]


def test_swaks_too_many_recipients(limited: GatewayProcess, limited_store: Store) -> None:
    pairs = swaks(limited, "--from", "a@src.test",
                  "--to", "e@open.test,f@open.test,g@open.test,h@open.test")
    assert reply_to(pairs, "RCPT TO:<g@open.test>") == "250 2.1.5 Ok"
    assert reply_to(pairs, "RCPT TO:<h@open.test>") == "452 4.5.3 Too many recipients"
    qid = queue_id(reply_to(pairs, "<data>"))
    assert [r.address for r in limited_store.show(qid).entry.recipients] == [
        "e@open.test", "f@open.test", "g@open.test"]


# -- sessions -------------------------------------------------------------------------------

def test_error_budget_closes_the_session(limited: GatewayProcess) -> None:
    with client(limited) as smtp:
        assert status(smtp.docmd("RCPT TO:<a@open.test>")) == "503 5.5.1"
        assert status(smtp.docmd("FROB")) == "500 5.5.2"
        assert said(smtp.docmd("MAIL FROM:<a@src.test>")) == "250 2.1.0 Ok"
        assert status(smtp.docmd("RCPT TO:<a@evil.test>")) == "550 5.7.1"
        assert said(smtp.getreply()) == "421 4.7.0 Too many errors, closing connection"
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.getreply()


def test_repeated_noop_is_capped(mx: GatewayProcess) -> None:
    wire = Wire(mx.port)
    assert wire.reply().startswith("220 ")
    assert wire.command("EHLO client.test").startswith("250-")
    wire.send(b"NOOP\r\n" * 101)
    assert [wire.reply() for _ in range(100)] == ["250 2.0.0 OK"] * 100
    assert wire.reply() == "421 4.7.0 NOOP sent too many times"
    assert wire.at_eof()


@pytest.mark.drill
def test_store_failure_is_a_temporary_452(limited: GatewayProcess,
                                          limited_store: Store) -> None:
    before = limited_store.count_messages()
    database = sqlite3.connect(limited.store_url.removeprefix("sqlite:///"), timeout=TIMEOUT)
    with client(limited) as smtp:
        database.execute("CREATE TRIGGER refuse_messages BEFORE INSERT ON messages "
                         "BEGIN SELECT RAISE(ABORT, 'drill: the store refuses writes'); END")
        database.commit()
        try:
            assert transaction(smtp, "<a@src.test>", ["<alice@example.test>"]) == (
                "452 4.3.1 Insufficient system storage, try again later")
        finally:
            database.execute("DROP TRIGGER refuse_messages")
            database.commit()
            database.close()
        assert limited_store.count_messages() == before
        queue_id(transaction(smtp, "<a@src.test>", ["<alice@example.test>"]))
    assert limited_store.count_messages() == before + 1


def test_sessions_over_the_limits_get_421(crowded: GatewayProcess) -> None:
    busy = "421 4.7.0 Too many connections, try again later"
    first, second = Wire(crowded.port), Wire(crowded.port)
    assert first.reply().startswith("220 ") and second.reply().startswith("220 ")
    third = Wire(crowded.port)
    assert third.reply() == busy  # a third session from 127.0.0.1
    assert third.at_eof()
    other = Wire(crowded.port, source="127.0.0.2")
    assert other.reply().startswith("220 ")  # another IP: the third session in total
    over = Wire(crowded.port, source="127.0.0.3")
    assert over.reply() == busy  # a fourth session in total
    assert over.at_eof()
    assert first.command("QUIT").startswith("221 ")
    assert first.at_eof()
    greeting = busy
    deadline = time.monotonic() + TIMEOUT
    while greeting == busy and time.monotonic() < deadline:
        again = Wire(crowded.port)  # the freed slot admits 127.0.0.1 once the server saw it
        greeting = again.reply()
    assert greeting.startswith("220 ")
    assert again.command("EHLO client.test").startswith("250-")
    for wire in (first, second, third, other, over, again):
        wire.close()


def test_idle_session_is_closed(sleepy: GatewayProcess) -> None:
    wire = Wire(sleepy.port)
    assert wire.reply().startswith("220 ")
    assert wire.command("EHLO client.test").startswith("250-")
    assert wire.at_eof()  # blocks until the server hangs up (TIMEOUT is the deadline)


def test_slow_honest_upload_is_not_cut(sleepy: GatewayProcess) -> None:
    wire = Wire(sleepy.port)
    assert wire.reply().startswith("220 ")
    wire.send(b"EHLO client.test\r\nMAIL FROM:<slow@src.test>\r\nRCPT TO:<slow@example.test>\r\n"
              b"DATA\r\n")
    assert wire.reply().startswith("250-")
    assert [wire.reply() for _ in range(3)][-1].startswith("354 ")
    wire.send(b"Subject: slow\r\n\r\n")
    for chunk in range(6):  # 3 s in all, three times the idle timeout, a chunk every 0.5 s
        time.sleep(0.5)
        wire.send(b"chunk %d\r\n" % chunk)
    wire.send(b".\r\n")
    queue_id(wire.reply())
    assert wire.command("QUIT") == "221 2.0.0 Bye"
