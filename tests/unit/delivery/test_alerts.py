"""spoolgate/delivery/alerts.py: the alert email, the webhook (against a real HTTP server on
loopback), the outbound override of the route table, and the hysteresis and [alerts] keys."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from spoolgate.config import ConfigError, Settings, load_settings
from spoolgate.delivery.alerts import Alerts, alert_message, post_webhook, webhook_body
from spoolgate.delivery.routes import RouteTable
from spoolgate.store.queue import OUTBOUND, RouteChange
from tests.downstream import closed_port

DOMAINS = ('[[domains]]\nname = "example.test"\nroute = "smtp://127.0.0.1:2526"\n'
           '[[domains]]\nname = "example.org"\nroute = "smtp://127.0.0.1:2526"\n')
DOWN = RouteChange(event_id=7, route="smtp://127.0.0.1:2526", state="down", at=1_800_000_060.0,
                   node="mx1", since=1_800_000_000.0,
                   last_error="421 4.4.0 connection refused\r\nBcc: x@evil.test", failures=3,
                   waiting=12, domains=("example.test", "example.org"))
UP = RouteChange(event_id=8, route=DOWN.route, state="up", at=1_800_003_660.0, node="mx2",
                 since=DOWN.at, last_error=DOWN.last_error, failures=5, waiting=4,
                 domains=DOWN.domains)


def _settings(folder: Path, text: str) -> Settings:
    path = folder / "spoolgate.toml"
    path.write_text(text + DOMAINS)
    return load_settings(path)


# -- configuration -----------------------------------------------------------------------------

def test_hysteresis_and_alert_keys_are_read(tmp_path: Path) -> None:
    settings = _settings(tmp_path, '[delivery]\ndown_after = 4\ndown_after_minutes = 1.5\n'
                                   'up_after = 2\n[alerts]\nadmins = ["ops@provider.test"]\n'
                                   'webhook = "https://hooks.example.test/T0/B0"\n'
                                   'webhook_timeout = 2\n')
    delivery, alerts = settings.delivery, settings.alerts
    assert (delivery.down_after, delivery.down_after_minutes, delivery.up_after) == (4, 1.5, 2)
    assert alerts.admins == ("ops@provider.test",)
    assert (alerts.webhook, alerts.webhook_timeout) == ("https://hooks.example.test/T0/B0", 2.0)


def test_defaults_keep_the_old_behaviour_and_alert_nobody(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "")
    assert (settings.delivery.down_after_minutes, settings.delivery.up_after) == (0.0, 1)
    assert (settings.alerts.admins, settings.alerts.webhook) == ((), None)


@pytest.mark.parametrize(("text", "key", "problem"), [
    ("[delivery]\nup_after = 0\n", "[delivery].up_after", "at least 1"),
    ("[delivery]\ndown_after_minutes = -1\n", "[delivery].down_after_minutes", "at least 0"),
    ("[alerts]\nadmins = \"ops@provider.test\"\n", "[alerts].admins", "expected an array"),
    ("[alerts]\nadmins = [\"ops@provider.test\", \"ops\"]\n", "[alerts].admins[2]",
     "expected an address"),
    ("[alerts]\nadmins = [\"a b@provider.test\"]\n", "[alerts].admins[1]", "expected an address"),
    ("[alerts]\nwebhook = \"ftp://x.test/\"\n", "[alerts].webhook", "http:// or https://"),
    ("[alerts]\nwebhook = \"https://\"\n", "[alerts].webhook", "http:// or https://"),
    ("[alerts]\nwebhook_timeout = 0\n", "[alerts].webhook_timeout", "at least 0.1"),
    ("[alerts]\nemail = []\n", "[alerts].email", "unknown key"),
])
def test_mistakes_name_the_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, text)
    assert caught.value.key == key and problem in caught.value.problem


# -- the outbound override ---------------------------------------------------------------------

def test_a_row_marked_outbound_skips_its_domains_own_route(tmp_path: Path) -> None:
    smarthost = RouteTable(_settings(tmp_path, '[outbound]\nroute = "smtp://127.0.0.1:2600"\n'))
    assert smarthost.lookup("example.test").name == "smtp://127.0.0.1:2526"
    assert smarthost.lookup("Example.TEST", OUTBOUND).name == "smtp://127.0.0.1:2600"
    assert smarthost.lookup("provider.test", OUTBOUND).name == "smtp://127.0.0.1:2600"

    direct = RouteTable(_settings(tmp_path, ""))
    assert direct.lookup("example.test", OUTBOUND).name == "mx:example.test"


# -- the email ---------------------------------------------------------------------------------

def test_the_down_alert_says_what_where_since_when_and_how_much_waits() -> None:
    message = alert_message(DOWN, ("ops@example.test", "oncall@provider.test"), "mx.example.net")
    assert message.envelope.sender == ""  # never bounces back
    assert [r.address for r in message.envelope.recipients] == ["ops@example.test",
                                                                "oncall@provider.test"]
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    assert parsed["Subject"] == ("[Spoolgate] DOWN: smtp://127.0.0.1:2526 (example.test, "
                                 "example.org)")
    assert parsed["From"] == "Spoolgate <postmaster@mx.example.net>"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["Bcc"] is None  # the server's reply cannot add a header
    body = parsed.get_content()
    for text in ("Domains:        example.test, example.org",
                 "Failing since:  2027-01-15 08:00:00 UTC",
                 "Marked down:    2027-01-15 08:01:00 UTC, after 3 failed attempts",
                 "Last error:     421 4.4.0 connection refused  Bcc: x@evil.test",
                 "Waiting:        12 messages", "node mx1"):
        assert text in body
    assert max(len(line) for line in message.data.split(b"\r\n")) <= 78


def test_the_up_alert_says_how_long_it_was_down() -> None:
    message = alert_message(UP, ("ops@example.test",), "mx.example.net")
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    assert parsed["Subject"].startswith("[Spoolgate] UP: smtp://127.0.0.1:2526 (")
    body = parsed.get_content()
    assert "Down since:     2027-01-15 08:01:00 UTC (1 h 0 min)" in body
    assert "4 messages, being delivered oldest first" in body


def test_alerts_only_for_configured_routes_and_only_with_admins(tmp_path: Path) -> None:
    with_admins = Alerts(_settings(tmp_path, '[alerts]\nadmins = ["ops@provider.test"]\n'))
    assert len(with_admins.messages(DOWN)) == 1
    stranger = RouteChange(1, "mx:dead.example", "down", 1.0, "n", 1.0, "x", 3, 1,
                           ("dead.example",))
    assert with_admins.messages(stranger) == []
    assert Alerts(_settings(tmp_path, "")).messages(DOWN) == []


def test_an_admin_whose_alerts_would_loop_back_is_warned_about(tmp_path: Path) -> None:
    admins = '[alerts]\nadmins = ["ops@Example.test", "noc@provider.test"]\n'
    (problem,) = Alerts(_settings(tmp_path, admins)).problems()
    assert problem.startswith("alerts to ops@Example.test go to its domain's MX")
    smarthost = '[outbound]\nroute = "smtp://127.0.0.1:2600"\n'
    assert Alerts(_settings(tmp_path, admins + smarthost)).problems() == []


# -- the webhook (a real HTTP server on loopback) ----------------------------------------------

class _Receiver(ThreadingHTTPServer):
    def __init__(self, statuses: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.statuses = statuses       # replies in order; then 204
        self.bodies: list[tuple[str, dict]] = []


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append((self.headers["Content-Type"], json.loads(data)))
        status = self.server.statuses.pop(0) if self.server.statuses else 204
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[_Receiver]:
    server = _Receiver(list(getattr(request, "param", [])))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server: _Receiver) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/hook"


def test_the_webhook_gets_the_json() -> None:
    body = webhook_body(DOWN)
    assert body == {"event": "route_down", "route": "smtp://127.0.0.1:2526",
                    "domains": ["example.test", "example.org"],
                    "since": "2027-01-15T08:00:00Z", "last_error": DOWN.last_error,
                    "waiting": 12, "node": "mx1", "at": "2027-01-15T08:01:00Z",
                    "text": "Spoolgate: route smtp://127.0.0.1:2526 (example.test, "
                            "example.org) is DOWN"}
    assert webhook_body(UP)["event"] == "route_up"


def test_a_post_is_delivered(receiver: _Receiver) -> None:
    assert asyncio.run(post_webhook(_url(receiver), webhook_body(UP), 5.0)) is True
    assert receiver.bodies == [("application/json", json.loads(json.dumps(webhook_body(UP))))]


@pytest.mark.parametrize("receiver", [[503, 500]], indirect=True)
def test_server_errors_are_retried(receiver: _Receiver) -> None:
    assert asyncio.run(post_webhook(_url(receiver), webhook_body(DOWN), 5.0, backoff=0.01))
    assert len(receiver.bodies) == 3


@pytest.mark.parametrize("receiver", [[404]], indirect=True)
def test_a_client_error_is_not_retried(receiver: _Receiver,
                                       caplog: pytest.LogCaptureFixture) -> None:
    assert asyncio.run(post_webhook(_url(receiver), webhook_body(DOWN), 5.0, backoff=0.01)) is False
    assert len(receiver.bodies) == 1
    assert "not posted after 1 attempt(s): HTTP 404" in caplog.text


def test_an_unreachable_webhook_gives_up_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook"
    assert asyncio.run(post_webhook(url, webhook_body(DOWN), 2.0, attempts=3,
                                    backoff=0.01)) is False
    assert "not posted after 3 attempt(s)" in caplog.text


def test_notify_posts_in_the_background(tmp_path: Path, receiver: _Receiver) -> None:
    alerts = Alerts(_settings(tmp_path, f'[alerts]\nwebhook = "{_url(receiver)}"\n'))

    async def scenario() -> None:
        alerts.notify(DOWN)  # returns at once: delivery never waits for it
        await alerts.stop()

    asyncio.run(scenario())
    assert [body["event"] for _, body in receiver.bodies] == ["route_down"]
