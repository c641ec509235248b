"""Logs for operators: one line per event, queue ID first, text or JSON.

Lines read like Postfix's (``3K7P2...: accepted from=<a@b> size=...``) so the
queue ID can be grepped; JSON lines carry the same text in ``msg`` and the queue ID of a
message's line in a ``queue_id`` field of its own (from ``extra={"queue_id": ...}``, else
from the ``QUEUEID: `` that starts the line), so a log pipeline can select one message.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from pathlib import Path

# A queue ID (spoolgate.mail.queueid, which this layer may not import) opening a line.
_QUEUE_ID_PREFIX = re.compile(r"([0-9BCDFGHJKLMNPQRSTVWXYZ]{14}): ")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, pid, msg, and queue_id when a message's."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry = {"ts": round(record.created, 6), "level": record.levelname.lower(),
                 "logger": record.name, "pid": record.process, "msg": message}
        queue_id = getattr(record, "queue_id", None)
        if queue_id is None and (match := _QUEUE_ID_PREFIX.match(message)):
            queue_id = match.group(1)
        if queue_id is not None:
            entry["queue_id"] = str(queue_id)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + \
            f".{int(record.msecs):03d}Z"


def setup_logging(level: str = "info", fmt: str = "text", file: Path | None = None) -> None:
    """Configure the root logger once for this process."""
    handler: logging.Handler
    if file is not None:
        handler = logging.FileHandler(file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosmtpd logs every command at INFO; our own lines say what matters.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
