"""Webmail sign-in verified by the company's IMAP server (spoolgate/webmail/auth.py and
imap_check.py) against real Dovecot: the server decides while it answers, the stored
verifier while it does not, and a password never goes out without TLS unless configured."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from starlette.testclient import TestClient

from spoolgate.config import ImapSettings, load_settings
from spoolgate.store.accounts import Accounts
from spoolgate.store.store import Store, open_store
from spoolgate.webmail.app import WebmailSettings, create_app
from spoolgate.webmail.imap_check import ImapVerdict, check_password
from spoolgate.webmail.server import webmail_settings
from spoolgate.webmail.users import add_user
from tests.downstream import PASSWORD, DovecotLmtp, closed_port, make_tls_files, wait_until
from tests.gateway_process import free_port
from tests.unit.webmail.conftest import csrf_of

pytestmark = pytest.mark.integration

ALICE = "alice@example.test"
HASHER = PasswordHasher.from_parameters(CHEAPEST)
LOCAL_PASSWORD = "only the local hash knows this"


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    opened = open_store(sqlite_url)
    yield opened
    opened.close()


@pytest.fixture
def dovecot(folder: Path) -> Iterator[DovecotLmtp]:
    tls = make_tls_files(_folder(folder / "tls"))
    with DovecotLmtp(folder / "dovecot", free_port(), imap_port=free_port(), tls=tls) as server:
        yield server


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _settings(folder: Path, imap_lines: str, recipients: str = "") -> WebmailSettings:
    """The webmail settings as the gateway builds them from a configuration file."""
    config = folder / "spoolgate.toml"
    config.write_text(f'[[domains]]\nname = "example.test"\nroute = "smtp://127.0.0.1:2526"\n'
                      f"{recipients}{imap_lines}")
    return webmail_settings(load_settings(config))


@pytest.fixture
def starttls_settings(folder: Path, dovecot: DovecotLmtp) -> WebmailSettings:
    return _settings(folder, f'imap = "imap://127.0.0.1:{dovecot.imap_port}"\n'
                             f'imap_tls_ca = "{folder / "tls" / "ca.pem"}"\n')


@pytest.fixture
def make_client(store: Store) -> Iterator[Callable[[WebmailSettings], TestClient]]:
    made: list[TestClient] = []

    def make(settings: WebmailSettings) -> TestClient:
        made.append(TestClient(create_app(store, settings, hasher=HASHER),
                               follow_redirects=False))
        return made[-1]

    yield make
    for client in made:
        client.close()


def _sign_in(client: TestClient, password: str, email: str = ALICE):
    client.cookies.clear()
    page = client.get("/login")
    return client.post("/login", data={"email": email, "password": password,
                                       "csrf": csrf_of(page.text), "next": "/inbox"})


def _failures(store: Store, email: str = ALICE) -> int:
    throttle = Accounts(store).throttles([f"account:{email}"]).get(f"account:{email}")
    return 0 if throttle is None else throttle.failures


def _set_dovecot_password(dovecot: DovecotLmtp, user: str, password: str) -> None:
    """Change *user*'s password in Dovecot's passwd-file (re-read when it changes)."""
    users = dovecot.folder / "users"
    lines = [line.replace(f":{{PLAIN}}{PASSWORD}:", f":{{PLAIN}}{password}:")
             if line.startswith(f"{user}:") else line
             for line in users.read_text().splitlines()]
    fresh = users.with_suffix(".new")
    fresh.write_text("\n".join(lines) + "\n")
    os.replace(fresh, users)


def test_imap_accepts_then_the_verifier_carries_an_outage(
        store: Store, dovecot: DovecotLmtp, starttls_settings: WebmailSettings,
        make_client) -> None:
    client = make_client(starttls_settings)
    assert Accounts(store).get_user(ALICE) is None
    before = time.time()
    signed_in = _sign_in(client, PASSWORD)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/inbox"
    assert client.get("/inbox").status_code == 200
    user = Accounts(store).get_user(ALICE)
    assert user is not None and user.imap_verified_at is not None
    assert user.imap_verified_at >= before
    assert user.password_hash.startswith("$argon2id$") and HASHER.verify(user.password_hash,
                                                                          PASSWORD)
    assert "Login: user=<alice@example.test>" in dovecot.log_text()
    assert "TLS" in dovecot.log_text()  # STARTTLS was used, as imap:// requires

    dovecot.stop()
    assert _sign_in(client, PASSWORD).status_code == 303
    assert client.get("/inbox").status_code == 200
    assert _sign_in(client, "not the password").status_code == 401
    assert _failures(store) == 1


def test_a_password_changed_on_the_imap_server_replaces_the_old_one(
        store: Store, dovecot: DovecotLmtp, starttls_settings: WebmailSettings,
        make_client) -> None:
    client = make_client(starttls_settings)
    assert _sign_in(client, PASSWORD).status_code == 303
    other = make_client(starttls_settings)
    assert _sign_in(other, PASSWORD).status_code == 303
    new = "nouveau mot de passe é"  # not ASCII: goes as AUTHENTICATE PLAIN
    _set_dovecot_password(dovecot, ALICE, new)
    server = starttls_settings.imap["example.test"]
    wait_until(lambda: check_password(server, ALICE, PASSWORD) is ImapVerdict.REJECTED,
               10, "Dovecot reads its new passwd-file (it looks at most once a second)")

    refused = _sign_in(client, PASSWORD)  # the local verifier still has it: not asked
    assert refused.status_code == 401 and "not right" in refused.text
    assert _sign_in(client, new).status_code == 303
    assert HASHER.verify(Accounts(store).get_user(ALICE).password_hash, new)
    assert other.get("/inbox").status_code == 303  # the old password's sessions ended

    dovecot.stop()
    assert _sign_in(client, PASSWORD).status_code == 401
    assert _sign_in(client, new).status_code == 303


def test_imap_rejects_without_falling_back_and_the_failure_counts(
        store: Store, dovecot: DovecotLmtp, starttls_settings: WebmailSettings,
        make_client) -> None:
    add_user(store, ALICE, LOCAL_PASSWORD, domains=["example.test"], hasher=HASHER)
    client = make_client(starttls_settings)
    refused = _sign_in(client, LOCAL_PASSWORD)
    assert refused.status_code == 401 and "not right" in refused.text
    assert _failures(store) == 1
    assert Accounts(store).get_user(ALICE).imap_verified_at is None
    assert "(auth failed, 1 attempts" in dovecot.log_text()  # Dovecot was asked and said no

    assert _sign_in(client, PASSWORD, email="nobody@example.test").status_code == 401
    assert Accounts(store).get_user("nobody@example.test") is None
    assert _failures(store, "nobody@example.test") == 1


def test_a_local_part_the_domain_does_not_accept_gets_no_account(
        folder: Path, store: Store, dovecot: DovecotLmtp, make_client) -> None:
    settings = _settings(folder, f'imap = "imap://127.0.0.1:{dovecot.imap_port}"\n'
                                 f'imap_tls_ca = "{folder / "tls" / "ca.pem"}"\n',
                         recipients='recipients = ["bob"]\n')
    client = make_client(settings)
    assert _sign_in(client, PASSWORD).status_code == 401  # Dovecot knows alice; we do not
    assert Accounts(store).get_user(ALICE) is None
    assert _sign_in(client, PASSWORD, email="bob@example.test").status_code == 303


def test_tls_failures_never_send_the_password_and_fall_back(
        folder: Path, store: Store, make_client) -> None:
    # Dovecot without TLS here (ssl = no): imap:// must find no STARTTLS and imaps:// no
    # TLS at all; either way the local verifier decides and Dovecot never sees a login.
    plain = DovecotLmtp(folder / "plain", free_port(), imap_port=free_port())
    add_user(store, ALICE, LOCAL_PASSWORD, domains=["example.test"], hasher=HASHER)
    with plain:
        for line in (f'imap = "imap://127.0.0.1:{plain.imap_port}"\n',
                     f'imap = "imaps://127.0.0.1:{plain.imap_port}"\n'):
            client = make_client(_settings(folder, line))
            assert _sign_in(client, LOCAL_PASSWORD).status_code == 303, line
            assert _sign_in(client, PASSWORD).status_code == 401, line
        assert "auth failed" not in plain.log_text() and "Login:" not in plain.log_text()
        assert "no auth attempts" in plain.log_text()  # we did connect, and said nothing
    assert Accounts(store).get_user(ALICE).imap_verified_at is None


def test_a_certificate_from_another_ca_is_a_tls_failure(folder: Path,
                                                        dovecot: DovecotLmtp) -> None:
    other_ca = make_tls_files(_folder(folder / "other")).ca_file
    server = ImapSettings("127.0.0.1", dovecot.imap_port or 0, "starttls", other_ca)
    assert check_password(server, ALICE, PASSWORD) is ImapVerdict.UNAVAILABLE
    trusted = dataclasses.replace(server, tls_ca=folder / "tls" / "ca.pem")
    assert check_password(trusted, ALICE, PASSWORD) is ImapVerdict.ACCEPTED
    assert check_password(trusted, ALICE, "wrong") is ImapVerdict.REJECTED
    assert check_password(trusted, ALICE, PASSWORD + "\r\nA2 LOGOUT") is ImapVerdict.REJECTED


def test_no_answer_means_the_local_verifier_decides(folder: Path, store: Store,
                                                    make_client) -> None:
    add_user(store, ALICE, LOCAL_PASSWORD, domains=["example.test"], hasher=HASHER)
    refused = ImapSettings("127.0.0.1", closed_port(), "none")
    assert check_password(refused, ALICE, PASSWORD) is ImapVerdict.UNAVAILABLE
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never greets
        server = ImapSettings("127.0.0.1", silent.getsockname()[1], "implicit")
        settings = WebmailSettings(hostname="mail.example.test", imap={"example.test": server},
                                   imap_timeout=0.5)
        client = make_client(settings)
        started = time.monotonic()
        assert _sign_in(client, LOCAL_PASSWORD).status_code == 303
        assert time.monotonic() - started < 10  # a hang detector, not a benchmark


def test_a_server_that_greets_but_never_answers_the_password_refuses_it(
        store: Store, make_client) -> None:
    # A fake: no real IMAP server here can be made to hang after LOGIN on demand. It greets
    # like one over a real socket and then reads without answering.
    add_user(store, ALICE, LOCAL_PASSWORD, domains=["example.test"], hasher=HASHER)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        stop = threading.Event()

        def greet_then_hang() -> None:
            connection, _ = listener.accept()
            with connection, connection.makefile("rb") as lines:
                connection.sendall(b"* OK ready\r\n")
                tag, command = lines.readline().split()[:2]
                assert command.upper() == b"CAPABILITY"
                connection.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
                lines.readline()  # LOGIN: never answered
                stop.wait(30)

        thread = threading.Thread(target=greet_then_hang, daemon=True)
        thread.start()
        server = ImapSettings("127.0.0.1", listener.getsockname()[1], "none")
        settings = WebmailSettings(hostname="mail.example.test", imap={"example.test": server},
                                   imap_timeout=0.2)
        refused = _sign_in(make_client(settings), LOCAL_PASSWORD)
        stop.set()
        thread.join(10)
    assert refused.status_code == 401  # the server is up: the old local hash does not decide
    assert _failures(store) == 1
