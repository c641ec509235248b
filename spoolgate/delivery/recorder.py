"""Batches the outcomes of concurrent deliveries into few store transactions.

Each delivery task hands its outcomes (and the DSNs they cause) to
:meth:`Recorder.record` and waits until they are committed; one task commits
everything pending in a worker thread, so a busy drain pays one fsync per batch,
not one per message. Outcome and DSN commit together or not at all: a DSN is
never queued twice nor lost. Attempts, their reply classes and DSNs are counted in
:attr:`Recorder.metrics` once they are durable, so the figures match the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from spoolgate.mail.envelope import IncomingMessage
from spoolgate.ops.metrics import Metrics
from spoolgate.ops.serving import cancel_and_wait
from spoolgate.store.queue import Outcome, Queue

log = logging.getLogger("spoolgate.delivery")


class Recorder:
    def __init__(self, queue: Queue, metrics: Metrics | None = None) -> None:
        self._queue = queue
        self.metrics = metrics if metrics is not None else Metrics()
        self._pending: list[tuple[Sequence[Outcome], Sequence[IncomingMessage],
                                  asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery-record")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="delivery-record")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await asyncio.to_thread(self._executor.shutdown)

    async def record(self, outcomes: Sequence[Outcome],
                     notices: Sequence[IncomingMessage] = ()) -> None:
        """Return once *outcomes* and *notices* are durable; raises StoreError if not."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((outcomes, notices, future))
        self._wake.set()
        await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            outcomes = [o for item in batch for o in item[0]]
            notices = [n for item in batch for n in item[1]]
            try:
                await loop.run_in_executor(self._executor, self._queue.record, outcomes, notices)
            except Exception as error:  # every waiter must hear of it
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                self._count(outcomes, notices)
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)

    def _count(self, outcomes: Sequence[Outcome], notices: Sequence[IncomingMessage]) -> None:
        for outcome in outcomes:
            if outcome.attempted:
                self.metrics.delivery_attempt(outcome.reply)
        self.metrics.dsns_sent.inc(len(notices))
