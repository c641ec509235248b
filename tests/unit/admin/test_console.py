"""The admin console (spoolgate/admin) on a real SQLite store: roles, scope, actions, audit.

The webmail's test app with the console's routes; a domain admin of one domain tries the
other domain's URLs directly.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from spoolgate.admin.actions import make_releaser
from spoolgate.admin.console import console_routes
from spoolgate.config import Settings, load_settings
from spoolgate.store.accounts import Accounts
from spoolgate.store.audit import AuditLog
from spoolgate.store.queue import Queue
from spoolgate.store.store import Store
from spoolgate.webmail.app import WebmailSettings, create_app
from spoolgate.webmail.users import add_user
from tests.unit.webmail.conftest import HASHER, PASSWORD, Clock, csrf_of, sign_in
from tests.webmail_mail import deliver, text_message

ADMIN, OTHER_ADMIN = "root@example.test", "boss@other.test"
ALICE, OLIVER = "alice@example.test", "oliver@other.test"
CONFIG = """\
[smtp]
hostname = "mx.example.test"
[store]
url = "sqlite:///{folder}/unused.db"
[[domains]]
name = "example.test"
route = "smtp://127.0.0.1:2526"
[[domains]]
name = "other.test"
route = "smtp://127.0.0.1:2527"
"""


@pytest.fixture
def gateway_settings(folder: Path) -> Settings:
    path = folder / "spoolgate.toml"
    path.write_text(CONFIG.format(folder=folder))
    return load_settings(path)


@pytest.fixture
def console(store: Store, settings: WebmailSettings, clock: Clock,
            gateway_settings: Settings) -> Iterator[callable]:
    domains = {"example.test": "smtp://127.0.0.1:2526", "other.test": "smtp://127.0.0.1:2527"}
    add_user(store, ADMIN, PASSWORD, domains=domains, hasher=HASHER)
    add_user(store, OTHER_ADMIN, PASSWORD, domains=domains, hasher=HASHER)
    add_user(store, OLIVER, PASSWORD, domains=domains, hasher=HASHER)
    _set_role(store, ADMIN, "admin")
    _set_role(store, OTHER_ADMIN, "domain-admin", "other.test")
    clock.now = time.time()  # sessions must begin after the accounts were made
    clients: list[TestClient] = []

    releaser = make_releaser(Queue(store, "console"), None)  # no scanners: no rescan

    def client_for(email: str) -> TestClient:
        app = create_app(store, settings, clock=clock, hasher=HASHER,
                         extra_routes=console_routes(gateway_settings, releaser))
        client = TestClient(app, follow_redirects=False)
        clients.append(client)
        assert sign_in(client, email).status_code == 303
        return client

    yield client_for
    for client in clients:
        client.close()


def _set_role(store: Store, email: str, role: str, *domains: str) -> None:
    from spoolgate.store import schema
    with store.writing() as conn:
        conn.execute(schema.users.update().where(schema.users.c.email == email)
                     .values(role=role, domains="\n".join(domains)))
    user = Accounts(store).get_user(email)
    assert user is not None and user.role == role and user.domains == domains


def _state(store: Store, queue_id: str, address: str) -> str:
    return {r.address: r.state for r in store.show(queue_id).entry.recipients}[address]


def _act(client: TestClient, verb: str, *queue_ids: str, back: str = "/admin/queue"):
    token = csrf_of(client.get("/admin/queue").text)
    return client.post("/admin/act", data={"csrf": token, "verb": verb, "back": back,
                                           "id": list(queue_ids)})


def test_a_plain_user_gets_403_everywhere_in_the_console(console, store: Store) -> None:
    alice = console(ALICE)
    queue_id = deliver(store, text_message(ALICE), ALICE)
    for path in ("/admin", "/admin/queue", "/admin/quarantine", f"/admin/m/{queue_id}",
                 "/admin/track?sender=bob", "/admin/audit"):
        assert alice.get(path).status_code == 403, path
    token = csrf_of(alice.get("/inbox").text)
    refused = alice.post("/admin/act", data={"csrf": token, "verb": "hold", "id": queue_id})
    assert refused.status_code == 403
    assert _state(store, queue_id, ALICE) == "queued"
    assert "/admin" not in alice.get("/inbox").text  # no console link for a user


def test_signed_out_requests_go_to_sign_in(store: Store, settings, clock,
                                          gateway_settings) -> None:
    app = create_app(store, settings, clock=clock, hasher=HASHER,
                     extra_routes=console_routes(gateway_settings))
    with TestClient(app, follow_redirects=False) as anonymous:
        answer = anonymous.get("/admin/queue")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login")


def test_the_admin_sees_every_domain_and_holds_and_releases(console, store: Store) -> None:
    admin = console(ADMIN)
    ours = deliver(store, text_message(ALICE, subject="For Alice"), ALICE)
    theirs = deliver(store, text_message(OLIVER, subject="For Oliver"), OLIVER)
    page = admin.get("/admin/queue").text
    assert ours in page and theirs in page and "For Oliver" in page
    assert "Console" in admin.get("/inbox").text

    held = _act(admin, "hold", ours, theirs)
    assert held.status_code == 303
    assert "done=hold&n=2&refused=0" in held.headers["location"]
    assert (_state(store, ours, ALICE), _state(store, theirs, OLIVER)) == ("held", "held")
    assert "2 recipient(s) put on hold." in admin.get(held.headers["location"]).text

    assert "done=release&n=1" in _act(admin, "release", ours).headers["location"]
    assert _state(store, ours, ALICE) == "deferred"
    entries = AuditLog(store).recent()
    assert [(e.actor, e.action, e.target) for e in entries[:3]] == [
        (ADMIN, "queue.release", ours), (ADMIN, "queue.hold", theirs), (ADMIN, "queue.hold", ours)]
    assert entries[0].client_ip == "testclient"
    events = [e for e in store.show(ours).events if e.kind in ("held", "released")]
    assert [e.detail for e in events] == [f"by {ADMIN} (console)"] * 2


def test_a_domain_admin_sees_and_acts_on_their_domain_only(console, store: Store) -> None:
    boss = console(OTHER_ADMIN)
    ours = deliver(store, text_message(ALICE, subject="Secret for Alice"), ALICE)
    theirs = deliver(store, text_message(OLIVER, subject="For Oliver"), OLIVER)
    shared = deliver(store, text_message(OLIVER, subject="Both"), ALICE, OLIVER)

    page = boss.get("/admin/queue").text
    assert theirs in page and shared in page and ours not in page
    assert "Secret for Alice" not in page and ALICE not in page
    assert boss.get(f"/admin/m/{ours}").status_code == 404
    detail = boss.get(f"/admin/m/{shared}").text
    assert OLIVER in detail and ALICE not in detail

    answer = _act(boss, "delete", ours, shared)
    assert "done=delete&n=1&refused=1" in answer.headers["location"]
    assert _state(store, ours, ALICE) == "queued"
    assert _state(store, shared, ALICE) == "queued"       # not theirs: untouched
    assert _state(store, shared, OLIVER) == "deleted"
    # Bounce answers the sender for every recipient: not while one is someone else's.
    assert "done=bounce&n=0&refused=1" in _act(boss, "bounce", shared).headers["location"]
    assert _state(store, shared, ALICE) == "queued"
    tracked = boss.get("/admin/track", params={"subject": "for"}).text
    assert theirs in tracked and ours not in tracked
    assert [e.actor for e in AuditLog(store).recent()] == [OTHER_ADMIN]
    assert AuditLog(store).recent()[0].target == shared


def test_bounce_fails_the_message_and_queues_a_notice(console, store: Store) -> None:
    admin = console(ADMIN)
    queue_id = deliver(store, text_message(ALICE), ALICE)
    before = store.count_messages()
    assert "done=bounce&n=1" in _act(admin, "bounce", queue_id).headers["location"]
    assert _state(store, queue_id, ALICE) == "failed"
    assert store.count_messages() == before + 1  # the DSN to bob@partner.test


def test_a_post_without_the_csrf_token_is_refused(console, store: Store) -> None:
    admin = console(ADMIN)
    queue_id = deliver(store, text_message(ALICE), ALICE)
    answer = admin.post("/admin/act", data={"verb": "hold", "id": queue_id})
    assert answer.status_code == 403
    answer = admin.post("/admin/act", data={"verb": "hold", "id": queue_id, "csrf": "forged"})
    assert answer.status_code == 403
    assert _state(store, queue_id, ALICE) == "queued"
    assert AuditLog(store).recent() == []


def test_the_back_link_stays_in_the_console(console, store: Store) -> None:
    admin = console(ADMIN)
    queue_id = deliver(store, text_message(ALICE), ALICE)
    answer = _act(admin, "hold", queue_id, back="https://evil.test/admin")
    assert answer.headers["location"].startswith("/admin/queue?")
    answer = _act(admin, "hold", queue_id, back="//evil.test/admin")
    assert answer.headers["location"].startswith("/admin/queue?")


def test_filters_narrow_the_queue(console, store: Store, clock: Clock) -> None:
    admin = console(ADMIN)
    old = deliver(store, text_message(ALICE, subject="Old"), ALICE, at=clock.now - 7200)
    new = deliver(store, text_message(OLIVER, subject="New"), OLIVER, at=clock.now - 60)
    page = admin.get("/admin/queue", params={"older": "60"}).text
    assert old in page and new not in page
    page = admin.get("/admin/queue", params={"domain": "other.test"}).text
    assert new in page and old not in page
    page = admin.get("/admin/queue", params={"recipient": "ALICE@"}).text
    assert old in page and new not in page
    page = admin.get("/admin/queue", params={"sender": "100%_"}).text  # LIKE escaped
    assert old not in page and new not in page


def test_the_message_page_shows_the_timeline(console, store: Store) -> None:
    admin = console(ADMIN)
    queue_id = deliver(store, text_message(ALICE, subject="Timeline <b>x</b>"), ALICE,
                       quarantined=True)
    page = admin.get(f"/admin/m/{queue_id}").text
    assert "Timeline &lt;b&gt;x&lt;/b&gt;" in page
    assert re.search(r"<strong>accepted</strong>.*<strong>scanned</strong>", page, re.S)
    assert "action=quarantine" in page
    assert admin.get("/admin/m/NOTAQUEUEID").status_code == 404
    assert admin.get("/admin/m/0000000000000Z").status_code == 404


def test_tracking_finds_by_message_id_and_time(console, store: Store, clock: Clock) -> None:
    admin = console(ADMIN)
    queue_id = deliver(store, text_message(ALICE, subject="Invoice 42"), ALICE)
    message_id = store.show(queue_id) and _message_id(store, queue_id)
    page = admin.get("/admin/track", params={"message_id": message_id.strip("<>")}).text
    assert queue_id in page and "Invoice 42" in page
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(clock.now + 86400 * 2))
    assert queue_id not in admin.get("/admin/track", params={"since": tomorrow}).text
    bad = admin.get("/admin/track", params={"since": "yesterday"}).text
    assert "From: write a date as" in bad


def _message_id(store: Store, queue_id: str) -> str:
    from spoolgate.mime.parse import header_summary
    return header_summary(store.message_data(queue_id))[1]


def test_the_dashboard_counts_what_the_store_holds(console, store: Store, clock: Clock) -> None:
    admin = console(ADMIN)
    for _ in range(3):
        deliver(store, text_message(ALICE), ALICE, at=clock.now - 30)
    deliver(store, text_message(OLIVER), OLIVER, at=clock.now - 30, quarantined=True)
    page = admin.get("/admin").text
    assert "<svg" in page and "<script" not in page.split("</head>")[1]
    rows = re.findall(r"<tr><td>(\d\d:\d\d)</td><td>(\d+)</td>", page)
    assert sum(int(accepted) for _, accepted in rows) == 4
    assert re.search(r"<td>example.test</td><td>queued</td><td><a [^>]*>3</a>", page)
    assert re.search(r"<dt>spam</dt><dd>1</dd>", page)
    boss = console(OTHER_ADMIN)
    page = boss.get("/admin").text
    rows = re.findall(r"<tr><td>(\d\d:\d\d)</td><td>(\d+)</td>", page)
    assert sum(int(accepted) for _, accepted in rows) == 1
    assert "example.test" not in page.split("Waiting now")[1]


def test_the_dashboard_warns_while_no_antivirus_engine_scans_the_mail(
        console, gateway_settings: Settings) -> None:
    page = console(ADMIN).get("/admin").text
    (banner,) = re.findall(r'<p class="banner" role="alert">(.*?)</p>', page)
    assert "No anti-virus: no anti-virus engine scans the mail of example.test, other.test" \
        in banner and "only the EICAR test file" in banner
    assert f"<code>[scan].scanners</code> in <code>{gateway_settings.source}</code>" in banner
    boss = console(OTHER_ADMIN).get("/admin").text  # a domain admin sees their domains only
    (banner,) = re.findall(r'<p class="banner" role="alert">(.*?)</p>', boss)
    assert "mail of other.test (" in banner and "example.test" not in banner


def test_the_dashboard_has_no_antivirus_warning_with_clamav(
        store: Store, settings: WebmailSettings, clock: Clock, folder: Path) -> None:
    path = folder / "clamav.toml"
    path.write_text(CONFIG.format(folder=folder) + '[scan]\nscanners = ["builtin", "clamav"]\n')
    add_user(store, ADMIN, PASSWORD, domains={"example.test": "x"}, hasher=HASHER)
    _set_role(store, ADMIN, "admin")
    clock.now = time.time()
    app = create_app(store, settings, clock=clock, hasher=HASHER,
                     extra_routes=console_routes(load_settings(path)))
    with TestClient(app, follow_redirects=False) as client:
        assert sign_in(client, ADMIN).status_code == 303
        page = client.get("/admin")
    assert page.status_code == 200 and "Routes" in page.text
    assert 'class="banner"' not in page.text and "anti-virus" not in page.text


def test_release_from_quarantine_in_scope_only(console, store: Store) -> None:
    admin, boss = console(ADMIN), console(OTHER_ADMIN)
    ours = deliver(store, text_message(ALICE), ALICE, quarantined=True)
    shared = deliver(store, text_message(OLIVER), ALICE, OLIVER, quarantined=True)
    page = admin.get("/admin/quarantine").text
    assert ours in page and shared in page and "Release from quarantine" in page
    assert "score 12: SPAM_WORDS(12)" in page  # why, from the scan event

    answer = _act(boss, "release-quarantine", shared, back="/admin/quarantine")
    assert "done=release-quarantine&n=0&refused=1" in answer.headers["location"]
    assert _state(store, shared, OLIVER) == "quarantined"  # Alice's copy is not theirs

    answer = _act(admin, "release-quarantine", ours, shared, back="/admin/quarantine")
    assert "done=release-quarantine&n=3&refused=0" in answer.headers["location"]
    assert {_state(store, ours, ALICE), _state(store, shared, ALICE),
            _state(store, shared, OLIVER)} == {"queued"}
    released = [e for e in store.show(ours).events if e.kind == "released"]
    assert released and f"released by {ADMIN} (console)" in released[0].detail
    assert [e.action for e in AuditLog(store).recent()[:2]] == ["quarantine.release"] * 2
