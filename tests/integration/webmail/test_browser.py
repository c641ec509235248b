"""The webmail in real headless Chromium: sign-in, list, reading, remote content,
downloads, delete, keyboard navigation, and screenshots of the main screens."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from playwright.sync_api import Page, expect

from spoolgate.store.store import Store, open_store
from spoolgate.webmail.app import WebmailSettings, create_app
from spoolgate.webmail.users import add_user
from tests.gateway_process import ROOT, free_port
from tests.webmail_mail import attachment_message, deliver, html_message, text_message

pytestmark = pytest.mark.integration

ALICE = "alice@example.test"
PASSWORD = "correct horse battery"
SHOTS = ROOT / "docs" / "screenshots"


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    opened = open_store(sqlite_url)
    add_user(opened, ALICE, PASSWORD, domains=["example.test"],
             hasher=PasswordHasher.from_parameters(CHEAPEST))
    yield opened
    opened.close()


@pytest.fixture
def base_url(store: Store) -> Iterator[str]:
    """The webmail under uvicorn in a background thread on a free port."""
    settings = WebmailSettings(hostname="mail.example.test",
                               domains={"example.test": "smtp://127.0.0.1:2526"})
    app = create_app(store, settings, hasher=PasswordHasher.from_parameters(CHEAPEST))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def mail(store: Store) -> dict[str, str]:
    now = time.time()
    return {
        "text": deliver(store, text_message(ALICE, subject="Lunch on Friday?",
                                            body="Shall we meet at noon?\n"), ALICE, at=now - 300),
        "attachment": deliver(store, attachment_message(ALICE), ALICE, at=now - 200),
        "html": deliver(store, html_message(ALICE, subject="Big newsletter"), ALICE, at=now - 100),
    }


def _sign_in(page: Page, base_url: str, password: str = PASSWORD) -> None:
    page.goto(f"{base_url}/login")
    page.get_by_label("Email address").fill(ALICE)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_sign_in_read_and_delete(page: Page, base_url: str, store: Store,
                                 mail: dict[str, str]) -> None:
    _sign_in(page, base_url, password="wrong password")
    expect(page.get_by_role("alert")).to_contain_text("not right")
    _shot(page, "sign-in")
    _sign_in(page, base_url)
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    expect(page.locator("#messages .message")).to_have_count(3)
    _shot(page, "inbox")

    page.get_by_role("link", name="Lunch on Friday?").click()
    expect(page.locator(".body-text")).to_contain_text("Shall we meet at noon?")

    page.goto(f"{base_url}/m/{mail['html']}")
    frame = page.frame_locator("iframe.body-frame")
    expect(frame.locator("#headline")).to_have_text("Big news inside")
    expect(frame.locator("img[alt=logo]")).to_have_js_property("naturalWidth", 1)
    assert page.title() != "pwned"
    _shot(page, "html-message")
    page.get_by_role("link", name="Show remote content").click()
    expect(page).to_have_url(f"{base_url}/m/{mail['html']}?remote=1")
    expect(page.frame_locator("iframe.body-frame").locator("#tracker")).to_have_attribute(
        "src", "http://tracker.invalid/pixel.png")

    page.goto(f"{base_url}/m/{mail['attachment']}")
    with page.expect_download() as download:
        page.get_by_role("link", name="report Q3.pdf").click()
    assert download.value.suggested_filename == "report Q3.pdf"
    assert Path(download.value.path()).read_bytes() == b"%PDF-1.4 fake report\n"

    page.goto(f"{base_url}/m/{mail['text']}")
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status")).to_contain_text("will not be delivered")
    states = {r.address: r.state for r in store.show(mail["text"]).entry.recipients}
    assert states == {ALICE: "deleted"}


def test_keyboard_moves_the_selection(page: Page, base_url: str, mail: dict[str, str]) -> None:
    _sign_in(page, base_url)
    rows = page.locator("#messages .message")
    expect(rows).to_have_count(3)
    page.keyboard.press("j")
    expect(rows.nth(0)).to_have_class("message unread selected")
    page.keyboard.press("j")
    page.keyboard.press("j")
    expect(rows.nth(2)).to_have_class("message unread selected")
    page.keyboard.press("k")
    expect(rows.nth(1)).to_have_class("message unread selected")
    expect(rows.nth(2)).not_to_have_class("message unread selected")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{base_url}/m/{mail['attachment']}")


def test_the_inbox_works_at_phone_width(page: Page, base_url: str, mail: dict[str, str]) -> None:
    page.set_viewport_size({"width": 375, "height": 740})
    _sign_in(page, base_url)
    expect(page.locator("#messages .message")).to_have_count(3)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375
    _shot(page, "inbox-phone")
