"""Every state-changing endpoint of the webmail and the console refuses a POST without the
session's CSRF token, and every console endpoint refuses a signed-in plain user; found by
walking the app's route table, so a route added later is covered without being listed."""

from __future__ import annotations

import re
import time

import sqlalchemy as sa
from starlette.routing import Route
from starlette.testclient import TestClient

from spoolgate.admin.actions import make_releaser
from spoolgate.admin.console import console_routes
from spoolgate.store import schema
from spoolgate.store.queue import Queue
from spoolgate.store.store import Store
from spoolgate.webmail.app import create_app
from spoolgate.webmail.users import add_user
from tests.unit.admin.test_console import _set_role, gateway_settings  # noqa: F401
from tests.unit.webmail.conftest import HASHER, PASSWORD, csrf_of, sign_in
from tests.webmail_mail import deliver, text_message

ROOT, ALICE = "root@example.test", "alice@example.test"
# Reached from an email link with a signed token instead of a session (the digest).
TOKEN_ROUTES = {"/digest/{token}"}


def _app(store: Store, settings, clock, gateway_settings):
    releaser = make_releaser(Queue(store, "t"), None)
    return create_app(store, settings, clock=clock, hasher=HASHER,
                      extra_routes=console_routes(gateway_settings, releaser))


def _post_routes(app) -> list[str]:
    return [r.path for r in app.routes if isinstance(r, Route) and "POST" in (r.methods or ())]


def _state(store: Store) -> tuple:
    """Everything a POST could change, to compare before and after."""
    with store.reading() as conn:
        return tuple(tuple(conn.execute(sa.select(*table.c).order_by(*table.primary_key))
                           .all())
                     for table in (schema.recipients, schema.mailbox_flags, schema.audit_log,
                                   schema.sender_rules, schema.users, schema.events))


def _concrete(path: str, queue_id: str) -> str:
    return path.replace("{queue_id}", queue_id).replace("{token}", "x" * 40)


def test_no_post_changes_anything_without_the_csrf_token(store: Store, settings, clock,
                                                        gateway_settings) -> None:
    add_user(store, ROOT, PASSWORD, domains=["example.test"], hasher=HASHER)
    _set_role(store, ROOT, "admin")
    clock.now = time.time()
    queue_id = deliver(store, text_message(ALICE), ALICE, quarantined=True)
    app = _app(store, settings, clock, gateway_settings)
    with TestClient(app, follow_redirects=False) as client:
        assert sign_in(client, ROOT).status_code == 303
        paths = _post_routes(app)
        assert {"/admin/act", "/m/{queue_id}/delete", "/compose", "/logout"} <= set(paths)
        before = _state(store)
        for path in paths:
            form = {"verb": "delete", "id": queue_id, "sender": "x@y.test",
                    "rule": "1", "to": "bob@example.test", "subject": "s", "body": "b"}
            answer = client.post(_concrete(path, queue_id), data=form)
            if path in TOKEN_ROUTES:  # no session needed, but a forged token does nothing
                assert answer.status_code in (400, 403, 404), (path, answer.status_code)
            else:
                assert answer.status_code == 403, (path, answer.status_code)
            if path not in TOKEN_ROUTES:  # and a cross-site POST, even with the token
                token = csrf_of(client.get("/inbox").text)
                cross = client.post(_concrete(path, queue_id), data={**form, "csrf": token},
                                    headers={"sec-fetch-site": "cross-site",
                                             "origin": "https://evil.test"})
                assert cross.status_code == 403, (path, cross.status_code)
        assert _state(store) == before
        assert client.get("/inbox").status_code == 200  # still signed in: nothing ended it


def test_a_plain_user_is_refused_by_every_console_endpoint(store: Store, settings, clock,
                                                          gateway_settings) -> None:
    queue_id = deliver(store, text_message(ALICE), ALICE, quarantined=True)
    app = _app(store, settings, clock, gateway_settings)
    console = [r for r in app.routes if isinstance(r, Route) and r.path.startswith("/admin")]
    assert len(console) >= 8
    with TestClient(app, follow_redirects=False) as client:
        assert sign_in(client, ALICE).status_code == 303
        token = csrf_of(client.get("/inbox").text)
        before = _state(store)
        for route in console:
            path = _concrete(route.path, queue_id)
            for method in sorted(route.methods or ()):
                if method == "HEAD":
                    continue
                data = {"csrf": token, "verb": "release-quarantine", "id": queue_id,
                        "rule": "1"} if method == "POST" else None
                answer = client.request(method, path, data=data)
                assert answer.status_code == 403, (method, path, answer.status_code)
                assert re.search("for administrators", answer.text), path
        assert _state(store) == before
