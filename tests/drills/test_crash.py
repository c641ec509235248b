"""Crash drill: SIGKILL the whole gateway in the middle of a load and count every message.

Twenty clients send 2,000 messages, each with a unique token. When half of them
have been answered, every process of the gateway is killed at once; the clients
whose connection breaks write the message down as "no reply", wait for a new
gateway on the same store and go on with their next message. Afterwards the store
must hold every message that got a 250 (under its queue ID, with its token), no
token twice, and nothing else but messages whose reply the kill swallowed: at
most one per client.
"""

from __future__ import annotations

import re
import smtplib
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from spoolgate.store.store import open_store
from tests.gateway_process import GatewayProcess

pytestmark = pytest.mark.drill

CLIENTS = 20
MESSAGES = 2_000
SENDER = "drill@src.test"
RECIPIENT = "user@example.test"
QUEUED = re.compile(r"^2\.0\.0 Ok: queued as ([0-9A-Z]{14})$")
TOKEN = re.compile(rb"token=(T[0-9a-f]{32})")
NO_REPLY = "no reply"
ACCEPTED = re.compile(r"intake\[(\d+)\] INFO [0-9A-Z]{14}: accepted ")


@dataclass
class Outcome:
    """What the client of one message saw."""

    token: str
    reply: str | None = None  # None: never sent; "250", NO_REPLY or the refusal text
    queue_id: str | None = None
    generation: int | None = None  # which gateway the connection went to (0: the killed one)


@dataclass
class Load:
    """What the clients share with the drill: where the gateway is and how far they got."""

    port: int
    generation: int = 0
    answered: int = 0
    killed: threading.Event = field(default_factory=threading.Event)
    restarted: threading.Event = field(default_factory=threading.Event)
    progress: threading.Condition = field(default_factory=threading.Condition)
    errors: list[str] = field(default_factory=list)

    def count_answer(self) -> None:
        with self.progress:
            self.answered += 1
            self.progress.notify_all()

    def wait_answered(self, count: int, timeout: float) -> bool:
        with self.progress:
            return self.progress.wait_for(lambda: self.answered >= count, timeout)


def message_for(token: str, number: int) -> bytes:
    filler = "".join(f"line {n} of the crash drill, nothing to see here\r\n" for n in range(20))
    return (f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: crash drill {number}\r\n"
            f"Message-ID: <{token}@drill.test>\r\n\r\n{filler}token={token}\r\n").encode()


def connect(load: Load) -> tuple[smtplib.SMTP, int]:
    generation = load.generation
    smtp = smtplib.SMTP("127.0.0.1", load.port, local_hostname="client.drill.test", timeout=30)
    smtp.ehlo()
    return smtp, generation


def send_one(smtp: smtplib.SMTP, outcome: Outcome, number: int) -> None:
    code, text = smtp.mail(f"<{SENDER}>")
    if code == 250:
        code, text = smtp.rcpt(f"<{RECIPIENT}>")
    if code == 250:
        code, text = smtp.data(message_for(outcome.token, number))
    reply = text.decode()
    match = QUEUED.match(reply) if code == 250 else None
    if match:
        outcome.reply, outcome.queue_id = "250", match.group(1)
    else:
        outcome.reply = f"{code} {reply}"
        smtp.rset()


def run_client(load: Load, outcomes: list[Outcome], first_number: int) -> None:
    """Send *outcomes* one by one; after a broken connection, wait for the new gateway."""
    smtp: smtplib.SMTP | None = None
    generation = 0
    try:
        for offset, outcome in enumerate(outcomes):
            if smtp is None:
                smtp, generation = connect(load)
            outcome.generation = generation
            try:
                send_one(smtp, outcome, first_number + offset)
            except (smtplib.SMTPServerDisconnected, ConnectionError) as error:
                outcome.reply = NO_REPLY
                smtp.close()
                smtp = None
                if generation != 0 or not load.killed.is_set():
                    load.errors.append(f"connection broke without a kill: {error!r}")
                    return
                if not load.restarted.wait(120):
                    load.errors.append("the gateway was not restarted within 120 s")
                    return
                continue
            load.count_answer()
        if smtp is not None:
            smtp.quit()
    except Exception as error:  # reported by the drill, which asserts on load.errors
        load.errors.append(f"client failed: {error!r}")


