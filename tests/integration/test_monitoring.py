"""The monitoring listener of a real `spoolgate serve`: /metrics as Prometheus reads it,
/healthz and /readyz, and JSON logs that carry each message's queue ID.

Mail goes in over SMTP (smtplib, every reply code the client saw is tallied) and out to a
real Postfix; the figures scraped over HTTP must match what the client saw and what the
downstream received, and the queue gauges must follow the store when Postfix is stopped.
"""

from __future__ import annotations

import json
import smtplib
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from spoolgate.scan.builtin import GTUBE
from tests.clamd import Clamd
from tests.downstream import PostfixDownstream
from tests.gateway_process import GatewayProcess, free_port
from tests.integration.delivery.gateway import message, start_delivering

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
SENDER = "sender@remote.test"


def _get(url: str) -> tuple[int, str, str]:
    """Status, Content-Type and body of a GET (error statuses included)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def wait_monitoring(port: int, timeout: float = 30.0) -> None:
    """Wait for the monitoring listener: it starts after the SMTP listeners that
    GatewayProcess.start waits for."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if _get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                return
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def scrape(port: int) -> Samples:
    status, content_type, body = _get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, body
    assert content_type.startswith("text/plain; version=0.0.4")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: v for (n, labels), v in samples.items() if n == name}


def wait_scrape(port: int, ready: Callable[[Samples], bool], what: str,
                timeout: float = 60.0) -> Samples:
    """Scrape until *ready* holds (the recorder counts once outcomes are committed)."""
    deadline = time.monotonic() + timeout
    samples = scrape(port)
    while not ready(samples):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout}s: "
                                 f"{ {k: v for k, v in samples.items() if 'spoolgate' in k[0]} }")
        time.sleep(0.2)
        samples = scrape(port)
    return samples


class Client:
    """One SMTP session with smtplib that tallies the code of every reply it receives."""

    def __init__(self, port: int) -> None:
        self.smtp = smtplib.SMTP(timeout=30)
        self.codes: list[int] = []
        self.last = ""
        self.codes.append(self.smtp.connect("127.0.0.1", port)[0])
        self.codes.append(self.smtp.ehlo("client.remote.test")[0])

    def send(self, recipients: list[str], data: bytes) -> int | None:
        """MAIL, RCPTs, DATA (or RSET when no recipient was taken); the final code or None."""
        self.codes.append(self.smtp.mail(SENDER)[0])
        taken = 0
        for rcpt in recipients:
            code = self.smtp.rcpt(rcpt)[0]
            self.codes.append(code)
            taken += code == 250
        if not taken:
            self.codes.append(self.smtp.rset()[0])
            return None
        code, text = self.smtp.data(data)  # raises unless DATA was answered 354
        self.codes += [354, code]
        self.last = text.decode()
        return code

    def quit(self) -> None:
        self.codes.append(self.smtp.quit()[0])


def _classes(codes: list[int]) -> Counter[str]:
    return Counter(f"{code // 100}xx" for code in codes)


def _delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def _start(gateway_factory, store_url: str | None, route: str, metrics_port: int,
           start: bool = True, **extra: dict) -> GatewayProcess:
    return start_delivering(
        gateway_factory, store_url, {"example.test": route},
        delivery={"down_after": 1, "min_backoff": 1.0, "max_backoff": 2.0},
        domain_extra={"example.test": {"recipients": ["alice", "bob"]}},
        extra={"metrics": {"enabled": True, "listen": f"127.0.0.1:{metrics_port}"}, **extra},
        start=start)


