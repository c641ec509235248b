"""Compose, reply, forward, send and Sent in spoolgate/webmail/sending.py, through a real
Intake and group committer on a real SQLite store."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from dataclasses import replace

import pytest
from starlette.testclient import TestClient

from spoolgate.intake.pipeline import Intake, IntakeSettings
from spoolgate.mail.envelope import Envelope
from spoolgate.mime.parse import parse_message
from spoolgate.store.groupcommit import GroupCommitter
from spoolgate.store.mailbox import Mailbox
from spoolgate.store.store import Store
from spoolgate.webmail.app import WebmailSettings, create_app
from tests.unit.webmail.conftest import HASHER, Clock, csrf_of, sign_in
from tests.webmail_mail import deliver, text_message

ALICE = "alice@example.test"


class Queueing:
    """The gateway's intake, started on the app's event loop at the first message."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.committer: GroupCommitter | None = None
        self.intake: Intake | None = None

    async def accept(self, envelope: Envelope, data: bytes) -> str:
        if self.intake is None:
            self.committer = GroupCommitter(self.store)
            self.committer.start()
            self.intake = Intake(IntakeSettings("mail.example.test", "node-a", 30),
                                 self.committer)
        return await self.intake.accept(envelope, data, origin="webmail")  # as app.py does


def _client(store: Store, settings: WebmailSettings, clock: Clock,
            queueing: Queueing | None) -> TestClient:
    submit = queueing.accept if queueing is not None else None
    return TestClient(create_app(store, settings, clock=clock, hasher=HASHER, submit=submit),
                      follow_redirects=False)


@pytest.fixture
def queueing(store: Store) -> Queueing:
    return Queueing(store)


@pytest.fixture
def sender(store: Store, settings: WebmailSettings, clock: Clock,
           queueing: Queueing) -> Iterator[TestClient]:
    with _client(store, settings, clock, queueing) as client:
        assert sign_in(client).status_code == 303
        yield client
        if queueing.committer is not None:
            client.portal.call(queueing.committer.stop)


def _send(client: TestClient, files=None, **fields: str):
    token = csrf_of(client.get("/compose").text)
    data = {"to": "", "cc": "", "bcc": "", "subject": "", "body": "", "csrf": token, **fields}
    return client.post("/compose", data=data, files=files or [("attachments", ("", b""))])


def _stored(store: Store, queue_id: str) -> email.message.EmailMessage:
    return email.message_from_bytes(store.message_data(queue_id), policy=email.policy.default)


def _queue_ids_from(store: Store, sender: str) -> list[str]:
    return [i.queue_id for i in Mailbox(store, "t").sent(sender, 50)]


def test_a_sent_message_is_queued_with_the_right_envelope_and_listed_in_sent(
        sender: TestClient, store: Store) -> None:
    response = _send(sender, to="Bob <bob@partner.test>", cc="carol@example.test",
                     bcc="dave@partner.test, BOB@partner.test", subject="Plans",
                     body="Hello Bob\r\n",
                     files=[("attachments", ("notes.bin", b"\x00\x01binary", "application/x-y"))])
    assert response.status_code == 303 and response.headers["location"] == "/sent?notice=sent"
    (queue_id,) = _queue_ids_from(store, ALICE)
    shown = store.show(queue_id).entry
    assert shown.sender == ALICE
    assert [r.address for r in shown.recipients] == \
        ["bob@partner.test", "carol@example.test", "dave@partner.test"]
    msg = _stored(store, queue_id)
    assert msg["Received"] and "webmail" in msg["Received"]
    assert msg["From"] == ALICE and "Bcc" not in msg
    assert b"dave@partner.test" not in store.message_data(queue_id).split(b"\r\n\r\n", 1)[1]
    attachment = parse_message(store.message_data(queue_id)).attachments()[0]
    assert attachment.payload == b"\x00\x01binary" and attachment.filename == "notes.bin"
    page = sender.get("/sent?notice=sent").text
    assert "Plans" in page and "dave@partner.test" in page and "Sent: it is queued" in page
    assert page.count('class="badge waiting"') == 3


def test_send_without_the_csrf_token_is_refused(sender: TestClient, store: Store) -> None:
    response = sender.post("/compose", data={"to": "bob@partner.test", "subject": "x",
                                             "body": "y"},
                           files=[("attachments", ("", b""))])
    assert response.status_code == 403
    assert _queue_ids_from(store, ALICE) == []


def test_an_invalid_address_shows_the_form_again_with_the_typed_text(
        sender: TestClient, store: Store) -> None:
    response = _send(sender, to="bob@partner.test, not-an-address", subject="Keep me",
                     body="My long <careful> text")
    assert response.status_code == 400
    assert "not an email address" in response.text and 'role="alert"' in response.text
    assert 'value="Keep me"' in response.text
    assert "My long &lt;careful&gt; text" in response.text
    assert 'value="bob@partner.test, not-an-address"' in response.text
    assert _queue_ids_from(store, ALICE) == []


def test_too_many_recipients_are_refused(store: Store, settings: WebmailSettings,
                                         clock: Clock, queueing: Queueing) -> None:
    with _client(store, replace(settings, max_recipients=2), clock, queueing) as client:
        sign_in(client)
        response = _send(client, to="a@x.test, b@x.test", bcc="c@x.test", body="hi")
    assert response.status_code == 400 and "Too many recipients (3)" in response.text
    assert _queue_ids_from(store, ALICE) == []


