"""Intake records where a message came from, and does not scan the gateway's own notices
(a digest listing spam quotes spam: a strict domain would quarantine its own digest)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from spoolgate.app import build_scanning
from spoolgate.config import load_settings
from spoolgate.intake.pipeline import Intake, IntakeSettings
from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mail.reply import SmtpError
from spoolgate.store.groupcommit import GroupCommitter
from spoolgate.store.store import open_store

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
MESSAGE = (b"From: postmaster@example.test\r\nTo: alice@example.test\r\nSubject: Digest\r\n"
           b"Message-ID: <d@example.test>\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n\r\n"
           b"Quarantined for you: " + GTUBE + b"\r\n")


def _accept(folder: Path, origin: str) -> tuple[str | None, str | None]:
    config = folder / "spoolgate.toml"
    config.write_text(f'[smtp]\nhostname = "mx.example.test"\n[store]\n'
                      f'url = "sqlite:///{folder / "s.db"}"\n[scan]\nauthentication = false\n'
                      '[[domains]]\nname = "example.test"\nroute = "smtp://127.0.0.1:2526"\n')
    settings = load_settings(config)
    store = open_store(settings.store.url)
    envelope = Envelope("", (Recipient("alice@example.test"),), ClientInfo("127.0.0.1", "x"))

    async def run() -> tuple[str | None, str | None]:
        committer = GroupCommitter(store)
        committer.start()
        try:
            intake = Intake(IntakeSettings("mx.example.test", "n", 30), committer,
                            build_scanning(settings, store))
            try:
                queue_id = await intake.accept(envelope, MESSAGE, origin=origin)
            except SmtpError as error:
                return None, str(error.reply)
            return queue_id, None
        finally:
            await committer.stop()

    try:
        queue_id, refused = asyncio.run(run())
        if queue_id is not None:
            with store.reading() as conn:
                stored = conn.exec_driver_sql("SELECT origin FROM messages").scalar_one()
            assert stored == origin
        return queue_id, refused
    finally:
        store.close()


@pytest.mark.parametrize("origin", ["smtp", "webmail"])
def test_mail_from_outside_and_from_users_is_scanned(folder: Path, origin: str) -> None:
    queue_id, refused = _accept(folder, origin)
    assert queue_id is None and refused is not None and refused.startswith("550 5.7.1")


def test_the_gateways_own_notice_is_stored_unscanned(folder: Path) -> None:
    queue_id, refused = _accept(folder, "gateway")
    assert refused is None and queue_id is not None