def test_metrics_match_what_was_sent_delivered_and_queued(
        gateway_factory, store_url: str, folder: Path) -> None:
    company = PostfixDownstream(folder / "company", free_port()).start()
    metrics_port = free_port()
    try:
        gateway = _start(gateway_factory, store_url, company.route, metrics_port)
        wait_monitoring(metrics_port)
        before = scrape(metrics_port)

        mail = Client(gateway.port)
        finals = [mail.send(["alice@example.test"], message(n).as_bytes(policy=SMTP_POLICY)) for n in range(3)]
        finals.append(mail.send(["bob@example.test", "nobody@example.test"],
                                message(3, to="bob@example.test").as_bytes(policy=SMTP_POLICY)))
        mail.quit()
        relay = Client(gateway.port)
        assert relay.send(["victim@elsewhere.test"], message(4).as_bytes(policy=SMTP_POLICY)) is None
        relay.quit()
        spam = Client(gateway.port)
        gtube = message(5, body=GTUBE.decode() + "\n").as_bytes(policy=SMTP_POLICY)
        assert spam.send(["alice@example.test"], gtube) == 550
        spam.quit()
        assert finals == [250, 250, 250, 250]
        sent_codes = mail.codes + relay.codes + spam.codes

        company.wait_for(4, timeout=60)
        after = wait_scrape(metrics_port, lambda s: _delta(
            s, before, "spoolgate_delivery_attempts_total") >= 4, "4 delivery attempts")

        assert _delta(after, before, "spoolgate_smtp_sessions_total") == 3
        replies = {klass: _delta(after, before, "spoolgate_smtp_replies_total", **{"class": klass})
                   for klass in ("2xx", "3xx", "4xx", "5xx")}
        assert replies == {klass: _classes(sent_codes)[klass]
                           for klass in ("2xx", "3xx", "4xx", "5xx")}
        assert replies["5xx"] == 3  # the unknown user, the relay attempt, the spam
        assert _delta(after, before, "spoolgate_messages_accepted_total") == 4
        rejected = {reason: _delta(after, before, "spoolgate_messages_rejected_total",
                                   reason=reason)
                    for reason in by_label(after, "spoolgate_messages_rejected_total", "reason")}
        assert {r: n for r, n in rejected.items() if n} == {
            "relay": 1, "unknown_user": 1, "spam": 1}
        verdicts = {v: _delta(after, before, "spoolgate_scan_verdicts_total", verdict=v)
                    for v in ("pass", "tag", "quarantine", "reject", "tempfail")}
        assert verdicts["reject"] == 1 and verdicts["tempfail"] == 0
        assert verdicts["pass"] + verdicts["tag"] + verdicts["quarantine"] == 4
        assert _delta(after, before, "spoolgate_scan_duration_seconds_count") == 5
        assert _delta(after, before, "spoolgate_delivery_attempts_total") == 4
        assert _delta(after, before, "spoolgate_delivery_replies_total", **{"class": "2xx"}) == 4
        assert _delta(after, before, "spoolgate_dsns_sent_total") == 0
        assert _delta(after, before, "spoolgate_store_commit_batch_messages_sum") == 4
        assert _delta(after, before, "spoolgate_store_commit_duration_seconds_count") >= 1

        assert value(after, "spoolgate_store_up") == 1
        depth = {(dict(labels)["state"], dict(labels)["domain"], dict(labels)["route"]): v
                 for (name, labels), v in after.items() if name == "spoolgate_queue_recipients"}
        assert {key for key in depth if key[1] == "example.test"} == {
            (state, "example.test", company.route)
            for state in ("queued", "deferred", "delivering", "held", "quarantined")}
        assert sum(depth.values()) == 0
        assert value(after, "spoolgate_route_up", route=company.route) == 1

        company.stop()
        outage = Client(gateway.port)
        for n in range(2):
            assert outage.send(["alice@example.test"], message(10 + n).as_bytes(policy=SMTP_POLICY)) == 250
        outage.quit()
        down = wait_scrape(metrics_port, lambda s: value(
            s, "spoolgate_queue_recipients", state="deferred", domain="example.test",
            route=company.route) == 2, "2 deferred recipients")
        down = wait_scrape(metrics_port, lambda s: value(
            s, "spoolgate_route_up", route=company.route) == 0, "the route down")
        assert _delta(down, after, "spoolgate_delivery_replies_total", **{"class": "4xx"}) >= 1
        assert _delta(down, after, "spoolgate_messages_accepted_total") == 2
        assert value(down, "spoolgate_queue_oldest_seconds", state="deferred",
                     domain="example.test", route=company.route) > 0

        assert _get(f"http://127.0.0.1:{metrics_port}/healthz")[::2] == (200, "ok")
        assert _get(f"http://127.0.0.1:{metrics_port}/readyz")[::2] == (200, "ready")
        # Not on the SMTP port, and not a page the webmail's listener would serve.
        assert _get(f"http://127.0.0.1:{metrics_port}/login")[0] == 404
    finally:
        company.stop()


