"""A webmail app on a real SQLite store, a clock the tests move, and signed-in clients."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import pytest
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from starlette.testclient import TestClient

from spoolgate.store.store import Store, open_store
from spoolgate.webmail.app import WebmailSettings, create_app
from spoolgate.webmail.users import add_user

PASSWORD = "correct horse battery"
DOMAINS = {"example.test": "smtp://127.0.0.1:2526"}
HASHER = PasswordHasher.from_parameters(CHEAPEST)  # still argon2id, just fast


class Clock:
    """Starts at the real time (accounts were made with it) and moves only when told."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    opened = open_store(sqlite_url)
    for email in ("alice@example.test", "bob@example.test"):
        add_user(opened, email, PASSWORD, domains=DOMAINS, hasher=HASHER)
    yield opened
    opened.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings() -> WebmailSettings:
    return WebmailSettings(hostname="mail.example.test", domains=DOMAINS)


@pytest.fixture
def client(store: Store, settings: WebmailSettings, clock: Clock) -> Iterator[TestClient]:
    app = create_app(store, settings, clock=clock, hasher=HASHER)
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def sign_in(client: TestClient, email: str = "alice@example.test",
            password: str = PASSWORD) -> object:
    page = client.get("/login")
    return client.post("/login", data={"email": email, "password": password,
                                       "csrf": csrf_of(page.text), "next": "/inbox"})


@pytest.fixture
def alice(client: TestClient) -> TestClient:
    assert sign_in(client).status_code == 303
    return client


@pytest.fixture
def make_client(store: Store, settings: WebmailSettings,
                clock: Clock) -> Iterator[Callable[[], TestClient]]:
    made: list[TestClient] = []

    def make() -> TestClient:
        made.append(TestClient(create_app(store, settings, clock=clock, hasher=HASHER),
                               follow_redirects=False))
        return made[-1]

    yield make
    for each in made:
        each.close()
