"""TOTP as the second sign-in factor (spoolgate/webmail/signin.py, auth.py, sessions.py),
``spoolgate user totp`` and its functions in users.py, on a real SQLite store."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from starlette.testclient import TestClient

from spoolgate.cli import main
from spoolgate.store.accounts import Accounts
from spoolgate.store.store import Store
from spoolgate.webmail.app import WebmailSettings
from spoolgate.webmail.signin import WRONG_CODE
from spoolgate.webmail.users import UserError, disable_totp, enable_totp
from tests.unit.webmail.conftest import DOMAINS, Clock, csrf_of, sign_in
from tests.webmail_mail import deliver, text_message

ALICE = "alice@example.test"


@pytest.fixture
def settings() -> WebmailSettings:
    return WebmailSettings(hostname="mail.example.test", domains=DOMAINS,
                           account_lock_after=4, throttle_free_failures=10)


@pytest.fixture
def totp(store: Store) -> pyotp.TOTP:
    return pyotp.TOTP(enable_totp(store, ALICE).secret)


def _cookie(client: TestClient) -> str:
    return client.cookies["spoolgate"]


def _send_code(client: TestClient, code: str, csrf: str | None = None):
    if csrf is None:
        csrf = csrf_of(client.get("/login/totp").text)
    return client.post("/login/totp", data={"code": code, "csrf": csrf, "next": "/inbox"})


def test_the_code_completes_sign_in_under_a_new_session_id(client: TestClient, clock: Clock,
                                                           totp: pyotp.TOTP) -> None:
    after_password = sign_in(client)
    assert after_password.status_code == 303
    assert after_password.headers["location"] == "/login/totp?next=/inbox"
    pending_cookie = _cookie(client)
    form = client.get("/login/totp")
    assert form.status_code == 200
    assert 'autocomplete="one-time-code"' in form.text and 'inputmode="numeric"' in form.text
    assert '<label for="code">' in form.text and 'id="code"' in form.text
    assert ALICE not in form.text  # no mailbox header before the second factor

    done = _send_code(client, totp.at(clock.now))
    assert done.status_code == 303 and done.headers["location"] == "/inbox"
    assert _cookie(client) != pending_cookie
    assert client.get("/inbox").status_code == 200
    assert client.get("/login/totp").headers["location"] == "/inbox"
    client.cookies.set("spoolgate", pending_cookie)
    assert client.get("/inbox").status_code == 303  # the pending ID is gone


def test_a_pending_session_reaches_no_other_page(client: TestClient, store: Store) -> None:
    enable_totp(store, ALICE)
    queue_id = deliver(store, text_message(ALICE), ALICE)
    sign_in(client)
    csrf = csrf_of(client.get("/login/totp").text)
    for path in ("/inbox", "/quarantine", "/trash", "/sent", "/compose", "/search?q=x",
                 f"/m/{queue_id}", f"/m/{queue_id}/source", f"/m/{queue_id}/part/1"):
        response = client.get(path)
        assert response.status_code == 303, path
        assert urlsplit(response.headers["location"]).path == "/login", path
    for path in (f"/m/{queue_id}/delete", "/trash/empty", "/compose"):
        refused = client.post(path, data={"csrf": csrf, "to": "bob@example.test"})
        assert refused.status_code == 403, path  # the pending session's token is no token
    assert store.show(queue_id).entry.recipients[0].state == "queued"
    assert client.get("/login").status_code == 200  # the sign-in form, not the inbox


def test_a_used_code_is_refused_even_within_its_window(client: TestClient, clock: Clock,
                                                       totp: pyotp.TOTP) -> None:
    code = totp.at(clock.now)
    sign_in(client)
    assert _send_code(client, code).status_code == 303
    client.post("/logout", data={"csrf": csrf_of(client.get("/inbox").text)})
    sign_in(client)
    replay = _send_code(client, code)
    assert replay.status_code == 401 and WRONG_CODE in replay.text
    clock.now += 30
    assert _send_code(client, code).status_code == 401  # one step back: in the window, used
    assert _send_code(client, totp.at(clock.now)).status_code == 303


def test_a_code_a_step_away_is_accepted_two_away_is_not(client: TestClient, clock: Clock,
                                                         totp: pyotp.TOTP) -> None:
    sign_in(client)
    far = totp.at(clock.now - 60)
    if far != totp.at(clock.now) and far != totp.at(clock.now - 30):
        assert _send_code(client, far).status_code == 401
    assert _send_code(client, totp.at(clock.now - 30)).status_code == 303


def test_wrong_codes_count_in_the_password_throttle(client: TestClient, clock: Clock,
                                                    totp: pyotp.TOTP, store: Store) -> None:
    right = totp.at(clock.now)
    wrong = "000000" if right != "000000" else "111111"
    sign_in(client)
    csrf = csrf_of(client.get("/login/totp").text)
    for _ in range(3):
        assert _send_code(client, wrong, csrf).status_code == 401
        sign_in(client)  # a right password does not clear the account's failures
        csrf = csrf_of(client.get("/login/totp").text)
    assert WRONG_CODE in _send_code(client, wrong, csrf).text  # the 4th: now locked
    assert "locked until" in _send_code(client, right, csrf).text  # not even checked
    failures = Accounts(store).throttles([f"account:{ALICE}"])[f"account:{ALICE}"]
    assert failures.failures == 4 and failures.locked_until is not None
    assert "locked until" in sign_in(client).text


def test_the_code_form_needs_its_csrf_token(client: TestClient, clock: Clock,
                                            totp: pyotp.TOTP) -> None:
    sign_in(client)
    refused = client.post("/login/totp", data={"code": totp.at(clock.now), "csrf": "forged"})
    assert refused.status_code == 403
    assert client.get("/inbox").status_code == 303


def test_a_pending_session_expires_after_a_few_minutes(client: TestClient, clock: Clock,
                                                       totp: pyotp.TOTP) -> None:
    sign_in(client)
    csrf = csrf_of(client.get("/login/totp").text)
    clock.now += 5 * 60 + 1
    late = _send_code(client, totp.at(clock.now), csrf)
    assert late.status_code == 403  # its CSRF token went with it
    assert client.get("/login/totp").headers["location"] == "/login"


def test_sign_out_from_the_code_form(client: TestClient, totp: pyotp.TOTP) -> None:
    sign_in(client)
    csrf = csrf_of(client.get("/login/totp").text)
    out = client.post("/logout", data={"csrf": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert client.get("/login/totp").headers["location"] == "/login"


def test_without_totp_the_password_alone_signs_in(client: TestClient, store: Store) -> None:
    enable_totp(store, ALICE)
    disable_totp(store, ALICE)
    assert sign_in(client).headers["location"] == "/inbox"
    with pytest.raises(UserError, match="has no account"):
        enable_totp(store, "nobody@example.test")


def test_enrolling_ends_the_users_sessions(alice: TestClient, store: Store) -> None:
    assert alice.get("/inbox").status_code == 200
    enable_totp(store, ALICE)
    assert alice.get("/inbox").status_code == 303


def test_the_cli_prints_an_otpauth_uri_and_the_secret(tmp_path: Path, sqlite_url: str,
                                                      store: Store, capsys) -> None:
    config = tmp_path / "spoolgate.toml"
    config.write_text(f'[store]\nurl = "{sqlite_url}"\n\n[[domains]]\nname = "example.test"\n'
                      'route = "smtp://127.0.0.1:2526"\n')
    assert main(["user", "totp", "Alice@example.test", "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    uri = next(word for word in printed.split() if word.startswith("otpauth://"))
    parsed = pyotp.parse_uri(uri)
    query = parse_qs(urlsplit(uri).query)
    assert query["issuer"] == ["Spoolgate"] and parsed.name == ALICE
    assert parsed.secret in printed.split()
    assert Accounts(store).get_user(ALICE).totp_secret == parsed.secret

    assert main(["user", "totp", "nobody@example.test", "--config", str(config)]) == 1
    assert "nobody@example.test has no account" in capsys.readouterr().err
    assert main(["user", "totp", ALICE, "--disable", "--config", str(config)]) == 0
    assert Accounts(store).get_user(ALICE).totp_secret is None
