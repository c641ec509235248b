"""The quarantine digest end to end: a user opts in on her Quarantine page, a message is
quarantined over SMTP, ``spoolgate digest send --now`` queues her digest, which the
company's real Postfix receives; its release link, opened in a browser without any
session, asks once, releases on the click, the message arrives, and the link then says
it was used."""

from __future__ import annotations

import re
import smtplib

import pytest
from playwright.sync_api import Page, expect

from tests.downstream import PostfixDownstream
from tests.gateway_process import free_port
from tests.integration.delivery.gateway import message, start_delivering, wait_states

pytestmark = pytest.mark.integration

ALICE = "alice@example.test"
PASSWORD = "battery horse staple"


def test_a_digest_link_releases_the_message_once(gateway_factory, folder, browser,
                                                  page: Page) -> None:
    web_port = free_port()
    base = f"http://127.0.0.1:{web_port}"
    with PostfixDownstream(folder / "company", free_port()) as company:
        gateway = start_delivering(
            gateway_factory, None, {"example.test": company.route},
            # Every message scores at least 0: this policy quarantines them all, except
            # the digest, which is the gateway's own and not scanned.
            domain_extra={"example.test": {"spam_tag": -2.0, "spam_quarantine": -1.0}},
            extra={"web": {"enabled": True, "listen": f"127.0.0.1:{web_port}"},
                   "digest": {"public_url": base, "hour": 8}})
        added = gateway.cli("user", "add", ALICE, "--password-stdin", input=PASSWORD + "\n")
        assert added.returncode == 0, added.stderr
        msg = message(1, to=ALICE, body="The signed contract, as promised.\n")
        msg.replace_header("Subject", "Signed contract")
        with smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as smtp:
            smtp.send_message(msg)
        wait_states(gateway, {"quarantined": 1})

        page.goto(f"{base}/login")
        page.get_by_label("Email address").fill(ALICE)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("navigation", name="Folders").get_by_role(
            "link", name="Quarantine").click()
        page.get_by_label("Email me a daily summary of my quarantine").check()
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_role("status")).to_have_text(
            "You will get a daily summary of new mail in your quarantine.")

        sent = gateway.cli("digest", "send", "--now")
        assert sent.returncode == 0, sent.stderr
        (digest,) = company.wait_for(1, timeout=60)
        assert digest["Auto-Submitted"] == "auto-generated"
        assert digest["Subject"] == "Quarantine summary: 1 new message"
        text = digest.get_body(("plain",)).get_content()
        assert "Signed contract" in text
        (link,) = re.findall(r"Release: (\S+)", text)
        assert link.startswith(f"{base}/digest/")

        # A mail client's click: a fresh browser, no session.
        context = browser.new_context()
        try:
            clicked = context.new_page()
            clicked.goto(link)
            expect(clicked.get_by_role("heading", name="Release this message?")).to_be_visible()
            wait_states(gateway, {"quarantined": 1})  # opening the link changed nothing
            clicked.get_by_role("button", name="Release").click()
            expect(clicked.get_by_role("heading", name="Released")).to_be_visible()

            arrived = company.wait_for(2, timeout=60)
            assert msg["Message-ID"] in [m["Message-ID"] for m in arrived]

            clicked.goto(link)
            expect(clicked.get_by_role("heading", name="This link was already used")
                   ).to_be_visible()
            assert company.count() == 2
        finally:
            context.close()
        wait_states(gateway, {"delivered": 2}, timeout=60)
