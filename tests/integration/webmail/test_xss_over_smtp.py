"""Every hostile HTML message of the corpus, sent in over SMTP and opened in the real webmail.

A real `spoolgate serve` (scanners off, so every message is stored whatever it holds)
receives the 530 messages of ../shared/corpus/xss over SMTP; the recipient signs in
and opens each one in headless Chromium. Nothing may run (no dialog, no console output
of a script, no popup) and nothing may be fetched except the webmail's own pages, its
static files and the message frames; the frame's own refusals (CSP, sandbox) are the
walls working. tests/integration/webmail/test_frame_isolation.py repeats the run with
the sanitizer off, to prove the sandbox and CSP hold alone.
"""

from __future__ import annotations

import json
import re
import smtplib
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.gateway_process import free_port
from tests.integration.webmail.test_frame_isolation import BLOCKED_FAILURES, watch

pytestmark = pytest.mark.integration

ALICE = "alice@example.test"
PASSWORD = "hostile mail inspector"


def _send_all(port: int, paths: list[Path]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        for path in paths:
            data = re.sub(rb"\r?\n", b"\r\n", path.read_bytes())
            smtp.sendmail("attacker@remote.test", [ALICE], data)


def test_hostile_messages_opened_in_the_webmail_run_and_fetch_nothing(
        corpus: Path, gateway_factory, page: Page) -> None:
    paths = sorted((corpus / "xss" / "messages").glob("*.eml"))
    assert len(paths) > 500
    web = free_port()
    gateway = gateway_factory(extra={"scan": {"scanners": []},
                                     "web": {"enabled": True, "listen": f"127.0.0.1:{web}"}})
    assert gateway.cli("user", "add", ALICE, "--password-stdin",
                       input=PASSWORD + "\n").returncode == 0
    _send_all(gateway.port, paths)
    queued = json.loads(gateway.cli("queue", "list", "--json", "--limit", "1000").stdout)
    assert len(queued) == len(paths)

    origin = f"http://127.0.0.1:{web}"
    page.goto(f"{origin}/login")
    page.get_by_label("Email address").fill(ALICE)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()

    seen = watch(page)
    for entry in queued:
        page.goto(f"{origin}/m/{entry['queue_id']}", wait_until="load")
    page.goto("about:blank")

    frames = [url for url in seen.requests if re.fullmatch(rf"{origin}/m/\w+/frame", url)]
    assert len(frames) == len(paths), "every message has an HTML body shown in the frame"
    assert seen.dialogs == [] and seen.popups == [] and seen.console == []
    ours = re.compile(rf"{re.escape(origin)}/(m/\w+(/frame|/cid/.*)?|static/.*)")
    unexpected = [f"{url} -> {seen.failures.get(url, 'sent')}" for url in seen.requests
                  if not ours.fullmatch(url) and not url.startswith(("data:", "about:"))
                  and seen.failures.get(url) not in BLOCKED_FAILURES]
    assert unexpected == []
