"""The quarantine digest (spoolgate/webmail/digest.py): signed links, the message and its
links, the sender's once-a-day claim, and the /digest pages, on a real SQLite store with a
real intake (group committer) queueing the digest."""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import re
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
from starlette.testclient import TestClient

from spoolgate.intake.pipeline import Intake, IntakeSettings
from spoolgate.mail.envelope import ClientInfo, Envelope, IncomingMessage, Recipient
from spoolgate.mail.queueid import new_queue_id
from spoolgate.store.accounts import Accounts
from spoolgate.store.digest import DigestStore
from spoolgate.store.groupcommit import GroupCommitter
from spoolgate.store.mailbox import Mailbox
from spoolgate.store.senders import SenderRules
from spoolgate.store.store import Store
from spoolgate.webmail.app import WebmailSettings, create_app
from spoolgate.webmail.digest import (
    DigestEntry,
    DigestLink,
    DigestSender,
    LinkError,
    last_slot,
    link_actions,
    sign_link,
    verify_link,
)
from tests.unit.webmail.conftest import HASHER, Clock, csrf_of, sign_in
from tests.webmail_mail import deliver, text_message

ALICE, BOB = "alice@example.test", "bob@example.test"
KEY = b"k" * 32
VIRUS_SCAN = "action=quarantine score=0 symbols=- viruses=Eicar-Test scanners=clamav:0.002s"
UTC = ZoneInfo("UTC")


# -- tokens -------------------------------------------------------------------------------

def test_a_link_verifies_until_it_expires() -> None:
    link = DigestLink("release", "Q1", ALICE, 1000)
    token = sign_link(KEY, link)
    assert re.fullmatch(r"[A-Za-z0-9_\-.]+", token)
    assert verify_link(KEY, token, 999.0) == link
    with pytest.raises(LinkError) as expired:
        verify_link(KEY, token, 1000.0)
    assert expired.value.kind == "expired"


def test_an_altered_or_foreign_link_is_invalid() -> None:
    token = sign_link(KEY, DigestLink("delete", "Q1", ALICE, 1000))
    payload, mac = token.split(".")
    forged = sign_link(b"x" * 32, DigestLink("release", "Q1", ALICE, 1000)).split(".")[0]
    for bad in (f"{forged}.{mac}",                      # other fields, the old MAC
                sign_link(b"x" * 32, DigestLink("delete", "Q1", ALICE, 1000)),  # other key
                payload, f"{payload}.", f"{payload}.{mac[:-2]}", "!!.??", ""):
        with pytest.raises(LinkError) as invalid:
            verify_link(KEY, bad, 0.0)
        assert invalid.value.kind == "invalid"


def test_a_link_has_one_spelling_only() -> None:
    """Base64 forgives padding and the unused low bits of the last character; if those
    spellings verified, a used link could be replayed under a new hash."""
    token = sign_link(KEY, DigestLink("delete", "Q1", ALICE, 1000))
    payload, mac = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(mac[-1])
    sibling = alphabet[last ^ 1]  # 43 characters carry 258 bits for 256: the same bytes
    for variant in (f"{token}=", f"{payload}.{mac}==", f"{payload}.{mac[:-1]}{sibling}"):
        with pytest.raises(LinkError) as invalid:
            verify_link(KEY, variant, 0.0)
        assert invalid.value.kind == "invalid", variant


# -- the message's links ------------------------------------------------------------------

def _entry(virus: bool = False, sender: str = "x@partner.test") -> DigestEntry:
    return DigestEntry("Q1", sender, "X <x@partner.test>", "Offer", 0.0, virus)


def test_which_links_an_entry_gets() -> None:
    assert link_actions(_entry(), "spam") == ("release", "delete", "allow")
    assert link_actions(_entry(virus=True), "all") == ("delete",)  # never release a virus
    assert link_actions(_entry(), "none") == ("delete", "allow")
    assert link_actions(_entry(sender=""), "spam") == ("release", "delete")


def test_the_daily_slot_is_the_last_occurrence_of_the_hour() -> None:
    paris = ZoneInfo("Europe/Paris")
    at_nine = datetime.datetime(2026, 11, 29, 9, 0, tzinfo=paris).timestamp()
    assert last_slot(at_nine, 9, paris) == at_nine
    assert last_slot(at_nine - 1, 9, paris) == at_nine - 86400
    assert last_slot(at_nine + 3600, 8, paris) == at_nine - 3600


# -- sending ------------------------------------------------------------------------------

@pytest.fixture
def intake(store: Store) -> Iterator[Intake]:
    committer = GroupCommitter(store)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(_start(committer))
    yield Intake(IntakeSettings("mx.example.test", "node-a", 30), committer), loop
    loop.run_until_complete(committer.stop())
    loop.close()


async def _start(committer: GroupCommitter) -> None:
    committer.start()


