"""spoolgate/intake/pipeline.py: a store that fails while a message is scanned is a store
failure (452 4.3.1, one log line, a ``store`` refusal), not a crashed scanner (451)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from spoolgate.app import build_scanning
from spoolgate.config import load_settings
from spoolgate.intake.pipeline import Intake, IntakeSettings
from spoolgate.intake.refusals import RefusalRecorder
from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mail.reply import STORAGE_FAILURE, SmtpError
from spoolgate.ops.metrics import Metrics
from spoolgate.store.groupcommit import GroupCommitter
from spoolgate.store.rejections import RefusalLog
from spoolgate.store.store import open_store

MESSAGE = (b"From: a@remote.test\r\nTo: alice@example.test\r\nSubject: Lunch\r\n"
           b"Message-ID: <l@remote.test>\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n\r\n"
           b"Noon?\r\n")
ENVELOPE = Envelope("a@remote.test", (Recipient("alice@example.test"),),
                    ClientInfo("192.0.2.7", "mail.remote.test"))


def test_the_bayes_statistics_unreadable_is_a_452_recorded_as_a_store_refusal(
        folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = folder / "spoolgate.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{folder / "s.db"}"\n'
                      '[scan]\nauthentication = false\n'
                      '[[domains]]\nname = "example.test"\nroute = "smtp://127.0.0.1:2526"\n')
    settings = load_settings(config)
    store = open_store(settings.store.url)
    metrics = Metrics()

    async def run() -> str:
        committer = GroupCommitter(store)
        committer.start()
        recorder = RefusalRecorder(RefusalLog(store), keep_days=1)
        intake = Intake(IntakeSettings("mx.example.test", "n", 30), committer,
                        build_scanning(settings, store), metrics, recorder)
        try:
            with store.writing() as conn:  # the Bayes classifier reads it for every message
                conn.exec_driver_sql("ALTER TABLE bayes_totals RENAME TO away")
            with pytest.raises(SmtpError) as refused:
                await intake.accept(ENVELOPE, MESSAGE)
            with store.writing() as conn:
                conn.exec_driver_sql("ALTER TABLE away RENAME TO bayes_totals")
            await recorder.flush()
            return await intake.accept(ENVELOPE, MESSAGE) and str(refused.value.reply)
        finally:
            await committer.stop()

    try:
        with caplog.at_level(logging.INFO):
            reply = asyncio.run(run())
        with store.reading() as conn:
            recorded = conn.exec_driver_sql(
                "SELECT recipient, stage, reason, reply, subject FROM rejections").all()
    finally:
        store.close()
    assert reply == str(STORAGE_FAILURE) == "452 4.3.1 Insufficient system storage, try again later"
    assert [tuple(r) for r in recorded] == [
        ("alice@example.test", "data", "store", reply, "Lunch")]
    assert metrics.registry.get_sample_value("spoolgate_messages_rejected_total",
                                             {"reason": "store"}) == 1
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "store failure while scanning, answered 452 4.3.1" in errors[0].getMessage()