def test_recipients_per_hour_are_limited(store: Store, settings: WebmailSettings,
                                         clock: Clock, queueing: Queueing) -> None:
    limited = replace(settings, max_recipients_per_hour=3)
    with _client(store, limited, clock, queueing) as client:
        sign_in(client)
        first = _send(client, to="a@x.test, b@x.test", body="one")
        over = _send(client, to="c@x.test, d@x.test", body="two")
        clock.now += 3601  # an hour later the first message no longer counts
        sign_in(client)
        later = _send(client, to="c@x.test, d@x.test", body="three")
        client.portal.call(queueing.committer.stop)
    assert first.status_code == 303 and later.status_code == 303
    assert over.status_code == 400
    assert "written to 2 recipients in the last hour, and at most 3" in over.text
    assert len(_queue_ids_from(store, ALICE)) == 2


def test_sent_shows_only_what_the_user_sent_from_the_webmail(sender: TestClient,
                                                            store: Store) -> None:
    """A stranger can put the user's address in MAIL FROM over SMTP; that is not theirs."""
    forged = deliver(store, text_message("bob@example.test", subject="Forged"),
                     "bob@example.test")
    with store.writing() as conn:  # as if the forger had said MAIL FROM:<alice@...>
        from spoolgate.store import schema
        conn.execute(schema.messages.update().where(schema.messages.c.queue_id == forged)
                     .values(sender=ALICE))
    assert _send(sender, to="bob@partner.test", subject="Mine", body="x").status_code == 303
    page = sender.get("/sent").text
    assert "Mine" in page and "Forged" not in page
    assert forged not in _queue_ids_from(store, ALICE)


def test_an_oversize_upload_is_refused_with_a_clear_message(
        store: Store, settings: WebmailSettings, clock: Clock, queueing: Queueing) -> None:
    small = replace(settings, max_attachment_size=1000, max_message_size=100_000)
    with _client(store, small, clock, queueing) as client:
        sign_in(client)
        response = _send(client, to="bob@partner.test", body="typed",
                         files=[("attachments", ("big.pdf", b"x" * 5000, "application/pdf"))])
        assert response.status_code == 400
        assert "big.pdf is 5 KB: each attachment may be at most 1000 bytes" in response.text
        assert ">typed</textarea>" in response.text
        huge = _send(client, to="bob@partner.test", body="typed",
                     files=[("attachments", ("huge.pdf", b"x" * 2_000_000, "application/pdf"))])
        assert huge.status_code == 413 and "too large to send" in huge.text
    assert _queue_ids_from(store, ALICE) == []


def test_without_a_queue_sending_is_refused(store: Store, settings: WebmailSettings,
                                            clock: Clock) -> None:
    with _client(store, settings, clock, None) as client:
        sign_in(client)
        assert "Sending is not available" in client.get("/compose").text
        response = _send(client, to="bob@partner.test", body="x")
    assert response.status_code == 400 and "no mail queue" in response.text


def test_reply_all_excludes_the_user_and_threads(sender: TestClient, store: Store) -> None:
    original = email.message.EmailMessage()
    original["From"] = "Bob <bob@partner.test>"
    original["To"] = "alice@example.test, carol@partner.test"
    original["Cc"] = "Alice <ALICE@example.test>"
    original["Subject"] = "Numbers"
    original["Message-ID"] = "<n1@partner.test>"
    original.set_content("The numbers.\n")
    queue_id = deliver(store, bytes(original), ALICE)
    form = sender.get(f"/m/{queue_id}/reply-all").text
    assert 'value="Bob &lt;bob@partner.test&gt;"' in form
    assert 'id="cc" name="cc" type="text" value="carol@partner.test"' in form
    assert "alice@example.test" not in form.split('name="to"')[1].split("</form>")[0] \
        .split('name="subject"')[0]
    assert 'value="Re: Numbers"' in form and "&gt; The numbers." in form
    response = _send(sender, to="Bob <bob@partner.test>", cc="carol@partner.test",
                     subject="Re: Numbers", body="ok", in_reply_to="<n1@partner.test>",
                     references="<n1@partner.test>")
    assert response.status_code == 303
    (sent_id,) = _queue_ids_from(store, ALICE)
    msg = _stored(store, sent_id)
    assert msg["In-Reply-To"] == "<n1@partner.test>" and msg["References"] == "<n1@partner.test>"
    assert [r.address for r in store.show(sent_id).entry.recipients] == \
        ["bob@partner.test", "carol@partner.test"]


def test_forward_as_attachment_only_of_the_users_own_mail(sender: TestClient,
                                                          store: Store) -> None:
    mine = deliver(store, text_message(ALICE, subject="Mine"), ALICE)
    theirs = deliver(store, text_message("bob@example.test", subject="Theirs"),
                     "bob@example.test")
    form = sender.get(f"/m/{mine}/forward?attach=1").text
    assert f'name="forward_of" value="{mine}"' in form and 'value="Fwd: Mine"' in form
    assert sender.get(f"/m/{theirs}/forward").status_code == 404
    assert _send(sender, to="x@partner.test", forward_of=theirs).status_code == 404
    assert _send(sender, to="x@partner.test", forward_of=mine,
                 subject="Fwd: Mine").status_code == 303
    (sent_id,) = _queue_ids_from(store, ALICE)
    parts = [p for p in _stored(store, sent_id).walk()
             if p.get_content_type() == "message/rfc822"]
    assert parts and parts[0].get_content()["Subject"] == "Mine"


def test_the_reader_offers_reply_reply_all_and_forward(sender: TestClient, store: Store) -> None:
    queue_id = deliver(store, text_message(ALICE), ALICE)
    page = sender.get(f"/m/{queue_id}").text
    for path in ("reply", "reply-all", "forward"):
        assert f'href="/m/{queue_id}/{path}"' in page
