"""Outage alerts end to end: the company's Postfix stops and starts again under a real gateway;
the admins get one email per change through the outbound route, and the webhook its JSON."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from spoolgate.store.queue import Queue
from spoolgate.store.store import open_store
from tests.downstream import PostfixDownstream, wait_until
from tests.gateway_process import free_port
from tests.integration.delivery.gateway import message, send, send_many, start_delivering

pytestmark = pytest.mark.integration

ADMINS = ["ops@example.test", "noc@provider.test"]  # ops@ is in the domain that goes down
PROBE_EVERY = 0.5


class WebhookReceiver(ThreadingHTTPServer):
    """A chat or paging tool's webhook: a real HTTP server on loopback keeping each JSON body."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/spoolgate"


class _Handler(BaseHTTPRequestHandler):
    server: WebhookReceiver

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/hooks/spoolgate" and self.headers["Content-Type"] == "application/json":
            self.server.bodies.append(json.loads(data))
            self.send_response(200)
        else:
            self.send_response(400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _alerts(messages: list[EmailMessage], state: str) -> list[str]:
    """The Delivered-To of each alert file about *state*."""
    return sorted(str(m["Delivered-To"]) for m in messages
                  if str(m.get("X-Spoolgate-Route-Event", "")).startswith(state + " "))


def test_one_alert_per_change_through_the_outbound_route(gateway_factory, folder,
                                                         webhook: WebhookReceiver) -> None:
    company = PostfixDownstream(folder / "company", free_port()).start()
    # The outbound smarthost stands in for the internet: it keeps what it is given for both
    # admin domains, so the test sees where each alert went.
    outbound = PostfixDownstream(folder / "outbound", free_port(),
                                 domains=("example.test", "provider.test")).start()
    try:
        gateway = start_delivering(
            gateway_factory, None, {"example.test": company.route}, outbound=outbound.route,
            delivery={"min_backoff": PROBE_EVERY, "max_backoff": PROBE_EVERY, "down_after": 2,
                      "down_after_minutes": 0.03, "up_after": 2, "delay_warning": 0},
            extra={"alerts": {"admins": ADMINS, "webhook": webhook.url,
                              "webhook_timeout": 5}})
        first = message(0)
        send(gateway, first)
        company.wait_for(1)

        company.stop()
        outage = time.monotonic()
        sent = send_many(gateway.port, 5)
        down_alerts = outbound.wait_for(2, timeout=30)
        # N=2 failures came within a second; M (1.8 s) held the change back.
        assert time.monotonic() - outage >= 0.03 * 60
        assert _alerts(down_alerts, "down") == sorted(ADMINS)
        wait_until(lambda: len(webhook.bodies) >= 1, 15, "the route_down webhook")
        # More mail and several probe periods into the outage: no alert per message or probe.
        sent += send_many(gateway.port, 3)
        time.sleep(4 * PROBE_EVERY)
        assert outbound.count() == 2 and len(webhook.bodies) == 1

        company.start()
        company.wait_for(1 + len(sent), timeout=30)
        outbound.wait_for(4, timeout=30)
        wait_until(lambda: len(webhook.bodies) >= 2, 15, "the route_up webhook")
        time.sleep(1.0)  # a duplicate or a second alert would still be on its way
        alerts = outbound.maildir_messages()
        delivered = company.maildir_messages()
    finally:
        company.stop()
        outbound.stop()

    # One email per change per admin, all through the outbound route.
    assert len(alerts) == 4
    assert _alerts(alerts, "down") == sorted(ADMINS) and _alerts(alerts, "up") == sorted(ADMINS)
    down = next(m for m in alerts if str(m["X-Spoolgate-Route-Event"]).startswith("down "))
    assert str(down["Subject"]) == f"[Spoolgate] DOWN: {company.route} (example.test)"
    body = down.get_content()
    assert "Domains:        example.test" in body and "Last error:" in body
    assert "Waiting:        5 messages" in body
    # None reached the company's server for the admin in its domain; every message once.
    assert all(m.get("X-Spoolgate-Route-Event") is None for m in delivered)
    assert "ops@example.test" not in {str(m["Delivered-To"]) for m in delivered}
    ids = [str(m["Message-ID"]) for m in delivered]
    assert sorted(ids) == sorted([first["Message-ID"], *sent]), "lost or duplicated messages"

    # The webhook: one JSON body per change, with the fields the docs promise.
    assert [b["event"] for b in webhook.bodies] == ["route_down", "route_up"]
    for body in webhook.bodies:
        assert body["route"] == company.route and body["domains"] == ["example.test"]
        assert body["node"] == "test" and body["at"].endswith("Z")
        assert body["since"] <= body["at"]
        assert body["text"].startswith("Spoolgate: route ")
    assert body["since"] == webhook.bodies[0]["at"]  # up: down since the down change
    assert webhook.bodies[0]["waiting"] == 5 and webhook.bodies[0]["last_error"]

    # The durable record: one event per change, recorded by the node that made it.
    store = open_store(gateway.store_url)
    try:
        events = Queue(store, "reader").route_events()
    finally:
        store.close()
    assert [(e.state, e.route, e.node) for e in events] == [
        ("up", company.route, "test"), ("down", company.route, "test")]
    log = gateway.log
    assert log.count("is down after") == 1 and log.count("is up again") == 1
    assert log.count("answers again") == 1  # recovering: mail flowed before the up alert