def test_readyz_reports_a_store_that_is_gone(gateway_factory, pg_url: str,
                                             pg_admin: sa.Engine) -> None:
    metrics_port = free_port()
    gateway = gateway_factory(pg_url, extra={
        "metrics": {"enabled": True, "listen": f"127.0.0.1:{metrics_port}"}})
    wait_monitoring(metrics_port)
    assert _get(f"http://127.0.0.1:{metrics_port}/readyz")[::2] == (200, "ready")
    name = pg_url.split("?")[0].rsplit("/", 1)[-1]
    with pg_admin.connect() as conn:  # the database disappears under the running gateway
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    status, content_type, body = _get(f"http://127.0.0.1:{metrics_port}/readyz")
    assert (status, body) == (503, "store unavailable")
    assert content_type.startswith("text/plain")
    assert _get(f"http://127.0.0.1:{metrics_port}/healthz")[::2] == (200, "ok")
    samples = scrape(metrics_port)  # a scrape still answers, and says the store is down
    assert value(samples, "spoolgate_store_up") == 0
    assert not any(n == "spoolgate_queue_recipients" for n, _ in samples)
    assert gateway.proc is not None and gateway.proc.poll() is None


def test_json_log_lines_of_a_message_carry_its_queue_id(gateway_factory, folder: Path) -> None:
    company = PostfixDownstream(folder / "company", free_port()).start()
    try:
        gateway = _start(gateway_factory, None, company.route, free_port(), start=False,
                         log={"format": "json"})
        # start() also waits for the text line "listening smtp=" of every ingress process;
        # with one process and JSON lines, its 220 is the sign that it listens.
        gateway.workers = 0
        gateway.start()
        mail = Client(gateway.port)
        assert mail.send(["alice@example.test"], message(1).as_bytes(policy=SMTP_POLICY)) == 250
        mail.quit()
        queue_id = mail.last.rsplit(" ", 1)[-1]  # "2.0.0 Ok: queued as QUEUEID"
        company.wait_for(1, timeout=60)
        deadline = time.monotonic() + 30
        while "status=sent" not in gateway.log and time.monotonic() < deadline:
            time.sleep(0.1)
        entries = [json.loads(line) for line in gateway.log.splitlines() if line.strip()]
        about = [e for e in entries if queue_id in e["msg"]]
        assert any("accepted" in e["msg"] for e in about)
        assert any("status=sent" in e["msg"] for e in about)
        assert all(e.get("queue_id") == queue_id for e in about), about
        listening = [e for e in entries if e["msg"].startswith("listening smtp=")]
        assert listening and all("queue_id" not in e for e in listening)
    finally:
        company.stop()


def test_readyz_fails_while_clamd_is_down_unless_clamav_may_fail(gateway_factory,
                                                                 folder: Path) -> None:
    with Clamd(folder / "clamd", free_port()) as clamd:
        ports = free_port(), free_port()
        strict, lenient = (gateway_factory(extra={
            "metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"},
            "scan": {"scanners": ["builtin", "clamav"], "clamav": clamd.address, **extra}})
            for port, extra in zip(ports, ({}, {"rescan_on_error": ["clamav"]}), strict=True))
        for port in ports:
            wait_monitoring(port)
            assert _get(f"http://127.0.0.1:{port}/readyz")[::2] == (200, "ready")
        clamd.stop()
        status, content_type, body = _get(f"http://127.0.0.1:{ports[0]}/readyz")
        assert (status, body) == (503, "scanner not answering: clamav (clamd)")
        assert content_type.startswith("text/plain")
        # Mail to the strict node would get 451 4.7.1; the lenient one still takes it.
        assert _get(f"http://127.0.0.1:{ports[1]}/readyz")[::2] == (
            200, "ready\nscanner not answering, mail held for a rescan: clamav (clamd)")
        assert _get(f"http://127.0.0.1:{ports[0]}/healthz")[::2] == (200, "ok")
        assert strict.proc is not None and strict.proc.poll() is None
        assert lenient.proc is not None and lenient.proc.poll() is None