def _quarantine(store: Store, to: str, subject: str, scan: str | None = None,
                at: float | None = None) -> str:
    data = text_message(to, subject=subject)
    if scan is None:
        return deliver(store, data, to, quarantined=True, at=at)
    queue_id = new_queue_id()
    envelope = Envelope("x@partner.test", (Recipient(to),), ClientInfo("192.0.2.7", "mx"))
    store.commit_incoming([IncomingMessage(queue_id, envelope, data, at or 0.0, "node-a",
                                           (("scanned", scan),), quarantined=True)])
    return queue_id


def _sender(store: Store, intake: Intake, clock: Clock, **options) -> DigestSender:
    options.setdefault("user_release", {"example.test": "spam"})
    return DigestSender(store, intake.accept, public_url="https://mail-gw.example.test/",
                        hour=8, zone=UTC, clock=clock, **options)


def _digests(store: Store, to: str) -> list[email.message.EmailMessage]:
    found = []
    for entry in store.list_queue():
        data = store.message_data(entry.queue_id) or b""
        message = email.message_from_bytes(data, policy=email.policy.default)
        if message["Auto-Submitted"] == "auto-generated" and message["To"] == to:
            found.append(message)
    return found


def test_a_digest_lists_new_quarantined_mail_with_its_links_once_a_day(
        store: Store, intake, clock: Clock) -> None:
    accepted, loop = intake
    Accounts(store).set_digest(ALICE, True)
    spam = _quarantine(store, ALICE, "Cheap watches", at=clock.now - 60)
    virus = _quarantine(store, ALICE, "Invoice attached", VIRUS_SCAN, at=clock.now - 30)
    _quarantine(store, BOB, "Not alice's", at=clock.now - 30)
    sender = _sender(store, accepted, clock)

    assert loop.run_until_complete(sender.send_due()) == 1
    assert loop.run_until_complete(sender.send_due()) == 0  # claimed: not twice a day

    (digest,) = _digests(store, ALICE)
    assert digest["From"] == "Mail gateway <postmaster@example.test>"
    assert digest["Subject"] == "Quarantine summary: 2 new messages"
    text = digest.get_body(("plain",)).get_content()
    html = digest.get_body(("html",)).get_content()
    assert "Cheap watches" in text and "Invoice attached" in text and "Not alice's" not in text
    links = re.findall(r"(Release|Delete|Always allow sender): (\S+)", text)
    key = DigestStore(store).secret()
    decoded = {(verify_link(key, url.rpartition("/")[2], clock.now).action,
                verify_link(key, url.rpartition("/")[2], clock.now).queue_id) for _, url in links}
    assert decoded == {("release", spam), ("delete", spam), ("allow", spam),
                       ("delete", virus)}
    assert all(url.startswith("https://mail-gw.example.test/digest/") for _, url in links)
    assert all(url.replace("&", "&amp;") in html for _, url in links)
    # The links last link_days (7 by default).
    expires = verify_link(key, links[0][1].rpartition("/")[2], clock.now).expires_at
    assert expires == int(clock.now + 7 * 86400)


def test_the_next_days_digest_lists_only_what_arrived_since(store: Store, intake,
                                                             clock: Clock) -> None:
    accepted, loop = intake
    Accounts(store).set_digest(ALICE, True)
    _quarantine(store, ALICE, "Yesterday's spam", at=clock.now - 60)
    sender = _sender(store, accepted, clock)
    assert loop.run_until_complete(sender.send_due()) == 1

    clock.now += 86400
    assert loop.run_until_complete(sender.send_due()) == 0  # nothing new: nothing sent
    _quarantine(store, ALICE, "Today's spam", at=clock.now + 10)
    clock.now += 86400 + 60
    assert loop.run_until_complete(sender.send_due()) == 1

    latest = _digests(store, ALICE)[-1].get_body(("plain",)).get_content()
    assert "Today's spam" in latest and "Yesterday's spam" not in latest


def test_a_user_who_did_not_opt_in_or_is_disabled_gets_nothing(store: Store, intake,
                                                               clock: Clock) -> None:
    accepted, loop = intake
    _quarantine(store, ALICE, "Spam", at=clock.now - 60)
    _quarantine(store, BOB, "Spam", at=clock.now - 60)
    Accounts(store).set_digest(BOB, True)
    Accounts(store).set_disabled(BOB, True)
    assert loop.run_until_complete(_sender(store, accepted, clock).send_due(force=True)) == 0
    assert _digests(store, ALICE) == [] and _digests(store, BOB) == []


# -- the pages ----------------------------------------------------------------------------

@pytest.fixture
def web(store: Store, settings: WebmailSettings, clock: Clock) -> Iterator[TestClient]:
    """A browser with no session, as after clicking a link in a mail client."""
    app = create_app(store, settings, clock=clock, hasher=HASHER,
                     user_release={"example.test": "spam"})
    with TestClient(app, follow_redirects=False) as client:
        yield client


def _link(store: Store, clock: Clock, action: str, queue_id: str, user: str = ALICE,
          days: float = 7) -> str:
    token = sign_link(DigestStore(store).secret(),
                      DigestLink(action, queue_id, user, int(clock.now + days * 86400)))
    return f"/digest/{token}"


def _confirm(client: TestClient, path: str) -> object:
    page = client.get(path)
    assert page.status_code == 200 and 'id="confirm"' in page.text
    return client.post(path, data={"csrf": csrf_of(page.text)})


