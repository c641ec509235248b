"""Sending from the webmail of a real `spoolgate serve`: what the user composes in Chromium
goes through the durable queue and the outbound route and arrives, intact, at another
domain's Postfix; a reply-all arrives threaded. The company's own server is down
throughout (the emergency the webmail is for)."""

from __future__ import annotations

import email
import email.policy
import smtplib
from email.message import EmailMessage

import pytest
from playwright.sync_api import Page, expect

from tests.downstream import PostfixDownstream, closed_port
from tests.gateway_process import GatewayProcess, free_port
from tests.integration.delivery.gateway import start_delivering, wait_states

pytestmark = pytest.mark.integration

ALICE = "alice@example.test"
PASSWORD = "battery horse staple"
PAYLOAD = bytes(range(256)) * 64  # every byte value: an encoding slip would show


@pytest.fixture
def partner(folder) -> PostfixDownstream:
    with PostfixDownstream(folder / "partner", free_port(), domains=("partner.test",)) as sink:
        yield sink


@pytest.fixture
def webmail(gateway_factory, partner: PostfixDownstream) -> tuple[GatewayProcess, str]:
    web_port = free_port()
    gateway = start_delivering(
        gateway_factory, None, {"example.test": f"smtp://127.0.0.1:{closed_port()}"},
        outbound=partner.route,
        extra={"web": {"enabled": True, "listen": f"127.0.0.1:{web_port}"}})
    added = gateway.cli("user", "add", ALICE, "--password-stdin", input=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    return gateway, f"http://127.0.0.1:{web_port}"


def _sign_in(page: Page, base: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Email address").fill(ALICE)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()


def _by_recipient(messages: list[EmailMessage]) -> dict[str, EmailMessage]:
    parsed = [email.message_from_bytes(m.as_bytes(), policy=email.policy.default)
              for m in messages]
    return {str(m["Delivered-To"]).lower(): m for m in parsed}


def test_a_message_composed_in_the_browser_arrives_with_its_attachment(
        webmail, partner: PostfixDownstream, page: Page) -> None:
    gateway, base = webmail
    _sign_in(page, base)
    page.get_by_role("link", name="Compose").click()
    page.get_by_label("To").fill("Bob Builder <bob@partner.test>")
    page.get_by_label("Bcc").fill("dave@partner.test")
    page.get_by_label("Subject").fill("Grüße and the figures")
    page.get_by_label("Message").fill("Hello Bob,\n\nthe figures are attached.\n")
    page.get_by_label("Attachments").set_input_files(
        [{"name": "figures März.bin", "mimeType": "application/octet-stream",
          "buffer": PAYLOAD}])
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("heading", name="Sent")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("queued")
    expect(page.locator("#sent")).to_contain_text("Grüße and the figures")

    arrived = _by_recipient(partner.wait_for(2, timeout=60))
    assert set(arrived) == {"bob@partner.test", "dave@partner.test"}
    for message in arrived.values():
        assert message["From"] == ALICE and message["Subject"] == "Grüße and the figures"
        assert "Bcc" not in message
        (attachment,) = list(message.iter_attachments())
        assert attachment.get_filename() == "figures März.bin"
        assert attachment.get_content() == PAYLOAD
    assert "dave" not in str(arrived["bob@partner.test"]["To"])
    wait_states(gateway, {"delivered": 2}, timeout=30)
    page.reload()
    expect(page.locator("#sent .badge.delivered")).to_have_count(2)


def test_reply_all_arrives_threaded_and_without_the_user(
        webmail, partner: PostfixDownstream, page: Page) -> None:
    gateway, base = webmail
    original = EmailMessage()
    original["From"] = "Bob Builder <bob@partner.test>"
    original["To"] = "Alice <alice@example.test>, carol@partner.test"
    original["Subject"] = "Contract"
    original["Message-ID"] = "<contract.1@partner.test>"
    original["References"] = "<contract.0@partner.test>"
    original["Date"] = "Sun, 29 Nov 2026 10:00:00 +0000"
    original.set_content("Can you sign by Friday?\n")
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as smtp:
        smtp.send_message(original)
    wait_states(gateway, {"deferred": 1}, timeout=30)  # the company's server is down

    _sign_in(page, base)
    page.get_by_role("link", name="Contract").click()
    page.get_by_role("link", name="Reply all").click()
    expect(page.get_by_label("Subject")).to_have_value("Re: Contract")
    body = page.get_by_label("Message")
    body.fill("Signed.\n" + body.input_value())
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("heading", name="Sent")).to_be_visible()

    arrived = _by_recipient(partner.wait_for(2, timeout=60))
    assert set(arrived) == {"bob@partner.test", "carol@partner.test"}
    reply = arrived["carol@partner.test"]
    assert reply["In-Reply-To"] == "<contract.1@partner.test>"
    assert reply["References"] == "<contract.0@partner.test> <contract.1@partner.test>"
    assert reply["Subject"] == "Re: Contract" and reply["From"] == ALICE
    assert ALICE not in str(reply["To"]) + str(reply.get("Cc", ""))
    text = reply.get_content()
    assert text.startswith("Signed.") and "> Can you sign by Friday?" in text
