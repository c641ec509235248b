"""Signing in to the webmail in real headless Chromium: a wrong password, the lockout, a
TOTP second factor (a code from pyotp, a replayed code refused), session expiry and
sign-out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyotp
import pytest
import uvicorn
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from playwright.sync_api import Page, expect

from spoolgate.store.store import Store, open_store
from spoolgate.webmail.app import WebmailSettings, create_app
from spoolgate.webmail.users import add_user, enable_totp
from tests.gateway_process import free_port
from tests.webmail_mail import deliver, text_message

pytestmark = pytest.mark.integration

ALICE = "alice@example.test"
PASSWORD = "correct horse battery"
HASHER = PasswordHasher.from_parameters(CHEAPEST)


class Clock:
    """The real time plus an offset the test may move (to pass an idle timeout at once)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    opened = open_store(sqlite_url)
    add_user(opened, ALICE, PASSWORD, domains=["example.test"], hasher=HASHER)
    deliver(opened, text_message(ALICE, subject="Lunch on Friday?"), ALICE)
    yield opened
    opened.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def serve(store: Store, clock: Clock) -> Iterator[Callable[..., str]]:
    """``serve(**settings)``: the webmail under uvicorn in a thread; its base URL."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**options: object) -> str:
        settings = WebmailSettings(hostname="mail.example.test",
                                   domains={"example.test": "smtp://127.0.0.1:2526"},
                                   **options)  # type: ignore[arg-type]
        app = create_app(store, settings, clock=clock, hasher=HASHER)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


def _sign_in(page: Page, base_url: str, password: str = PASSWORD) -> None:
    page.goto(f"{base_url}/login")
    page.get_by_label("Email address").fill(ALICE)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_a_wrong_password_then_the_lockout(page: Page, serve) -> None:
    base_url = serve(account_lock_after=3, throttle_free_failures=5)
    _sign_in(page, base_url, password="wrong password")
    expect(page.get_by_role("alert")).to_have_text("The address or the password is not right.")
    expect(page.get_by_label("Email address")).to_have_value(ALICE)
    for _ in range(2):
        _sign_in(page, base_url, password="wrong password")
    _sign_in(page, base_url)  # the right password, but the account is locked now
    expect(page.get_by_role("alert")).to_contain_text(
        "Too many failed sign-ins. Sign-in is locked until")
    expect(page.get_by_role("heading", name="Sign in to your mail")).to_be_visible()


def test_totp_sign_in_a_replayed_code_and_sign_out(page: Page, serve, store: Store,
                                                   tmp_path: Path) -> None:
    totp = pyotp.TOTP(enable_totp(store, ALICE).secret)
    base_url = serve()
    _sign_in(page, base_url)
    expect(page).to_have_url(f"{base_url}/login/totp?next=/inbox")
    code_box = page.get_by_label("6-digit code")
    expect(code_box).to_have_attribute("autocomplete", "one-time-code")
    expect(code_box).to_have_attribute("inputmode", "numeric")
    expect(code_box).to_be_focused()
    page.screenshot(path=str(tmp_path / "totp.png"), full_page=True)

    page.goto(f"{base_url}/inbox")  # the password alone opens no mail page
    expect(page.get_by_role("heading", name="Sign in to your mail")).to_be_visible()
    _sign_in(page, base_url)
    code = totp.now()
    page.get_by_label("6-digit code").fill(code)
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    expect(page.get_by_role("link", name="Lunch on Friday?")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to your mail")).to_be_visible()
    page.goto(f"{base_url}/inbox")
    expect(page.get_by_role("heading", name="Sign in to your mail")).to_be_visible()

    _sign_in(page, base_url)
    page.get_by_label("6-digit code").fill(code)
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_contain_text("already used")
    expect(page.get_by_label("6-digit code")).to_have_attribute(
        "aria-describedby", "code-help code-error")
    page.get_by_label("6-digit code").fill(totp.at(time.time() + 30))  # the next step
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()


def test_cancel_on_the_code_page_signs_out(page: Page, serve, store: Store) -> None:
    enable_totp(store, ALICE)
    base_url = serve()
    _sign_in(page, base_url)
    page.get_by_role("button", name="Cancel and sign out").click()
    expect(page).to_have_url(f"{base_url}/login")
    page.goto(f"{base_url}/login/totp")
    expect(page).to_have_url(f"{base_url}/login")


def test_an_idle_session_ends_and_the_next_click_signs_in_again(page: Page, serve,
                                                                clock: Clock) -> None:
    base_url = serve(session_idle=2.0)
    _sign_in(page, base_url)
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    clock.offset += 3  # idle for longer than session_idle, without waiting for it
    page.get_by_role("link", name="Trash").click()
    expect(page.get_by_role("heading", name="Sign in to your mail")).to_be_visible()
    assert page.url == f"{base_url}/login?next=/trash"
    _sign_in(page, base_url)
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