def _state(store: Store, queue_id: str, who: str = ALICE) -> str:
    return {r.address: r.state for r in store.show(queue_id).entry.recipients}[who]


def test_opening_a_release_link_changes_nothing_and_the_button_releases_once(
        web: TestClient, store: Store, clock: Clock) -> None:
    queue_id = _quarantine(store, ALICE, "Signed contract")
    path = _link(store, clock, "release", queue_id)

    page = web.get(path)
    assert page.status_code == 200 and "Signed contract" in page.text
    assert "Release" in page.text and _state(store, queue_id) == "quarantined"
    done = web.post(path, data={"csrf": csrf_of(page.text)})

    assert done.status_code == 200 and "It will be delivered" in done.text
    assert _state(store, queue_id) == "queued"
    released = [e for e in store.show(queue_id).events if e.kind == "released"]
    assert released and f"{ALICE} (digest link)" in released[0].detail
    again = web.get(path)
    assert again.status_code == 410 and "already used" in again.text
    assert web.post(path, data={"csrf": csrf_of(page.text)}).status_code == 410


def test_the_post_needs_the_pages_csrf_token(web: TestClient, store: Store,
                                            clock: Clock) -> None:
    queue_id = _quarantine(store, ALICE, "Signed contract")
    path = _link(store, clock, "release", queue_id)
    web.get(path)
    assert web.post(path, data={"csrf": "forged"}).status_code == 403
    assert _state(store, queue_id) == "quarantined"


def test_a_delete_link_moves_the_users_copy_to_trash(web: TestClient, store: Store,
                                                      clock: Clock) -> None:
    queue_id = deliver(store, text_message(ALICE), ALICE, BOB, quarantined=True)
    done = _confirm(web, _link(store, clock, "delete", queue_id))
    assert "in your Trash" in done.text
    mailbox = Mailbox(store, "node-a")
    assert mailbox.item(ALICE, queue_id).trashed  # as the webmail's delete does
    assert not mailbox.item(BOB, queue_id).trashed
    assert _state(store, queue_id, BOB) == "quarantined"


def test_an_allow_link_adds_the_users_own_rule(web: TestClient, store: Store,
                                               clock: Clock) -> None:
    queue_id = _quarantine(store, ALICE, "Newsletter")
    done = _confirm(web, _link(store, clock, "allow", queue_id))
    assert "bob@partner.test" in done.text
    assert [(r.scope, r.sender, r.action) for r in SenderRules(store).list()] == [
        (ALICE, "bob@partner.test", "allow")]
    assert _state(store, queue_id) == "quarantined"


def test_expired_tampered_and_disabled_links_get_calm_pages(web: TestClient, store: Store,
                                                            clock: Clock) -> None:
    queue_id = _quarantine(store, ALICE, "Spam")
    expired = _link(store, clock, "release", queue_id, days=-1)
    page = web.get(expired)
    assert page.status_code == 410 and "expired" in page.text and 'id="confirm"' not in page.text

    good = _link(store, clock, "release", queue_id)
    tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    page = web.get(tampered)
    assert page.status_code == 400 and "does not work" in page.text
    assert "Traceback" not in page.text and "HMAC" not in page.text

    Accounts(store).set_disabled(ALICE, True)
    page = web.get(good)
    assert page.status_code == 403 and "can no longer be used" in page.text
    assert web.post(good, data={"csrf": "x"}).status_code == 403
    assert _state(store, queue_id) == "quarantined"


def test_a_release_link_for_a_virus_is_refused_by_the_domain_policy(
        web: TestClient, store: Store, clock: Clock) -> None:
    queue_id = _quarantine(store, ALICE, "Invoice", VIRUS_SCAN)
    done = _confirm(web, _link(store, clock, "release", queue_id))
    assert "Only your administrator" in done.text
    assert _state(store, queue_id) == "quarantined"


def test_a_link_for_a_message_no_longer_in_quarantine_says_so(web: TestClient, store: Store,
                                                              clock: Clock) -> None:
    queue_id = deliver(store, text_message(ALICE), ALICE)  # in the inbox
    page = web.get(_link(store, clock, "release", queue_id))
    assert page.status_code == 410 and "no longer in your quarantine" in page.text


def test_the_quarantine_page_opts_in_and_out(store: Store, settings: WebmailSettings,
                                             clock: Clock) -> None:
    client = TestClient(create_app(store, settings, clock=clock, hasher=HASHER),
                        follow_redirects=False)
    assert sign_in(client).status_code == 303
    page = client.get("/quarantine")
    assert "Email me a daily summary of my quarantine" in page.text and " checked" not in page.text
    done = client.post("/quarantine/digest", data={"csrf": csrf_of(page.text), "digest": "on"})
    assert done.headers["location"] == "/quarantine?notice=digest-on"
    assert Accounts(store).get_user(ALICE).digest is True
    assert " checked" in client.get("/quarantine").text
    client.post("/quarantine/digest", data={"csrf": csrf_of(page.text)})
    assert Accounts(store).get_user(ALICE).digest is False
    client.close()
