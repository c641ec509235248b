"""Debian's Chromium, headless, driven by Playwright, kept off the network (RECIPES.md).

Playwright never downloads a browser here: it launches /usr/bin/chromium. The flags stop
Chromium's background traffic, and ``--host-resolver-rules`` makes every name but the
loopback ones fail to resolve, so a page can reach nothing off this machine.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium per test module (a new context per test is cheap).

    Module scope, not session: while Playwright's sync API is open, its event loop runs
    in the main thread, and every later test calling ``asyncio.run`` would fail.
    """
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    """A fresh browser context and page (its own cookies), closed after the test."""
    context = browser.new_context()
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
