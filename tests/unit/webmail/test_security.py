"""Headers, CSRF, sign-in, throttling and sessions of spoolgate/webmail (real SQLite store)."""

from __future__ import annotations

from starlette.routing import Route
from starlette.testclient import TestClient

from spoolgate.store.accounts import Accounts
from spoolgate.store.store import Store
from spoolgate.webmail.security import PAGE_CSP
from tests.unit.webmail.conftest import PASSWORD, Clock, csrf_of, sign_in
from tests.webmail_mail import deliver, text_message

ALWAYS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


def _check_always(response) -> None:
    for name, value in ALWAYS.items():
        assert response.headers[name] == value, response.request.url


def test_every_page_carries_the_strict_headers(alice: TestClient, store: Store) -> None:
    queue_id = deliver(store, text_message("alice@example.test"), "alice@example.test")
    for path in ("/login", "/inbox", "/quarantine", "/trash", f"/m/{queue_id}", "/nope",
                 "/static/app.css"):
        response = alice.get(path)
        _check_always(response)
        assert response.headers["content-security-policy"] == PAGE_CSP
        assert response.headers["x-frame-options"] == "DENY"
    assert "'unsafe-inline'" not in PAGE_CSP and "frame-ancestors 'none'" in PAGE_CSP
    assert alice.get("/m/x/source").status_code == 404


def test_pages_have_no_inline_script_or_style(alice: TestClient, store: Store) -> None:
    deliver(store, text_message("alice@example.test"), "alice@example.test")
    for path in ("/login", "/inbox"):
        html = alice.get(path).text
        assert "<script>" not in html and " style=" not in html and "onclick" not in html


def test_every_post_route_refuses_a_missing_or_wrong_csrf_token(alice: TestClient,
                                                                 store: Store) -> None:
    queue_id = deliver(store, text_message("alice@example.test"), "alice@example.test")
    posts = [r.path for r in alice.app.routes
             if isinstance(r, Route) and "POST" in (r.methods or ())]
    assert len(posts) >= 6
    for path in posts:
        url = path.replace("{queue_id}", queue_id)
        assert alice.post(url, data={}).status_code == 403, url
        assert alice.post(url, data={"csrf": "forged"}).status_code == 403, url
    assert store.show(queue_id).entry.recipients[0].state == "queued"
    assert alice.get("/inbox").status_code == 200  # still signed in: logout was refused too


def test_a_cross_site_origin_is_refused_even_with_the_token(alice: TestClient, store: Store) -> None:
    token = csrf_of(alice.get("/inbox").text)
    refused = alice.post("/logout", data={"csrf": token}, headers={"origin": "https://evil.test"})
    assert refused.status_code == 403
    fetched = alice.post("/logout", data={"csrf": token}, headers={"sec-fetch-site": "cross-site"})
    assert fetched.status_code == 403
    assert alice.post("/logout", data={"csrf": token}, headers={
        "origin": "null", "sec-fetch-site": "same-origin"}).status_code == 303


def test_a_wrong_password_or_unknown_user_gets_the_same_answer(client: TestClient) -> None:
    wrong = sign_in(client, password="not the password")
    unknown = sign_in(client, email="nobody@example.test")
    assert wrong.status_code == unknown.status_code == 401
    assert "The address or the password is not right." in wrong.text
    assert "The address or the password is not right." in unknown.text
    assert client.get("/inbox").headers["location"].startswith("/login")


def test_the_session_cookie_is_httponly_and_lax(client: TestClient) -> None:
    response = sign_in(client)
    cookie = [v for k, v in response.headers.multi_items() if k == "set-cookie"
              and v.startswith("spoolgate=")][0]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP in this test


def test_secure_cookies_use_the_host_prefix(store: Store, clock: Clock, make_client) -> None:
    client = make_client()
    client.base_url = client.base_url.copy_with(scheme="https")
    response = sign_in(client)
    cookie = [v for k, v in response.headers.multi_items() if k == "set-cookie"
              and v.startswith("__Host-spoolgate=")][0]
    assert "Secure" in cookie and "HttpOnly" in cookie


def test_failures_delay_then_lock_and_the_lock_expires(client: TestClient, clock: Clock) -> None:
    for _ in range(3):  # the first failures cost nothing
        assert "not right" in sign_in(client, password="bad").text
    assert "not right" in sign_in(client, password="bad").text  # the 4th: now a delay
    throttled = sign_in(client)  # even the right password waits
    assert throttled.status_code == 401 and "Wait 2 seconds" in throttled.text
    for _ in range(6):
        clock.now += 61
        sign_in(client, password="bad")
    locked = sign_in(client)
    assert "locked until" in locked.text
    clock.now += 15 * 60 + 1
    assert sign_in(client).status_code == 303


def test_a_delay_grows_with_failures(client: TestClient, clock: Clock) -> None:
    for n in range(5):
        assert "not right" in sign_in(client, password="bad").text
        clock.now += 10 if n < 4 else 1
    assert "Wait 3 seconds" in sign_in(client).text  # 4 s after the 5th, 1 s gone
    clock.now += 3
    assert sign_in(client).status_code == 303


def test_ip_throttle_counts_failures_across_accounts(client: TestClient, clock: Clock,
                                                     store: Store) -> None:
    for n in range(50):
        sign_in(client, email=f"guess{n}@example.test", password="bad")
        clock.now += 120
    assert "locked until" in sign_in(client).text
    keys = Accounts(store).throttles(["ip:testclient"])
    assert keys["ip:testclient"].locked_until is not None


def test_idle_sessions_expire_and_active_ones_live(alice: TestClient, clock: Clock) -> None:
    for _ in range(3):
        clock.now += 29 * 60
        assert alice.get("/inbox").status_code == 200
    clock.now += 30 * 60 + 1
    assert alice.get("/inbox").status_code == 303


def test_sessions_end_after_the_absolute_limit(alice: TestClient, clock: Clock) -> None:
    for _ in range(28):
        clock.now += 25 * 60
        assert alice.get("/inbox").status_code == 200, clock.now
    clock.now += 25 * 60  # 12.5 hours since sign-in
    assert alice.get("/inbox").status_code == 303


def test_signing_in_rotates_the_session(client: TestClient, make_client) -> None:
    sign_in(client)
    old = client.cookies["spoolgate"]
    token = csrf_of(client.get("/inbox").text)  # signing in again from a signed-in browser
    again = client.post("/login", data={"email": "alice@example.test", "password": PASSWORD,
                                        "csrf": token})
    assert again.status_code == 303
    assert client.cookies["spoolgate"] != old
    replay = make_client()
    replay.cookies.set("spoolgate", old)
    assert replay.get("/inbox").status_code == 303


def test_sign_out_ends_the_session_everywhere(client: TestClient, make_client) -> None:
    sign_in(client)
    token = client.cookies["spoolgate"]
    out = client.post("/logout", data={"csrf": csrf_of(client.get("/inbox").text)})
    assert out.status_code == 303
    copy = make_client()
    copy.cookies.set("spoolgate", token)
    assert copy.get("/inbox").status_code == 303


def test_a_disabled_user_cannot_sign_in(client: TestClient, store: Store) -> None:
    Accounts(store).set_disabled("alice@example.test", True)
    assert sign_in(client, password=PASSWORD).status_code == 401


def test_sign_in_never_redirects_off_site(client: TestClient) -> None:
    page = client.get("/login")
    response = client.post("/login", data={"email": "alice@example.test", "password": PASSWORD,
                                           "csrf": csrf_of(page.text),
                                           "next": "//evil.test/x"})
    assert response.headers["location"] == "/inbox"
