"""No open relay, whatever the client: RCPT TO forms that try to get mail routed onwards.

One gateway accepts mail for example.test (any local part). Every recipient form of the
matrix is tried in its own session, with smtplib and, for a part of it, with swaks; the
exact reply code and enhanced status are asserted, an accepted form is followed by DATA
and the stored recipient is checked. The last test checks that the store holds exactly
the messages whose DATA got 250 in this module, addressed only to example.test.
"""

from __future__ import annotations

import json
import re
import smtplib
import ssl
import subprocess
from collections.abc import Iterator

import pytest

from spoolgate.mail.queueid import is_queue_id
from spoolgate.store.store import Store, open_store
from tests.gateway_process import GatewayProcess
from tests.smtp_wire import tls_gateway

pytestmark = pytest.mark.integration

TIMEOUT = 10.0
QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as (\S+)$")
MESSAGE = b"From: a@src.test\r\nSubject: relay matrix\r\n\r\nHello.\r\n"
DENIED, UNKNOWN_SYNTAX, ACCEPTED = "550 5.7.1", "501 5.1.3", "250 2.1.5"


@pytest.fixture(scope="module")
def mx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("relay")
    gateway = tls_gateway(folder)
    try:
        yield gateway.start()
    finally:
        gateway.kill()


@pytest.fixture(scope="module")
def store(mx: GatewayProcess) -> Iterator[Store]:
    store = open_store(mx.store_url)
    yield store
    store.close()


@pytest.fixture(scope="module")
def accepted() -> dict[str, str]:
    """Queue ID -> recipient of every message whose DATA got 250 in this module."""
    return {}


