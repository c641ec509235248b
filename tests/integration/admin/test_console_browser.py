"""The admin console in real headless Chromium, served by `spoolgate serve`: the dashboard,
the queue with a bulk hold, a message's timeline, tracking a relay attempt refused in the
SMTP session, the audit log, and a domain admin trying another domain's URLs directly."""

from __future__ import annotations

import re
import smtplib
import time

import pytest
from playwright.sync_api import Page, expect

from tests.gateway_process import ROOT, free_port
from tests.integration.delivery.gateway import message, start_delivering, states, wait_states

pytestmark = pytest.mark.integration

ADMIN, BOSS = "root@example.test", "boss@other.test"
PASSWORD = "battery horse staple"
SHOTS = ROOT / "docs" / "screenshots"


def _send(port: int, number: int, to: str) -> None:
    msg = message(number, to=to)
    msg.replace_header("Subject", f"Order {number} for {to.split('@')[0]}")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.send_message(msg)


def _relay_attempt(port: int) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("spammer.test")
        smtp.mail("spam@spammer.test")
        code, reply = smtp.rcpt("victim@elsewhere.test")
    return f"{code} {reply.decode()}"


def _sign_in(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/login?next=/admin")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def _queue_ids(gateway) -> dict[str, str]:
    """recipient -> queue ID, from `spoolgate queue list --json`."""
    import json
    listed = gateway.cli("queue", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return {r["address"]: entry["queue_id"] for entry in json.loads(listed.stdout)
            for r in entry["recipients"]}


@pytest.fixture
def console(gateway_factory):
    """A gateway whose two company servers are down, with an admin and a domain admin."""
    web_port = free_port()
    gateway = start_delivering(
        gateway_factory, None, {"example.test": f"smtp://127.0.0.1:{free_port()}",
                                "other.test": f"smtp://127.0.0.1:{free_port()}"},
        delivery={"min_backoff": 30.0, "max_backoff": 30.0, "down_after": 1},
        extra={"web": {"enabled": True, "listen": f"127.0.0.1:{web_port}"}})
    for email, role in ((ADMIN, ("--role", "admin")),
                        (BOSS, ("--role", "domain-admin", "--domain", "other.test"))):
        added = gateway.cli("user", "add", email, *role, "--password-stdin",
                            input=PASSWORD + "\n")
        assert added.returncode == 0, added.stderr
    for number, to in enumerate(("alice@example.test", "bob@example.test",
                                 "carol@example.test", "oliver@other.test")):
        _send(gateway.port, number, to)
    wait_states(gateway, {"deferred": 4}, timeout=30)
    return gateway, f"http://127.0.0.1:{web_port}"


def test_an_admin_holds_tracks_and_audits(console, page: Page) -> None:
    gateway, base = console
    refused = _relay_attempt(gateway.port)
    assert refused.startswith("550")
    ids = _queue_ids(gateway)

    _sign_in(page, base, ADMIN)
    expect(page.locator("table.grid").first).to_contain_text("down")
    expect(page.locator("ol.timeline").first).to_contain_text("down")  # the route events
    expect(page.locator("svg.chart")).to_be_visible()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "console-dashboard.png"), full_page=True)

    page.get_by_role("link", name="Queue", exact=True).click()
    rows = page.locator("table.queue tbody tr")
    expect(rows).to_have_count(4)
    page.get_by_label("Recipient").fill("other.test")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    page.get_by_label("Recipient").fill("")
    page.get_by_role("button", name="Filter").click()
    page.get_by_label(f"Select {ids['alice@example.test']} to alice@example.test").check()
    page.get_by_label(f"Select {ids['bob@example.test']} to bob@example.test").check()
    page.get_by_label("With the selected messages:").select_option("hold")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("status")).to_have_text("2 recipient(s) put on hold.")
    page.screenshot(path=str(SHOTS / "console-queue.png"), full_page=True)
    assert states(gateway) == {"held": 2, "deferred": 2}

    page.get_by_role("link", name=ids["alice@example.test"]).click()
    timeline = page.locator("ol.timeline")
    expect(timeline).to_contain_text("accepted")
    expect(timeline).to_contain_text(f"by {ADMIN} (console)")
    page.get_by_role("button", name="Release from hold").click()
    expect(page.get_by_role("status")).to_have_text("1 recipient(s) released from hold.")

    page.get_by_role("link", name="Tracking").click()
    page.get_by_label("Recipient").fill("victim@elsewhere.test")
    deadline = time.monotonic() + 15  # refusals are written once a second
    while True:
        page.get_by_role("button", name="Search").click()
        if page.locator("table.grid").count() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    found = page.locator("table.grid tbody tr")
    expect(found).to_have_count(1)
    expect(found).to_contain_text("refused")
    expect(found).to_contain_text("relay: 550 5.7.1")
    expect(found).to_contain_text("spam@spammer.test")

    # The other verbs, from each message's page: deliver now, bounce, delete.
    for address, verb, done, state in (
            # made due now: tried again at once (still failing), or waiting for the probe
            ("carol@example.test", "Deliver now", "made due now", "deferred|delivering"),
            ("bob@example.test", "Bounce to sender", "bounced to the sender", "failed"),
            ("oliver@other.test", "Delete", "deleted", "deleted")):
        page.goto(f"{base}/admin/m/{ids[address]}")
        if address == "bob@example.test":  # held above: bounce works on held mail too
            expect(page.locator("table.grid").first).to_contain_text("held")
        page.get_by_role("button", name=verb).click()
        expect(page.get_by_role("status")).to_have_text(f"1 recipient(s) {done}.")
        expect(page.locator("table.grid").first).to_contain_text(re.compile(state))

    page.get_by_role("link", name="Audit log").click()
    audit = page.locator("table.grid tbody")
    for action in ("queue.release", "queue.hold", "queue.flush", "queue.bounce",
                   "queue.delete"):
        expect(audit).to_contain_text(action)
    expect(audit).to_contain_text(ADMIN)


