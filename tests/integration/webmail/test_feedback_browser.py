"""A user releases her own quarantined message in the browser: mail arrives over SMTP, the
domain's spam policy quarantines it, she opens her Quarantine in the webmail served by
`spoolgate serve`, presses "Release to my mail server", and the company's real Postfix
receives it (rescanned first, her name in the event log)."""

from __future__ import annotations

import smtplib

import pytest
from playwright.sync_api import Page, expect

from tests.downstream import PostfixDownstream
from tests.gateway_process import free_port
from tests.integration.delivery.gateway import (
    message,
    queue_json,
    show,
    start_delivering,
    wait_states,
)

pytestmark = pytest.mark.integration

ALICE = "alice@example.test"
PASSWORD = "battery horse staple"


def test_a_user_releases_her_quarantined_mail_and_it_arrives(
        gateway_factory, folder, page: Page) -> None:
    web_port = free_port()
    with PostfixDownstream(folder / "company", free_port()) as company:
        gateway = start_delivering(
            gateway_factory, None, {"example.test": company.route},
            # Every message scores at least 0: this policy quarantines them all.
            domain_extra={"example.test": {"spam_tag": -2.0, "spam_quarantine": -1.0}},
            extra={"web": {"enabled": True, "listen": f"127.0.0.1:{web_port}"}})
        added = gateway.cli("user", "add", ALICE, "--password-stdin", input=PASSWORD + "\n")
        assert added.returncode == 0, added.stderr
        msg = message(1, to=ALICE, body="The signed contract, as promised.\n")
        msg.replace_header("Subject", "Signed contract")
        with smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as smtp:
            smtp.send_message(msg)
        wait_states(gateway, {"quarantined": 1})
        assert company.count() == 0

        base = f"http://127.0.0.1:{web_port}"
        page.goto(f"{base}/login")
        page.get_by_label("Email address").fill(ALICE)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("navigation", name="Folders").get_by_role(
            "link", name="Quarantine").click()
        page.get_by_role("link", name="Signed contract").click()
        expect(page.get_by_role("button", name="Not spam")).to_be_visible()
        page.get_by_role("button", name="Release to my mail server").click()

        expect(page.get_by_role("status")).to_have_text(
            "Released: it will be delivered to your mail server.")
        expect(page.locator("#messages .message")).to_have_count(0)
        (arrived,) = company.wait_for(1, timeout=60)
        wait_states(gateway, {"delivered": 1}, timeout=60)

    assert arrived["Message-ID"] == msg["Message-ID"]
    (entry,) = queue_json(gateway)
    released = [e for e in show(gateway, entry["queue_id"])["events"] if e["kind"] == "released"]
    assert len(released) == 1
    assert released[0]["detail"].startswith(f"released by {ALICE} after a rescan: action=")

