"""SMTP smuggling and STARTTLS command injection, tried over raw sockets on a real gateway.

Smuggling: a message whose data holds a fake end of data (``<LF>.<LF>`` and its cousins)
followed by a whole second transaction must get exactly one reply, a 550 5.5.2, and store
nothing; the session stays in step and takes a clean message afterwards.
STARTTLS injection (CVE-2024-34083): commands pipelined behind STARTTLS in the same packet
are discarded, not answered after the handshake.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from spoolgate.mail.queueid import is_queue_id
from spoolgate.store.store import Store, open_store
from tests.gateway_process import GatewayProcess
from tests.smtp_wire import Wire, tls_gateway

pytestmark = pytest.mark.integration

QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as (\S+)$")
REFUSED = "550 5.5.2 Message refused: bare CR or LF in data (RFC 5321 2.3.8)"
FAKE_ENDS = {"LF.LF": b"\n.\n", "LF.CRLF": b"\n.\r\n", "CR.CR": b"\r.\r", "CR.LF": b"\r.\n",
             "CRLF.LF": b"\r\n.\n", "LF.CR": b"\n.\r"}
SMUGGLED = b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nsmuggled\r\n"
CLEAN = b"From: clean@src.test\r\nSubject: clean\r\n\r\nNothing hidden here.\r\n"


def smuggling_data(fake_end: bytes) -> bytes:
    """A message hiding *fake_end* and a second transaction, ended by the real <CRLF>.<CRLF>."""
    return (b"From: a@src.test\r\nSubject: innocent\r\n\r\nHello" + fake_end + SMUGGLED
            + b"\r\n.\r\n")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway that only ever sees smuggling attempts: its store must stay empty."""
    folder = tmp_path_factory.mktemp("smuggling")
    gateway = GatewayProcess(folder, f"sqlite:///{folder / 'spoolgate.db'}")
    try:
        yield gateway.start()
    finally:
        gateway.kill()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("smuggling-tls")
    gateway = tls_gateway(folder)
    try:
        yield gateway.start()
    finally:
        gateway.kill()


@pytest.fixture(scope="module")
def plain_store(plain: GatewayProcess) -> Iterator[Store]:
    store = open_store(plain.store_url)
    yield store
    store.close()


@pytest.fixture(scope="module")
def tls_store(tls: GatewayProcess) -> Iterator[Store]:
    store = open_store(tls.store_url)
    yield store
    store.close()


def connect(gateway: GatewayProcess) -> Wire:
    wire = Wire(gateway.port)
    assert wire.reply().startswith("220 mx.test.example ")
    assert wire.command(b"EHLO client.test").startswith("250-mx.test.example\n")
    return wire


def send_in_pieces(wire: Wire, data: bytes, piece: int) -> None:
    """Send *data* in pieces of *piece* bytes, so a fake end can straddle two reads."""
    for start in range(0, len(data), piece):
        wire.send(data[start:start + piece])


def stored_texts(store: Store) -> list[bytes]:
    return [store.message_data(qid) for qid in store.queue_ids()]


@pytest.mark.parametrize("piece", [65536, 3], ids=["one-packet", "3-byte-pieces"])
@pytest.mark.parametrize("fake_end", FAKE_ENDS.values(), ids=FAKE_ENDS.keys())
def test_smuggled_transaction_gets_one_refusal_and_nothing_is_stored(
        plain: GatewayProcess, plain_store: Store, fake_end: bytes, piece: int) -> None:
    wire = connect(plain)
    wire.open_transaction(b"a@src.test", b"alice@example.test")
    send_in_pieces(wire, smuggling_data(fake_end) + b"NOOP\r\n", piece)
    assert wire.reply() == REFUSED
    # The NOOP's reply comes next: no MAIL, RCPT, DATA or 250 was answered in between.
    assert wire.reply() == "250 2.0.0 OK"
    assert plain_store.count_messages() == 0
    assert wire.command(b"QUIT") == "221 2.0.0 Bye"


@pytest.mark.parametrize("starttls", [False, True], ids=["plain", "starttls"])
@pytest.mark.parametrize("fake_end", FAKE_ENDS.values(), ids=FAKE_ENDS.keys())
def test_session_stays_in_step_after_smuggling_attempt(
        tls: GatewayProcess, tls_store: Store, fake_end: bytes, starttls: bool) -> None:
    before = set(tls_store.queue_ids())
    wire = connect(tls)
    if starttls:
        assert wire.command(b"STARTTLS").startswith("220 ")
        wire.starttls()
        assert wire.command(b"EHLO client.test").startswith("250-mx.test.example\n")
    wire.open_transaction(b"a@src.test", b"alice@example.test")
    wire.send(smuggling_data(fake_end))
    assert wire.reply() == REFUSED
    assert set(tls_store.queue_ids()) == before
    wire.open_transaction(b"clean@src.test", b"bob@example.test")
    wire.send(CLEAN + b".\r\n")
    match = QUEUED.match(wire.reply())
    assert match and is_queue_id(match.group(1))
    assert wire.command(b"QUIT") == "221 2.0.0 Bye"
    assert set(tls_store.queue_ids()) == before | {match.group(1)}
    detail = tls_store.show(match.group(1))
    assert detail.entry.sender == "clean@src.test"
    assert [r.address for r in detail.entry.recipients] == ["bob@example.test"]
    assert tls_store.message_data(match.group(1)).endswith(b"\r\n" + CLEAN)
    for text in stored_texts(tls_store):
        assert b"smuggled" not in text and b"evil@x" not in text and b"victim@" not in text


@pytest.mark.parametrize("injected", [b"RSET", b"NOOP", b"MAIL FROM:<evil@x>",
                                      b"EHLO injected.test"])
def test_command_injected_behind_starttls_is_discarded(tls: GatewayProcess,
                                                       injected: bytes) -> None:
    wire = connect(tls)
    wire.send(b"STARTTLS\r\n" + injected + b"\r\n")  # one packet
    assert wire.reply() == "220 Ready to start TLS"
    wire.starttls()
    reply = wire.command(b"EHLO client.test")
    # The first reply under TLS answers our EHLO: the injected command got none.
    assert reply.startswith("250-mx.test.example\n"), reply
    assert reply.split("\n")[-1] == "250 DSN"  # no STARTTLS offered twice
    assert wire.command(b"MAIL FROM:<a@src.test>") == "250 2.1.0 Ok"  # no MAIL was open
    assert wire.command(b"NOOP") == "250 2.0.0 OK"