def insecure_context() -> ssl.SSLContext:
    """A client context that takes the test's self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def status(reply: tuple[int, bytes]) -> str:
    code, text = reply
    return f"{code} {text.decode('utf-8', 'replace').split()[0]}"


def queue_id(reply: str) -> str:
    match = QUEUED.match(reply)
    assert match and is_queue_id(match.group(1)), reply
    return match.group(1)


def finish(smtp: smtplib.SMTP, accepted_rcpt: bool, ledger: dict[str, str], address: str) -> None:
    """DATA after one RCPT: stored when the RCPT was accepted, 554 5.5.1 when it was not."""
    if not accepted_rcpt:
        assert status(smtp.docmd("DATA")) == "554 5.5.1"
        return
    assert smtp.docmd("DATA")[0] == 354
    smtp.send(MESSAGE + b".\r\n")
    code, text = smtp.getreply()
    ledger[queue_id(f"{code} {text.decode()}")] = address


# (RCPT TO argument, status, address stored when accepted)
MATRIX = [
    # Foreign domains and lookalikes of ours.
    ("<user@evil.test>", DENIED, None),
    ("<user@example.test.evil>", DENIED, None),
    ("<user@example.test.evil.test>", DENIED, None),
    ("<user@evil-example.test>", DENIED, None),
    ("<user@sub.example.test>", DENIED, None),
    ("<user@example.tes>", DENIED, None),
    ("<user@xn--exmple-cua.test>", DENIED, None),
    ("<user@EXAMPLE.TEST.>", UNKNOWN_SYNTAX, None),
    ("<user@example.test.>", UNKNOWN_SYNTAX, None),
    ("<user@example..test>", UNKNOWN_SYNTAX, None),
    ("<user@example.test:25>", UNKNOWN_SYNTAX, None),
    ("<user@EXAMPLE.TEST>", ACCEPTED, "user@example.test"),
    ("<User@Example.Test>", ACCEPTED, "User@example.test"),
    # More than one @.
    ("<user@example.test@evil.test>", UNKNOWN_SYNTAX, None),
    ("<user@evil.test@example.test>", UNKNOWN_SYNTAX, None),
    ("<@example.test@evil.test>", UNKNOWN_SYNTAX, None),
    ("<user@@example.test>", UNKNOWN_SYNTAX, None),
    # Source routes: the route is dropped (RFC 5321 4.1.2), the mailbox decides.
    ("<@example.test:user@evil.test>", DENIED, None),
    ("<@example.test,@mx.example.test:user@evil.test>", DENIED, None),
    ("<@evil.test:user@example.test>", ACCEPTED, "user@example.test"),
    ("<@evil.test,@relay.evil.test:user@example.test>", ACCEPTED, "user@example.test"),
    ("<@example.test,user@evil.test>", UNKNOWN_SYNTAX, None),
    ("<@:user@example.test>", UNKNOWN_SYNTAX, None),
    # Percent hack and bang paths ask the next server to route further.
    ("<user%evil.test@example.test>", DENIED, None),
    ("<user%evil.test%example.test@example.test>", DENIED, None),
    ("<user%example.test@example.test>", DENIED, None),
    ("<evil.test!user@example.test>", DENIED, None),
    ("<example.test!evil.test!user@example.test>", DENIED, None),
    # Quoted local parts.
    ('<"user@evil.test"@example.test>', DENIED, None),
    ('<"user\\@evil.test"@example.test>', DENIED, None),
    ('<"user%evil.test"@example.test>', DENIED, None),
    ('<"evil.test!user"@example.test>', DENIED, None),
    ('<"user"@evil.test>', DENIED, None),
    ('<"john doe"@example.test>', ACCEPTED, '"john doe"@example.test'),
    ('<"john"@example.test>', ACCEPTED, "john@example.test"),
    # Address literals, bracketed or not.
    ("<user@[127.0.0.1]>", DENIED, None),
    ("<user@[IPv6:::1]>", DENIED, None),
    ("<user@[example.test]>", DENIED, None),
    ("<user@127.0.0.1>", DENIED, None),
    # Without angle brackets, with parameters, malformed brackets.
    ("user@evil.test", DENIED, None),
    ("user%evil.test@example.test", DENIED, None),
    ("user@evil.test NOTIFY=NEVER", DENIED, None),
    ("<user@evil.test> NOTIFY=NEVER", DENIED, None),
    ("user@example.test", ACCEPTED, "user@example.test"),
    ("@evil.test:user@example.test", ACCEPTED, "user@example.test"),
    ("<user@evil.test", UNKNOWN_SYNTAX, None),
    ("<user@evil.test>junk", UNKNOWN_SYNTAX, None),
    ("<user@evil.test >", UNKNOWN_SYNTAX, None),
    ("< user@example.test>", UNKNOWN_SYNTAX, None),
    ("<user>", UNKNOWN_SYNTAX, None),
]


@pytest.mark.parametrize(("rcpt", "expected", "stored"), MATRIX, ids=[m[0] for m in MATRIX])
def test_recipient_form(mx: GatewayProcess, accepted: dict[str, str], rcpt: str, expected: str,
                        stored: str | None) -> None:
    with smtplib.SMTP("127.0.0.1", mx.port, local_hostname="client.test",
                      timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        assert smtp.docmd("MAIL FROM:<a@src.test>") == (250, b"2.1.0 Ok")
        assert status(smtp.docmd(f"RCPT TO:{rcpt}")) == expected
        finish(smtp, expected == ACCEPTED, accepted, stored)


# Internationalised domains: a lookalike of ours is another domain; without SMTPUTF8 a
# non-ASCII domain is a syntax error, never a route.
@pytest.mark.parametrize(("mail", "rcpt", "expected"), [
    ("MAIL FROM:<a@src.test> SMTPUTF8", "<user@exаmple.test>", DENIED),  # Cyrillic а
    ("MAIL FROM:<a@src.test> SMTPUTF8", "<user@example.tеst>", DENIED),  # Cyrillic е
    ("MAIL FROM:<a@src.test>", "<user@exаmple.test>", UNKNOWN_SYNTAX),
    ("MAIL FROM:<a@src.test> SMTPUTF8", "<ü%evil.test@example.test>", DENIED),
])
def test_internationalised_recipient(mx: GatewayProcess, mail: str, rcpt: str,
                                     expected: str) -> None:
    with smtplib.SMTP("127.0.0.1", mx.port, local_hostname="client.test",
                      timeout=TIMEOUT) as smtp:
        smtp.command_encoding = "utf-8"
        smtp.ehlo()
        assert smtp.docmd(mail) == (250, b"2.1.0 Ok")
        assert status(smtp.docmd(f"RCPT TO:{rcpt}")) == expected
        assert status(smtp.docmd("DATA")) == "554 5.5.1"


FOREIGN = ["<user@evil.test>", "<user%evil.test@example.test>", "<user@[127.0.0.1]>",
           "<@example.test:user@evil.test>"]
CLIENTS = {
    # name: (source address, greeting, sender, STARTTLS first)
    "ehlo": ("127.0.0.1", "EHLO client.test", "<a@src.test>", False),
    "helo": ("127.0.0.1", "HELO client.test", "<a@src.test>", False),
    "claims-to-be-us": ("127.0.0.1", "EHLO mx.test.example", "<a@src.test>", False),
    "localhost": ("127.0.0.1", "EHLO localhost", "<root@localhost>", False),
    "other-ip": ("127.0.0.9", "EHLO client.test", "<a@src.test>", False),
    "local-sender": ("127.0.0.1", "EHLO client.test", "<postmaster@example.test>", False),
    "null-sender": ("127.0.0.1", "EHLO client.test", "<>", False),
    "tls": ("127.0.0.1", "EHLO client.test", "<a@src.test>", True),
}


@pytest.mark.parametrize("name", CLIENTS)
def test_no_client_may_relay(mx: GatewayProcess, accepted: dict[str, str], name: str) -> None:
    source, greeting, sender, tls = CLIENTS[name]
    with smtplib.SMTP("127.0.0.1", mx.port, local_hostname="client.test", timeout=TIMEOUT,
                      source_address=(source, 0)) as smtp:
        if tls:
            smtp.ehlo()
            smtp.starttls(context=insecure_context())
        assert smtp.docmd(greeting)[0] == 250
        assert smtp.docmd(f"MAIL FROM:{sender}")[0] == 250
        for rcpt in FOREIGN:
            assert status(smtp.docmd(f"RCPT TO:{rcpt}")) == DENIED, rcpt
        # The same client may send to us, and only that recipient is stored.
        assert smtp.docmd("RCPT TO:<postmaster@example.test>")[0] == 250
        finish(smtp, True, accepted, "postmaster@example.test")


# (swaks --to, status, address stored when accepted)
SWAKS_MATRIX = [
    ("user@evil.test", DENIED, None),
    ("user@sub.example.test", DENIED, None),
    ("user@example.test.evil", DENIED, None),
    ("user%evil.test@example.test", DENIED, None),
    ("evil.test!user@example.test", DENIED, None),
    ("user@[127.0.0.1]", DENIED, None),
    ("@example.test:user@evil.test", DENIED, None),
    ("@evil.test:user@example.test", ACCEPTED, "user@example.test"),
    ("user@EXAMPLE.TEST", ACCEPTED, "user@example.test"),
]


@pytest.mark.parametrize(("to", "expected", "stored"), SWAKS_MATRIX,
                         ids=[m[0] for m in SWAKS_MATRIX])
def test_swaks_recipient_form(mx: GatewayProcess, accepted: dict[str, str], to: str,
                              expected: str, stored: str | None) -> None:
    result = subprocess.run(["swaks", "--server", f"127.0.0.1:{mx.port}", "--helo", "client.test",
                             "--from", "a@src.test", "--to", to],
                            capture_output=True, text=True, timeout=60)
    replies = [line[4:] for line in result.stdout.splitlines()
               if line[:4] in ("<-  ", "<** ") and line[7:8] != "-"]
    sent = [line[4:] for line in result.stdout.splitlines() if line.startswith(" -> ")]
    assert f"RCPT TO:<{to}>" in sent, result.stdout
    # greeting, EHLO, MAIL, RCPT: the fourth reply answers the RCPT.
    assert " ".join(replies[3].split()[:2]) == expected, result.stdout
    if expected == ACCEPTED:
        accepted[queue_id(replies[5])] = stored
    else:
        assert "DATA" not in sent
        assert replies[4:] == ["221 2.0.0 Bye"]


def test_store_holds_exactly_the_accepted_messages(store: Store,
                                                   accepted: dict[str, str]) -> None:
    assert store.count_messages() == len(accepted)
    assert sorted(store.queue_ids()) == sorted(accepted)
    for entry in store.list_queue():
        assert [r.address for r in entry.recipients] == [accepted[entry.queue_id]]
        assert entry.recipients[0].address.endswith("@example.test")


def test_a_bare_postmaster_is_accepted_and_stored_for_the_first_domain(gateway) -> None:
    # RFC 5321 4.5.1: "RCPT TO:<postmaster>" without a domain must be accepted.
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=10) as smtp:
        smtp.ehlo("client.test")
        assert smtp.docmd("MAIL FROM:<someone@remote.test>")[0] == 250
        assert smtp.docmd("RCPT TO:<Postmaster>")[0] == 250
        code, _ = smtp.data(b"Subject: hello postmaster\r\n\r\nhi\r\n")
        assert code == 250
    (entry,) = json.loads(gateway.cli("queue", "list", "--json").stdout)
    assert [r["address"] for r in entry["recipients"]] == ["postmaster@example.test"]
