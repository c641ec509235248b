"""Folders, reading, attachments and trash of spoolgate/webmail on a real SQLite store."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from spoolgate.store.mailbox import Folder, Mailbox
from spoolgate.store.queue import Queue
from spoolgate.store.store import Store
from spoolgate.webmail import render
from tests.unit.webmail.conftest import Clock, csrf_of, sign_in
from tests.webmail_mail import PNG, attachment_message, deliver, html_message, text_message

ALICE = "alice@example.test"


def _state(store: Store, queue_id: str, address: str = ALICE) -> str:
    return {r.address: r.state for r in store.show(queue_id).entry.recipients}[address]


def test_the_inbox_lists_only_the_users_mail_newest_first(alice: TestClient, store: Store,
                                                          clock: Clock) -> None:
    older = deliver(store, text_message(ALICE, subject="Older one"), ALICE, at=clock.now - 60)
    newer = deliver(store, text_message(ALICE, subject="Newer one"), ALICE, at=clock.now - 30)
    deliver(store, text_message("bob@example.test", subject="Bob only"), "bob@example.test")
    html = alice.get("/inbox").text
    assert html.index(newer) < html.index(older)
    assert "Bob only" not in html
    assert "waiting for your mail server since" in html
    assert "Bob Builder" in html and "see you." in html


def test_another_users_message_is_404_on_every_endpoint(alice: TestClient, store: Store) -> None:
    theirs = deliver(store, attachment_message("bob@example.test"), "bob@example.test")
    token = csrf_of(alice.get("/inbox").text)
    for path in ("", "/frame", "/source", "/part/1", "/cid/page@x"):
        assert alice.get(f"/m/{theirs}{path}").status_code == 404, path
    for verb in ("delete", "restore", "unread"):
        assert alice.post(f"/m/{theirs}/{verb}", data={"csrf": token}).status_code == 404, verb
    assert _state(store, theirs, "bob@example.test") == "queued"


def test_list_entries_are_parsed_once(alice: TestClient, store: Store) -> None:
    queue_id = deliver(store, text_message(ALICE, subject="Indexed"), ALICE)
    mailbox = Mailbox(store, "t")
    assert mailbox.page(ALICE, Folder.INBOX, 10)[0].index is None
    alice.get("/inbox")
    entry = mailbox.page(ALICE, Folder.INBOX, 10)[0].index
    assert entry is not None and entry.subject == "Indexed"
    assert mailbox.item(ALICE, queue_id).index == entry


def test_paging_goes_to_older_mail(store: Store, settings, clock: Clock, make_client) -> None:
    from dataclasses import replace

    from spoolgate.webmail.app import create_app
    from tests.unit.webmail.conftest import HASHER
    ids = [deliver(store, text_message(ALICE, subject=f"Message {n}"), ALICE,
                   at=clock.now - 100 + n) for n in range(5)]
    client = TestClient(create_app(store, replace(settings, page_size=2), clock=clock,
                                   hasher=HASHER), follow_redirects=False)
    sign_in(client)
    first = client.get("/inbox").text
    older = re.search(r'href="(/inbox\?before=[^"]+)"', first).group(1).replace("&amp;", "&")
    second = client.get(older).text
    assert ids[4] in first and ids[3] in first and ids[2] not in first
    assert ids[2] in second and ids[1] in second and ids[4] not in second


def test_reading_marks_read_and_shows_the_text_escaped(alice: TestClient, store: Store) -> None:
    queue_id = deliver(store, text_message(ALICE, body="a <b>bold</b> claim\n"), ALICE)
    assert 'class="message unread"' in alice.get("/inbox").text
    page = alice.get(f"/m/{queue_id}")
    assert page.status_code == 200
    assert "&lt;b&gt;bold&lt;/b&gt;" in page.text and "<b>bold</b>" not in page.text
    assert 'class="message unread"' not in alice.get("/inbox").text
    assert "Return-Path" not in page.text
    all_headers = alice.get(f"/m/{queue_id}?headers=all").text
    assert "Message-ID" in all_headers


def test_html_is_only_in_a_sandboxed_frame_with_its_own_policy(alice: TestClient,
                                                               store: Store) -> None:
    queue_id = deliver(store, html_message(ALICE), ALICE)
    page = alice.get(f"/m/{queue_id}").text
    assert "Big news inside" not in page
    frame_tag = re.search(r"<iframe[^>]*>", page).group(0)
    assert "sandbox" in frame_tag and "allow-scripts" not in frame_tag
    assert "allow-same-origin" not in frame_tag
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in frame_tag  # links open
    assert "Show remote content" in page
    frame = alice.get(f"/m/{queue_id}/frame")
    assert frame.headers["content-security-policy"] == render.FRAME_CSP
    assert frame.headers["x-content-type-options"] == "nosniff"
    assert "Big news inside" in frame.text and "<script" not in frame.text
    assert "tracker.invalid" not in frame.text
    image = re.search(r'src="(/m/[^"]+/cid/logo%40x\?[^"]+)"', frame.text).group(1)
    signed_out = TestClient(alice.app)
    assert signed_out.get(image.replace("&amp;", "&")).content == PNG
    assert signed_out.get(image.replace("&amp;", "&")[:-4] + "0000").status_code == 404
    assert signed_out.get(f"/m/{queue_id}/cid/logo@x").status_code == 404
    remote = alice.get(f"/m/{queue_id}/frame?remote=1")
    assert remote.headers["content-security-policy"] == render.FRAME_CSP_REMOTE
    assert "tracker.invalid" in remote.text


def test_cid_serves_images_only(alice: TestClient, store: Store) -> None:
    image = deliver(store, html_message(ALICE), ALICE)
    response = alice.get(f"/m/{image}/cid/logo@x")
    assert response.status_code == 200 and response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    other = deliver(store, attachment_message(ALICE), ALICE)
    assert alice.get(f"/m/{other}/cid/page@x").status_code == 404  # text/html by Content-ID
    assert alice.get(f"/m/{image}/cid/nothing@x").status_code == 404


def test_attachments_are_downloads(alice: TestClient, store: Store) -> None:
    queue_id = deliver(store, attachment_message(ALICE), ALICE)
    page = alice.get(f"/m/{queue_id}").text
    assert "report Q3.pdf" in page and "application/pdf" in page
    link = re.search(r'href="(/m/[^"]+/part/\d+)"', page).group(1)
    pdf = alice.get(link)
    assert pdf.content == b"%PDF-1.4 fake report\n"
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"].startswith("attachment")
    assert "report" in pdf.headers["content-disposition"]
    assert pdf.headers["x-content-type-options"] == "nosniff"
    html = alice.get(f"/m/{queue_id}/part/2")
    assert html.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in html.headers["content-security-policy"]
    assert alice.get(f"/m/{queue_id}/part/0").status_code == 404  # the body is no attachment
    assert alice.get(f"/m/{queue_id}/part/99").status_code == 404


def test_view_source_is_plain_text(alice: TestClient, store: Store) -> None:
    queue_id = deliver(store, html_message(ALICE), ALICE)
    source = alice.get(f"/m/{queue_id}/source")
    assert source.headers["content-type"] == "text/plain; charset=utf-8"
    assert source.headers["x-content-type-options"] == "nosniff"
    assert b"<script>" in source.content
    assert source.headers["content-disposition"].startswith("inline;")
    assert "sandbox" in source.headers["content-security-policy"]
    assert alice.get(f"/m/{queue_id}/source?download=1").headers[
        "content-disposition"].startswith("attachment")


def test_trash_stops_delivery_and_restore_requeues(alice: TestClient, store: Store) -> None:
    queue_id = deliver(store, text_message(ALICE), ALICE, "bob@example.test")
    token = csrf_of(alice.get("/inbox").text)
    gone = alice.post(f"/m/{queue_id}/delete", data={"csrf": token})
    assert gone.status_code == 303 and gone.headers["location"] == "/inbox?notice=trashed"
    assert _state(store, queue_id) == "deleted"
    assert _state(store, queue_id, "bob@example.test") == "queued"
    assert "It will not be delivered" in alice.get(gone.headers["location"]).text
    assert queue_id not in alice.get("/inbox").text and queue_id in alice.get("/trash").text
    assert alice.post(f"/m/{queue_id}/restore", data={"csrf": token}).status_code == 303
    assert _state(store, queue_id) == "queued"
    assert queue_id in alice.get("/inbox").text


def test_a_message_in_delivery_is_trashed_with_a_warning(alice: TestClient, store: Store,
                                                          clock: Clock) -> None:
    queue_id = deliver(store, text_message(ALICE), ALICE, at=clock.now - 5)
    Queue(store, "n").claim_due(now=clock.now + 10, limit=10, lease=60)
    token = csrf_of(alice.get("/inbox").text)
    answer = alice.post(f"/m/{queue_id}/delete", data={"csrf": token}, follow_redirects=True)
    assert "may still reach your mail server" in answer.text
    assert _state(store, queue_id) == "delivering"


def test_empty_trash_deletes(alice: TestClient, store: Store) -> None:
    queue_id = deliver(store, text_message(ALICE), ALICE)
    token = csrf_of(alice.get("/inbox").text)
    alice.post(f"/m/{queue_id}/delete", data={"csrf": token})
    assert alice.post("/trash/empty", data={"csrf": token}).status_code == 303
    assert queue_id not in alice.get("/trash").text
    assert alice.get(f"/m/{queue_id}").status_code == 404
    assert _state(store, queue_id) == "deleted"


def test_quarantine_is_its_own_folder(alice: TestClient, store: Store) -> None:
    queue_id = deliver(store, text_message(ALICE, subject="Cheap pills"), ALICE,
                       quarantined=True)
    assert "Cheap pills" not in alice.get("/inbox").text
    page = alice.get("/quarantine").text
    assert "Cheap pills" in page and "quarantined: spam" in page
    assert alice.get(f"/m/{queue_id}").status_code == 200


@pytest.mark.parametrize("down", [True, False])
def test_the_banner_shows_when_the_route_is_down(alice: TestClient, store: Store, clock: Clock,
                                                 down: bool) -> None:
    Queue(store, "n").route_failed("smtp://127.0.0.1:2526", "connection refused",
                                   now=clock.now - 600, down_after=1 if down else 5,
                                   probe_delay=60)
    page = alice.get("/inbox").text
    assert ("Your mail server has been unreachable since" in page) is down


def test_the_unread_badge_stops_counting_at_the_cap(alice: TestClient, store: Store,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from spoolgate.webmail import site
    monkeypatch.setattr(site, "UNREAD_CAP", 3)
    for n in range(3):
        deliver(store, text_message(ALICE, subject=f"Unread {n}"), ALICE)
    assert 'aria-label="2+ unread">2+<' in alice.get("/inbox").text
