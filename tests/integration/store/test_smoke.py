"""Smoke test: a message committed through the store reads back the same on both backends."""

import time

import pytest

from spoolgate.mail.envelope import ClientInfo, Envelope, IncomingMessage, Recipient
from spoolgate.mail.queueid import new_queue_id
from spoolgate.store.store import open_store

pytestmark = pytest.mark.integration


def test_commit_and_show_round_trip(store_url: str) -> None:
    store = open_store(store_url)
    try:
        envelope = Envelope("a@src.test", (Recipient("u@example.test"),), ClientInfo("127.0.0.1", "h"))
        queue_id = new_queue_id()
        store.commit_incoming([IncomingMessage(queue_id, envelope, b"Subject: x\r\n\r\nbody\r\n",
                                               time.time(), "n", (("accepted", "x"),))])
        detail = store.show(queue_id)
        assert detail is not None
        assert [r.state for r in detail.entry.recipients] == ["queued"]
        assert store.message_data(queue_id) == b"Subject: x\r\n\r\nbody\r\n"
        assert [e.kind for e in detail.events] == ["accepted"]
    finally:
        store.close()
