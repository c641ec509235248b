"""Disk-full drill: the store's file system fills up under a stream of 100 KB messages.

The SQLite store lives on a 1 MiB tmpfs mounted for the test, so the failure is
the kernel's own ``ENOSPC`` from ``write``, not a limit SQLite imposes on
itself. Once it is full, every message must be refused with ``452 4.3.1``
(never a 250 for a message the store does not hold), the server must keep
running and greeting new sessions, and every message that did get a 250 must
still be in the store, whole. The drill also waits for the background WAL
checkpoint to fail on the full disk (it has to grow the database file) and then
checks that the next message is still refused and nothing accepted is lost.
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spoolgate.store.store import open_store
from tests.gateway_process import GatewayProcess

pytestmark = pytest.mark.drill

QUEUED = re.compile(r"^2\.0\.0 Ok: queued as ([0-9A-Z]{14})$")
MESSAGE_SIZE = 100_000
MAX_MESSAGES = 60  # 6 MB: far past the 1 MiB disk
REFUSALS_TO_STOP = 3


@pytest.fixture
def tiny_disk(folder: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted under the test folder, unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    disk = folder / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], check=True)


def big_message(token: str) -> bytes:
    line = (token + " 0123456789 abcdefghijklmnopqrstuvwxyz ")[:76] + "\r\n"
    body = line * (MESSAGE_SIZE // len(line))
    return (f"Subject: disk full drill\r\nMessage-ID: <{token}@drill.test>\r\n\r\n"
            f"token={token}\r\n{body}").encode()


def send_one(smtp: smtplib.SMTP) -> tuple[str, int, str]:
    token = f"T{uuid.uuid4().hex}"
    assert smtp.mail("<drill@src.test>")[0] == 250
    assert smtp.rcpt("<user@example.test>")[0] == 250
    code, text = smtp.data(big_message(token))
    return token, code, text.decode()


def wait_for_log(gateway: GatewayProcess, text: str, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while text not in gateway.log:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def send_until_full(port: int) -> list[tuple[str, int, str]]:
    """(token, code, reply) per message, until REFUSALS_TO_STOP refusals in a row."""
    outcomes: list[tuple[str, int, str]] = []
    refusals = 0
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.drill.test", timeout=60) as smtp:
        smtp.ehlo()
        while refusals < REFUSALS_TO_STOP and len(outcomes) < MAX_MESSAGES:
            outcomes.append(send_one(smtp))
            refusals = 0 if outcomes[-1][1] == 250 else refusals + 1
        assert smtp.noop()[0] == 250, "the session broke after the refusals"
    return outcomes


def test_full_disk_refuses_with_452_and_keeps_every_accepted_message(
        tiny_disk: Path, gateway_factory: Callable[..., GatewayProcess]) -> None:
    store_url = f"sqlite:///{tiny_disk / 'spoolgate.db'}"
    gateway = gateway_factory(store_url=store_url)
    outcomes = send_until_full(gateway.port)
    assert wait_for_log(gateway, "store checkpoint failed"), "no checkpoint ran on the full disk"
    with smtplib.SMTP("127.0.0.1", gateway.port, local_hostname="late.drill.test",
                      timeout=60) as smtp:
        assert smtp.ehlo()[0] == 250
        outcomes.append(send_one(smtp))
    accepted = {token: QUEUED.match(reply).group(1) for token, code, reply in outcomes
                if code == 250}
    refused = [f"{code} {reply}" for _, code, reply in outcomes if code != 250]
    print(f"\nfull disk: sent={len(outcomes)} messages of {MESSAGE_SIZE} bytes "
          f"250={len(accepted)} refused={len(refused)} {refused[:1]}")

    assert gateway.proc.poll() is None, "the gateway died on a full disk"
    with smtplib.SMTP(local_hostname="after.drill.test", timeout=30) as smtp:
        assert smtp.connect("127.0.0.1", gateway.port)[0] == 220
        assert smtp.ehlo()[0] == 250
    assert gateway.stop() == 0, gateway.log[-3000:]

    store = open_store(store_url)
    try:
        assert sorted(store.queue_ids()) == sorted(accepted.values()), "250s and store differ"
        for token, queue_id in accepted.items():
            data = store.message_data(queue_id)
            assert data is not None and data.endswith(big_message(token)), queue_id
    finally:
        store.close()
    assert len(refused) >= REFUSALS_TO_STOP, "the disk never filled up"
    assert accepted, "not even the first message fitted"
    assert all(r.startswith("452 4.3.1 ") for r in refused), refused
    assert outcomes[-1][1] == 452, "a message was accepted after the checkpoint failed"
    assert "database or disk is full" in gateway.log, "the disk failure was not logged"