def restart_after_kill(gateway: GatewayProcess, load: Load,
                       restart: Callable[[], GatewayProcess]) -> tuple[int, GatewayProcess]:
    assert load.wait_answered(MESSAGES // 2, 120), f"only {load.answered} replies in 120 s"
    load.killed.set()
    gateway.kill()
    answered_at_kill = load.answered
    second = restart()
    load.port, load.generation = second.port, 1
    load.restarted.set()
    return answered_at_kill, second


def stored_tokens(store_url: str) -> dict[str, list[tuple[str, bytes]]]:
    """Token -> [(queue ID, stored bytes)] for every message in the store."""
    store = open_store(store_url)
    try:
        found: dict[str, list[tuple[str, bytes]]] = {}
        for queue_id in store.queue_ids():
            data = store.message_data(queue_id)
            match = TOKEN.search(data)
            assert match, f"{queue_id}: stored message without a drill token"
            found.setdefault(match.group(1).decode(), []).append((queue_id, data))
        return found
    finally:
        store.close()


@pytest.mark.parametrize("workers", [1, 2], ids=["1worker", "2workers"])
def test_sigkill_mid_load_loses_no_acknowledged_message(
        store_url: str, workers: int, gateway_factory: Callable[..., GatewayProcess]) -> None:
    smtp = {"workers": workers, "max_sessions_per_ip": CLIENTS * 2}
    gateway = gateway_factory(store_url=store_url, smtp=smtp)
    load = Load(gateway.port)
    per_client = MESSAGES // CLIENTS
    outcomes = [Outcome(f"T{uuid.uuid4().hex}") for _ in range(MESSAGES)]
    threads = [threading.Thread(target=run_client,
                                args=(load, outcomes[n * per_client:(n + 1) * per_client],
                                      n * per_client), daemon=True)
               for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    answered_at_kill, second = restart_after_kill(
        gateway, load, lambda: gateway_factory(store_url=store_url, smtp=smtp))
    for thread in threads:
        thread.join(180)
    assert not any(thread.is_alive() for thread in threads), "clients still running after 180 s"
    assert load.errors == []
    assert second.stop() == 0, second.log[-3000:]

    acked = {o.token: o.queue_id for o in outcomes if o.reply == "250"}
    lost_replies = {o.token for o in outcomes if o.reply == NO_REPLY}
    refused = [o.reply for o in outcomes if o.reply not in ("250", NO_REPLY)]
    stored = stored_tokens(store_url)
    stored_without_250 = set(stored) - set(acked)
    print(f"\n[{store_url.split(':')[0]}, {workers} worker(s)] sent={MESSAGES} "
          f"answered before kill={answered_at_kill} 250={len(acked)} "
          f"no reply={len(lost_replies)} refused={len(refused)} stored={sum(map(len, stored.values()))} "
          f"stored without 250={len(stored_without_250)}")

    assert refused == []
    for run in (gateway, second):  # the kernel spread the sessions over every ingress process
        assert len(set(ACCEPTED.findall(run.log))) == workers
    assert MESSAGES // 2 <= answered_at_kill < MESSAGES, "the kill did not land mid-load"
    assert all(o.generation == 0 for o in outcomes if o.reply == NO_REPLY)
    assert len(lost_replies) <= CLIENTS  # one message in flight per client at most
    assert len(acked) + len(lost_replies) == MESSAGES
    for token, queue_id in acked.items():
        assert token in stored, f"{queue_id}: got 250 but is not in the store"
        assert [q for q, _ in stored[token]] == [queue_id]
        assert f"id {queue_id}".encode() in stored[token][0][1]
    duplicates = {token: [q for q, _ in rows] for token, rows in stored.items() if len(rows) > 1}
    assert duplicates == {}
    assert stored_without_250 <= lost_replies
    assert len(stored_without_250) <= CLIENTS
    assert sum(map(len, stored.values())) == len(acked) + len(stored_without_250)