def test_a_domain_admin_cannot_reach_another_domains_mail(console, page: Page) -> None:
    gateway, base = console
    ids = _queue_ids(gateway)
    _sign_in(page, base, BOSS)
    page.goto(f"{base}/admin/queue")
    rows = page.locator("table.queue tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("oliver@other.test")
    assert "alice@example.test" not in page.content()

    for queue_id in (ids["alice@example.test"], "00000000000000"):
        answer = page.goto(f"{base}/admin/m/{queue_id}")
        assert answer is not None and answer.status == 404
    answer = page.goto(f"{base}/admin/track?recipient=alice")
    assert answer is not None and answer.status == 200
    assert "alice@example.test" not in page.content()

    # A forged form: the right session and token, another domain's queue ID.
    page.goto(f"{base}/admin/queue")
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    forged = page.request.post(f"{base}/admin/act", form={
        "csrf": token, "verb": "delete", "id": ids["alice@example.test"],
        "back": "/admin/queue"}, max_redirects=0)
    assert forged.status == 303 and "n=0&refused=1" in forged.headers["location"]
    # No token at all: refused before anything is looked at.
    bare = page.request.post(f"{base}/admin/act", form={
        "verb": "delete", "id": ids["oliver@other.test"]}, max_redirects=0)
    assert bare.status == 403
    assert states(gateway) == {"deferred": 4}

    # The console's pages are not for a plain user either.
    added = gateway.cli("user", "add", "alice@example.test", "--password-stdin",
                        input=PASSWORD + "\n")
    assert added.returncode == 0
    page.context.clear_cookies()
    page.goto(f"{base}/login")
    page.get_by_label("Email address").fill("alice@example.test")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    answer = page.goto(f"{base}/admin/queue")
    assert answer is not None and answer.status == 403
    assert re.search("for administrators", page.content())


def test_an_admin_releases_from_quarantine_and_blocks_a_sender(gateway_factory,
                                                                page: Page) -> None:
    """Everything for example.test is quarantined (a threshold below any score); the admin
    releases one message after a rescan and blocks the sender of another."""
    web_port = free_port()
    gateway = start_delivering(
        gateway_factory, None, {"example.test": f"smtp://127.0.0.1:{free_port()}"},
        delivery={"min_backoff": 30.0, "max_backoff": 30.0},
        domain_extra={"example.test": {"spam_tag": -2.0, "spam_quarantine": -1.0}},
        extra={"web": {"enabled": True, "listen": f"127.0.0.1:{web_port}"}})
    added = gateway.cli("user", "add", ADMIN, "--role", "admin", "--password-stdin",
                        input=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    for number, to in enumerate(("alice@example.test", "bob@example.test")):
        _send(gateway.port, number, to)
    wait_states(gateway, {"quarantined": 2}, timeout=30)
    ids = _queue_ids(gateway)

    base = f"http://127.0.0.1:{web_port}"
    _sign_in(page, base, ADMIN)
    page.get_by_role("link", name="Quarantine", exact=True).click()
    expect(page.locator("table.queue tbody tr")).to_have_count(2)
    page.get_by_label(f"Select {ids['alice@example.test']} to alice@example.test").check()
    page.get_by_label("With the selected messages:").select_option("release-quarantine")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("status")).to_have_text("1 recipient(s) released from quarantine.")
    expect(page.locator("table.queue tbody tr")).to_have_count(1)
    page.screenshot(path=str(SHOTS / "console-quarantine.png"), full_page=True)

    page.get_by_label(f"Select {ids['bob@example.test']} to bob@example.test").check()
    page.get_by_label("With the selected messages:").select_option("block-sender")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("status")).to_contain_text("1")
    page.goto(f"{base}/admin/senders")
    expect(page.locator("main")).to_contain_text("sender@remote.test")
    expect(page.locator("main")).to_contain_text("block")

    found = states(gateway)
    assert found.get("quarantined") == 1 and found.get("quarantined", 0) + found.get(
        "queued", 0) + found.get("deferred", 0) + found.get("delivering", 0) == 2
    timeline = gateway.cli("queue", "show", ids["alice@example.test"]).stdout
    assert f"released by {ADMIN} (console) after a rescan" in timeline
    # The rule reaches the policy within its cache's 30 s: the same sender is then refused
    # in the SMTP session.
    deadline = time.monotonic() + 40
    while True:
        try:
            _send(gateway.port, 7, "carol@example.test")
            refused = None
        except smtplib.SMTPDataError as error:
            refused = error
        if refused is not None or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert refused is not None and refused.smtp_code == 550
