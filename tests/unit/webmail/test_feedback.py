"""Release from quarantine, spam and not spam in spoolgate/webmail/feedback.py, on a real
SQLite store with a real Bayes classifier over it and the built-in scanner (a real clamd
for the virus still found on the rescan)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from starlette.testclient import TestClient

from spoolgate.intake.scanning import Scanning
from spoolgate.mail.envelope import ClientInfo, Envelope, IncomingMessage, Recipient
from spoolgate.mail.queueid import new_queue_id
from spoolgate.scan.bayes import BayesClassifier
from spoolgate.scan.builtin import BuiltinScanner
from spoolgate.scan.clamav import ClamavScanner
from spoolgate.scan.pipeline import ScanPipeline
from spoolgate.scan.policy import ScanPolicy
from spoolgate.store.bayes import BayesStore
from spoolgate.store.store import Store
from spoolgate.webmail.app import WebmailSettings, create_app
from tests.clamd import EICAR, Clamd
from tests.gateway_process import free_port
from tests.integration.store.messages import recipient_states
from tests.unit.webmail.conftest import HASHER, Clock, csrf_of, sign_in
from tests.webmail_mail import deliver, text_message

ALICE, BOB = "alice@example.test", "bob@example.test"
VIRUS_SCAN = ("action=quarantine score=0 symbols=- viruses=Spoolgate.Test.EICAR.UNOFFICIAL "
              "scanners=clamav:0.002s")
SUBJECT_TOKENS = ["subject:zanzibar", "subject:pills"]

App = Callable[..., TestClient]


@pytest.fixture
def classifier(store: Store) -> Iterator[BayesClassifier]:
    bayes = BayesStore(store.engine, store.write_lock)
    yield BayesClassifier(bayes)
    bayes.close()


def _scanning(*scanners) -> Scanning:
    return Scanning(ScanPipeline(list(scanners) or [BuiltinScanner()], 30.0),
                    {"example.test": ScanPolicy()})


@pytest.fixture
def app(store: Store, settings: WebmailSettings, clock: Clock,
        classifier: BayesClassifier) -> Iterator[App]:
    """A signed-in alice on a webmail with the given options (scanning and the classifier
    by default)."""
    made: list[TestClient] = []

    def make(**options) -> TestClient:
        options.setdefault("scanning", _scanning())
        options.setdefault("classifier", classifier)
        client = TestClient(create_app(store, settings, clock=clock, hasher=HASHER, **options),
                            follow_redirects=False)
        made.append(client)
        assert sign_in(client).status_code == 303
        return client

    yield make
    for client in made:
        client.close()


def _message(subject: str = "Cheap pills zanzibar") -> bytes:
    return text_message(ALICE, subject=subject)


def _quarantined(store: Store, data: bytes, *recipients: str, scan: str | None = None) -> str:
    if scan is None:
        return deliver(store, data, *recipients, quarantined=True)
    queue_id = new_queue_id()
    envelope = Envelope("x@partner.test", tuple(Recipient(r) for r in recipients),
                        ClientInfo("192.0.2.7", "mx.partner.test"))
    store.commit_incoming([IncomingMessage(queue_id, envelope, data, 0.0, "node-a",
                                           (("accepted", "from=<x@partner.test>"),
                                            ("scanned", scan)), quarantined=True)])
    return queue_id


def _post(client: TestClient, path: str) -> object:
    return client.post(path, data={"csrf": csrf_of(client.get("/inbox").text)})


def _kinds(store: Store, queue_id: str) -> list[str]:
    return [e.kind for e in store.show(queue_id).events]


def _counts(classifier: BayesClassifier) -> dict[str, tuple[int, int]]:
    return classifier.store.counts(SUBJECT_TOKENS)


def test_spam_learns_and_moves_a_waiting_message_to_trash_undelivered(
        app: App, store: Store, classifier: BayesClassifier) -> None:
    client = app()
    queue_id = deliver(store, _message(), ALICE)
    assert _counts(classifier) == {}

    page = _post(client, f"/m/{queue_id}/spam")

    assert page.status_code == 303 and page.headers["location"] == "/inbox?notice=spam"
    assert _counts(classifier) == {t: (1, 0) for t in SUBJECT_TOKENS}
    assert classifier.store.totals() == (1, 0)
    assert recipient_states(store, queue_id) == {ALICE: "deleted"}  # never delivered
    assert queue_id in client.get("/trash").text
    assert "Marked as spam and moved to Trash" in client.get(page.headers["location"]).text
    event = next(e for e in store.show(queue_id).events if e.kind == "marked-spam")
    assert (event.recipient, event.detail) == (
        ALICE, f"marked as spam by {ALICE} in the webmail (learned)")


def test_not_spam_in_the_inbox_learns_ham_and_leaves_it(app: App, store: Store,
                                                        classifier: BayesClassifier) -> None:
    client = app()
    queue_id = deliver(store, _message(), ALICE)

    page = _post(client, f"/m/{queue_id}/not-spam")

    assert page.headers["location"] == f"/m/{queue_id}?notice=ham"
    assert "Marked as not spam." in client.get(page.headers["location"]).text
    assert _counts(classifier) == {t: (0, 1) for t in SUBJECT_TOKENS}
    assert recipient_states(store, queue_id) == {ALICE: "queued"}
    assert _kinds(store, queue_id)[-1] == "marked-ham"


def test_release_rescans_and_releases_only_the_users_copy(app: App, store: Store) -> None:
    client = app()
    queue_id = _quarantined(store, _message(), ALICE, BOB)
    reader = client.get(f"/m/{queue_id}").text
    assert f'action="/m/{queue_id}/release"' in reader and "Release to my mail server" in reader

    page = _post(client, f"/m/{queue_id}/release")

    assert page.headers["location"] == "/quarantine?notice=released"
    listing = client.get(page.headers["location"]).text
    assert "Released: it will be delivered to your mail server." in listing
    assert queue_id not in listing
    assert recipient_states(store, queue_id) == {ALICE: "queued", BOB: "quarantined"}
    (event,) = [e for e in store.show(queue_id).events if e.kind == "released"]
    assert event.recipient == ALICE
    assert event.detail.startswith(f"released by {ALICE} after a rescan: action=pass")


def test_not_spam_on_a_quarantined_message_learns_ham_and_releases_it(
        app: App, store: Store, classifier: BayesClassifier) -> None:
    client = app()
    queue_id = _quarantined(store, _message(), ALICE)

    page = _post(client, f"/m/{queue_id}/not-spam")

    assert page.headers["location"] == "/quarantine?notice=released-ham"
    assert recipient_states(store, queue_id) == {ALICE: "queued"}
    assert _counts(classifier) == {t: (0, 1) for t in SUBJECT_TOKENS}
    assert _kinds(store, queue_id)[-2:] == ["released", "marked-ham"]


def test_spam_on_a_quarantined_message_trashes_it_and_it_stays_undelivered(
        app: App, store: Store, classifier: BayesClassifier) -> None:
    client = app()
    queue_id = _quarantined(store, _message(), ALICE)

    page = _post(client, f"/m/{queue_id}/spam")

    assert page.headers["location"] == "/quarantine?notice=spam"
    assert recipient_states(store, queue_id) == {ALICE: "quarantined"}
    assert queue_id in client.get("/trash").text
    assert queue_id not in client.get("/quarantine").text
    assert classifier.store.totals() == (1, 0)


def test_a_virus_is_not_the_users_to_release(app: App, store: Store,
                                             classifier: BayesClassifier) -> None:
    client = app()
    queue_id = _quarantined(store, _message(), ALICE, scan=VIRUS_SCAN)
    reader = client.get(f"/m/{queue_id}").text
    assert "/release" not in reader and "/not-spam" not in reader
    assert "To release this message, ask your administrator." in reader

    for verb in ("release", "not-spam"):
        page = _post(client, f"/m/{queue_id}/{verb}")
        assert page.headers["location"] == f"/m/{queue_id}?alert=not-allowed", verb
    assert "Only your administrator can release this message" in client.get(
        f"/m/{queue_id}?alert=not-allowed").text
    assert recipient_states(store, queue_id) == {ALICE: "quarantined"}
    assert classifier.store.totals() == (0, 0)  # a refused "not spam" teaches nothing


def test_user_release_none_refuses_even_spam(app: App, store: Store) -> None:
    client = app(user_release={"example.test": "none"})
    queue_id = _quarantined(store, _message(), ALICE)
    assert "ask your administrator" in client.get(f"/m/{queue_id}").text

    page = _post(client, f"/m/{queue_id}/release")

    assert page.headers["location"] == f"/m/{queue_id}?alert=not-allowed"
    assert recipient_states(store, queue_id) == {ALICE: "quarantined"}


def test_scanning_unavailable_keeps_it_and_says_to_try_again(app: App, store: Store) -> None:
    closed = ClamavScanner(f"tcp:127.0.0.1:{free_port()}")  # nothing listens there
    client = app(scanning=_scanning(closed))
    queue_id = _quarantined(store, _message(), ALICE)

    page = _post(client, f"/m/{queue_id}/release")

    assert page.headers["location"] == f"/m/{queue_id}?alert=unavailable"
    shown = client.get(page.headers["location"]).text
    assert 'role="alert">Scanning is unavailable, try again in a few minutes.' in shown
    assert recipient_states(store, queue_id) == {ALICE: "quarantined"}


@pytest.mark.integration
def test_a_virus_still_found_on_the_rescan_is_refused(app: App, store: Store,
                                                      tmp_path_factory) -> None:
    with Clamd(tmp_path_factory.mktemp("clamd"), free_port()) as clamd:
        client = app(scanning=_scanning(ClamavScanner(clamd.address)),
                     user_release={"example.test": "all"})
        data = text_message(ALICE, subject="Invoice", body=EICAR.decode() + "\n")
        queue_id = _quarantined(store, data, ALICE, scan=VIRUS_SCAN)

        page = _post(client, f"/m/{queue_id}/release")

    assert page.headers["location"] == f"/m/{queue_id}?alert=dangerous"
    assert "It still looks dangerous: ask your administrator." in client.get(
        page.headers["location"]).text
    assert recipient_states(store, queue_id) == {ALICE: "quarantined"}
    assert _kinds(store, queue_id)[-1] == "rescanned"


def test_without_scanning_or_classifier_the_buttons_still_act(app: App, store: Store) -> None:
    client = app(scanning=None, classifier=None)
    held = _quarantined(store, _message(), ALICE)
    waiting = deliver(store, _message("Other"), ALICE)

    assert _post(client, f"/m/{held}/release").headers["location"] == \
        "/quarantine?notice=released"
    assert _post(client, f"/m/{waiting}/spam").headers["location"] == "/inbox?notice=spam"

    released = next(e for e in store.show(held).events if e.kind == "released")
    assert released.detail == f"released by {ALICE} without a rescan (scanning is off)"
    assert recipient_states(store, waiting) == {ALICE: "deleted"}
    assert store.show(waiting).events[-2].detail.endswith("(no classifier configured)")


def test_another_users_message_is_404(app: App, store: Store) -> None:
    client = app()
    theirs = _quarantined(store, text_message(BOB), BOB)
    for verb in ("release", "spam", "not-spam"):
        assert _post(client, f"/m/{theirs}/{verb}").status_code == 404, verb
    assert recipient_states(store, theirs) == {BOB: "quarantined"}
    assert _kinds(store, theirs) == ["accepted", "scanned"]


def test_without_the_csrf_token_nothing_happens(app: App, store: Store,
                                                classifier: BayesClassifier) -> None:
    client = app()
    held = _quarantined(store, _message(), ALICE)
    for verb in ("release", "spam", "not-spam"):
        assert client.post(f"/m/{held}/{verb}", data={}).status_code == 403, verb
        assert client.post(f"/m/{held}/{verb}",
                           data={"csrf": "forged"}).status_code == 403, verb
    assert recipient_states(store, held) == {ALICE: "quarantined"}
    assert classifier.store.totals() == (0, 0)
    assert held not in client.get("/trash").text


def test_the_reader_offers_the_buttons_that_apply(app: App, store: Store) -> None:
    client = app()
    waiting = deliver(store, _message(), ALICE)
    reader = client.get(f"/m/{waiting}").text
    assert "/release" not in reader
    assert f'action="/m/{waiting}/spam"' in reader and f'action="/m/{waiting}/not-spam"' in reader
    _post(client, f"/m/{waiting}/delete")
    trashed = client.get(f"/m/{waiting}").text
    assert "/spam" not in trashed and "/release" not in trashed

