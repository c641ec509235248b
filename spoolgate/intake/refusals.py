"""Records in-session refusals for message tracking, off the event loop and in batches.

Owns the hand-off from SMTP sessions to :class:`~spoolgate.store.rejections.RefusalLog`:
:meth:`RefusalRecorder.note` only appends to a list (a session never waits on the store
to refuse someone); a task writes what accumulated every second in one transaction on a
thread, and purges rows older than the kept window once an hour. When the store fails,
the batch is dropped with a log line: tracking hints are not worth blocking mail for.
At most :data:`MAX_PENDING` refusals wait; beyond that (a flood) new ones are counted and
dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time

from spoolgate.ops.serving import cancel_and_wait
from spoolgate.store.rejections import Refusal, RefusalLog
from spoolgate.store.store import StoreError

log = logging.getLogger("spoolgate.intake")
FLUSH_EVERY = 1.0
PURGE_EVERY = 3600.0
MAX_PENDING = 10_000


class RefusalRecorder:
    def __init__(self, refusals: RefusalLog, keep_days: float) -> None:
        self._log = refusals
        self._keep = keep_days * 86400
        self._pending: list[Refusal] = []
        self._dropped = 0
        self._task: asyncio.Task[None] | None = None

    def note(self, refusal: Refusal) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._dropped += 1
            return
        self._pending.append(refusal)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="refusals")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if self._dropped:
            log.warning("refusal log: %d refusal(s) not recorded (more than %d waiting)",
                        self._dropped, MAX_PENDING)
            self._dropped = 0
        if not batch:
            return
        try:
            await asyncio.to_thread(self._log.add, batch)
        except StoreError as error:
            log.warning("refusal log: %d refusal(s) not recorded: %s", len(batch), error)

    async def _run(self) -> None:
        purged_at = 0.0
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            await self.flush()
            now = time.time()
            if now - purged_at >= PURGE_EVERY:
                purged_at = now
                try:
                    await asyncio.to_thread(self._log.purge, now - self._keep)
                except StoreError as error:
                    log.warning("refusal log: purge failed: %s", error)
