"""The worst day, end to end: the company's server is down, mail arrives over SMTP, the user
reads it in the webmail served by `spoolgate serve`, deletes one, and when the server comes
back only what she kept is delivered."""

from __future__ import annotations

import smtplib
import time

import pytest
from playwright.sync_api import Page, expect

from tests.downstream import PostfixDownstream
from tests.gateway_process import free_port
from tests.integration.delivery.gateway import message, start_delivering, wait_states

pytestmark = pytest.mark.integration

ALICE = "alice@example.test"
PASSWORD = "battery horse staple"


def _send(port: int, subject: str, body: str) -> str:
    msg = message(0, to=ALICE, body=body)
    msg.replace_header("Subject", subject)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.send_message(msg)
    return msg["Message-ID"]


def test_mail_deleted_in_the_webmail_during_an_outage_is_never_delivered(
        gateway_factory, folder, page: Page) -> None:
    route_port, web_port = free_port(), free_port()
    gateway = start_delivering(
        gateway_factory, None, {"example.test": f"smtp://127.0.0.1:{route_port}"},
        delivery={"min_backoff": 1.0, "max_backoff": 1.0, "down_after": 1},
        extra={"web": {"enabled": True, "listen": f"127.0.0.1:{web_port}"}})
    added = gateway.cli("user", "add", ALICE, "--password-stdin", input=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    kept = _send(gateway.port, "Contract for signature", "Please sign by Friday.\n")
    unwanted = _send(gateway.port, "Cheap watches", "Buy now.\n")
    wait_states(gateway, {"deferred": 2}, timeout=30)

    base = f"http://127.0.0.1:{web_port}"
    page.goto(f"{base}/login")
    page.get_by_label("Email address").fill(ALICE)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    expect(page.locator("#messages .message")).to_have_count(2)
    expect(page.locator("body")).to_contain_text("unreachable")  # the outage banner
    page.get_by_role("link", name="Cheap watches").click()
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status")).to_contain_text("will not be delivered")
    page.goto(base)
    expect(page.locator("#messages .message")).to_have_count(1)

    company = PostfixDownstream(folder / "company", route_port).start()
    try:
        assert gateway.cli("queue", "flush").returncode == 0
        company.wait_for(1, timeout=60)
        wait_states(gateway, {"delivered": 1, "deleted": 1}, timeout=60)
        time.sleep(2.0)  # a wrongly delivered copy would still be on its way: give it time
        delivered = company.message_ids()
    finally:
        company.stop()
    assert delivered == [kept]
    assert unwanted not in delivered
