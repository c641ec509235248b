"""JSON log lines: the queue ID of a message's line is a field of its own."""

from __future__ import annotations

import json
import logging

from spoolgate.mail.queueid import new_queue_id
from spoolgate.ops.logging import JsonFormatter


def _line(msg: str, *args: object, **extra: object) -> dict:
    record = logging.LogRecord("spoolgate.intake", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return json.loads(JsonFormatter().format(record))


def test_a_line_opened_by_a_queue_id_carries_it_as_a_field() -> None:
    queue_id = new_queue_id()
    entry = _line("%s: accepted from=<%s> size=%d", queue_id, "a@remote.test", 120)
    assert entry["queue_id"] == queue_id
    assert entry["msg"] == f"{queue_id}: accepted from=<a@remote.test> size=120"


def test_an_explicit_queue_id_wins_over_the_text() -> None:
    queue_id, other = new_queue_id(), new_queue_id()
    entry = _line("%s: notice for %s", other, "x", queue_id=queue_id)
    assert entry["queue_id"] == queue_id


def test_lines_about_no_message_have_no_queue_id() -> None:
    assert "queue_id" not in _line("listening smtp=%s", "127.0.0.1:25")
    assert "queue_id" not in _line("reject: RCPT from=<%s> to=<%s>", "a@b.test", "c@d.test")
    # Something that only looks a little like a queue ID is not taken for one.
    assert "queue_id" not in _line("route down: %s", "smtp://127.0.0.1:2526")
    assert "queue_id" not in _line("%s: too short", "ABC123")
