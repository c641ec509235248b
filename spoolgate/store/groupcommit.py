"""Group commit: many sessions' messages made durable by one transaction and one fsync.

Sessions call :meth:`GroupCommitter.commit` and wait. One writer task takes
everything pending, commits it in a worker thread, and wakes the waiters. While
a commit is running, new messages gather for the next one, so the batch grows
with the load by itself; ``max_wait`` adds a short, bounded pause before a
commit to gather a little more. Durability is never traded for speed: a waiter
is woken only after its transaction has committed. Each batch's size and time go to
the committer's :class:`~spoolgate.ops.metrics.Metrics`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from spoolgate.mail.envelope import IncomingMessage
from spoolgate.ops.metrics import Metrics
from spoolgate.ops.serving import cancel_and_wait
from spoolgate.store.store import Store, StoreError

log = logging.getLogger("spoolgate.store")

BatchObserver = Callable[[int, float], None]
"""Called on the event loop after each commit with the batch size and its seconds."""


class GroupCommitter:
    """Batches :meth:`Store.commit_incoming` calls from concurrent sessions."""

    def __init__(self, store: Store, max_wait: float = 0.001, max_batch: int = 256,
                 observe: BatchObserver | None = None, metrics: Metrics | None = None) -> None:
        self._store = store
        self._metrics = metrics if metrics is not None else Metrics()
        self._max_wait = max_wait
        self._max_batch = max_batch
        self._observe = observe
        self._pending: list[tuple[IncomingMessage, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="group-commit")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        for _, waiter in self._pending:
            if not waiter.done():
                waiter.set_exception(StoreError("store shutting down"))
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    async def commit(self, message: IncomingMessage) -> None:
        """Return once *message* is durably committed; raise :class:`StoreError` if it is not."""
        waiter = asyncio.get_running_loop().create_future()
        self._pending.append((message, waiter))
        self._wake.set()
        await waiter

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            if self._max_wait and len(self._pending) < self._max_batch:
                await asyncio.sleep(self._max_wait)
            self._wake.clear()
            batch, self._pending = self._pending[:self._max_batch], self._pending[self._max_batch:]
            if self._pending:
                self._wake.set()
            if batch:
                await loop.run_in_executor(self._executor, self._commit_batch, loop, batch)

    def _commit_batch(self, loop: asyncio.AbstractEventLoop,
                      batch: Sequence[tuple[IncomingMessage, asyncio.Future[None]]]) -> None:
        started = time.perf_counter()
        try:
            outcomes = self._commit_messages([message for message, _ in batch])
        except Exception as error:  # a bug must not leave sessions waiting forever
            log.exception("group commit crashed")
            outcomes = [StoreError(f"internal error: {error!r}")] * len(batch)
        loop.call_soon_threadsafe(self._settle, batch, outcomes, time.perf_counter() - started)

    def _settle(self, batch: Sequence[tuple[IncomingMessage, asyncio.Future[None]]],
                outcomes: list[StoreError | None], seconds: float) -> None:
        """On the event loop: tell the observer (it may touch loop objects), wake sessions."""
        self._metrics.committed(len(batch), seconds)
        if self._observe is not None:
            self._observe(len(batch), seconds)
        _settle(batch, outcomes)

    def _commit_messages(self, messages: list[IncomingMessage]) -> list[StoreError | None]:
        try:
            self._store.commit_incoming(messages)
            return [None] * len(messages)
        except StoreError as error:
            if len(messages) == 1:
                log.error("%s: commit failed: %s", messages[0].queue_id, error)
                return [error]
            if not error.conflict:  # the store takes nothing now: no point in retrying each
                log.error("commit of %d messages failed: %s", len(messages), error)
                return [error] * len(messages)
        # One bad message must not fail its neighbours: retry them one by one.
        return [self._commit_messages([message])[0] for message in messages]


def _settle(batch: Sequence[tuple[IncomingMessage, asyncio.Future[None]]],
            outcomes: list[StoreError | None]) -> None:
    for (_, waiter), error in zip(batch, outcomes, strict=True):
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)
