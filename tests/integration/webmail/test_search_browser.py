"""The search box in real headless Chromium: type a query, see the hit, open it."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from spoolgate.store.store import Store
from tests.integration.webmail.test_browser import (  # noqa: F401 - fixtures
    _sign_in,
    base_url,
    mail,
    store,
)

pytestmark = pytest.mark.integration


def test_searching_from_the_search_box(page: Page, base_url: str, store: Store,
                                       mail: dict[str, str]) -> None:
    _sign_in(page, base_url)
    box = page.get_by_role("searchbox", name="Search mail")
    box.fill("noon")
    box.press("Enter")
    expect(page.get_by_role("heading", name="Search")).to_be_visible()
    rows = page.locator("#messages .message")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", mail["text"])
    expect(box).to_have_value("noon")
    rows.first.get_by_role("link").click()
    expect(page.locator(".body-text")).to_contain_text("Shall we meet at noon?")
    page.get_by_role("searchbox", name="Search mail").fill("has:attachment")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#messages .message")).to_have_count(1)
    expect(page.locator("#messages .message").first).to_have_attribute("data-id",
                                                                       mail["attachment"])
