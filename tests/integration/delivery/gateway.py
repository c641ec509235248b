"""A gateway with delivery switched on, and the small helpers the delivery tests share."""

from __future__ import annotations

import email.policy
import json
import smtplib
import time
from collections.abc import Callable, Sequence
from email.message import EmailMessage, Message
from typing import Any

from tests.gateway_process import GatewayProcess

FAST_RETRY = {"enabled": True, "min_backoff": 0.5, "max_backoff": 1.0, "poll_interval": 0.05,
              "connect_timeout": 2.0, "greeting_timeout": 5.0, "command_timeout": 5.0,
              "data_timeout": 5.0, "down_after": 3, "purge_interval": 0.5}


def start_delivering(factory: Callable[..., GatewayProcess], store_url: str | None,
                     routes: dict[str, str], delivery: dict[str, Any] | None = None,
                     outbound: str | None = None, domain_extra: dict[str, dict] | None = None,
                     **kwargs: Any) -> GatewayProcess:
    """Start a gateway that relays each domain of *routes* to its route."""
    domains = [{"name": name, "route": route, **(domain_extra or {}).get(name, {})}
               for name, route in routes.items()]
    extra = {"delivery": {**FAST_RETRY, **(delivery or {})}}
    if outbound is not None:
        extra["outbound"] = {"route": outbound, "tls": "none"}
    extra.update(kwargs.pop("extra", {}))
    return factory(store_url, domains=domains, extra=extra, **kwargs)


def message(number: int, sender: str = "sender@remote.test", to: str = "alice@example.test",
            body: str = "Hello.\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"message {number}"
    msg["Message-ID"] = f"<m{number}.{time.monotonic_ns()}@remote.test>"
    msg["Date"] = "Sun, 29 Nov 2026 10:00:00 +0000"
    msg.set_content(body)
    return msg


def send(gateway: GatewayProcess, msg: EmailMessage, sender: str = "sender@remote.test",
         recipients: Sequence[str] = ("alice@example.test",),
         mail_options: Sequence[str] = (), rcpt_options: Sequence[str] = ()) -> None:
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as client:
        client.sendmail(sender, list(recipients), msg.as_bytes(policy=email.policy.SMTP),
                        list(mail_options),
                        list(rcpt_options))


def send_many(port: int, count: int, sender: str = "sender@remote.test",
              to: str = "alice@example.test") -> list[str]:
    """Send *count* numbered messages over one session; their Message-IDs, in order."""
    ids = []
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        for number in range(count):
            msg = message(number, sender=sender, to=to)
            client.sendmail(sender, [to], msg.as_bytes(policy=email.policy.SMTP))
            ids.append(msg["Message-ID"])
    return ids


def queue_json(gateway: GatewayProcess, *args: str) -> list[dict]:
    result = gateway.cli("queue", "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def show(gateway: GatewayProcess, queue_id: str) -> dict:
    result = gateway.cli("queue", "show", queue_id, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def states(gateway: GatewayProcess) -> dict[str, int]:
    """Recipient rows per state over the whole store."""
    counts: dict[str, int] = {}
    for entry in queue_json(gateway, "--limit", "100000"):
        for rcpt in entry["recipients"]:
            counts[rcpt["state"]] = counts.get(rcpt["state"], 0) + 1
    return counts


def wait_states(gateway: GatewayProcess, expected: dict[str, int], timeout: float = 30.0
                ) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    found: dict[str, int] = {}
    while time.monotonic() < deadline:
        found = states(gateway)
        if all(found.get(state, 0) == count for state, count in expected.items()):
            return found
        time.sleep(0.2)
    raise AssertionError(f"states {found}, expected {expected}\n{gateway.log[-3000:]}")


def delivery_report(notice: Message) -> tuple[Message, list[Message]]:
    """The per-message fields and the per-recipient blocks of a DSN."""
    status = next(p for p in notice.walk() if p.get_content_type() == "message/delivery-status")
    blocks = status.get_payload()
    return blocks[0], [b for b in blocks[1:] if b.get("Final-Recipient")]
