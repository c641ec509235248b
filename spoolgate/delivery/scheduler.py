"""The delivery workers: claim due recipients, relay them, record what the server said.

One loop claims due rows with a lease (never more than there are free slots),
groups them by message and destination, and runs one task per group. A task
takes a slot of its route (one while the route is down: the probe; a ramp
after it comes back), reuses or opens a connection, runs one transaction and
turns each recipient's reply into its next state: 2xx delivered, 4xx or a
broken connection deferred on the retry schedule, 5xx failed. DSNs go into the
queue in the same transaction as the outcome that caused them.

A crash loses nothing: a claimed row stays ``delivering`` until its outcome is
committed, and a restart (or another node, after the lease) returns it to the
queue. A message whose 250 was received but not yet recorded is delivered again,
which is the duplicate SMTP itself cannot avoid (RFC 1047).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import time
from collections.abc import Coroutine, Sequence

from spoolgate.config import Settings
from spoolgate.delivery.alerts import Alerts
from spoolgate.delivery.client import MailClient, SessionFailed, Timeouts, Transaction, xtext
from spoolgate.delivery.dsn import Action
from spoolgate.delivery.mx import MxError, ResolverSettings, resolve_mx
from spoolgate.delivery.notices import Report, notice_for
from spoolgate.delivery.recorder import Recorder
from spoolgate.delivery.routes import Destination, RouteGate, RouteTable
from spoolgate.mail.envelope import IncomingMessage
from spoolgate.mail.reply import Reply
from spoolgate.mail.states import RecipientState as S
from spoolgate.ops.metrics import Metrics
from spoolgate.store.queue import ClaimedRecipient, Outcome, Queue, RouteStatus
from spoolgate.store.store import Store, StoreError

log = logging.getLogger("spoolgate.delivery")

LEASE_SWEEP_SECONDS = 5.0
PURGE_BATCH = 500
SHUTDOWN_GRACE = 10.0
CLAIM_GATHER = 0.01  # seconds: a 250 to our sender is never waiting on this


class DeliveryService:
    """Delivery for one node; :meth:`wake` after new mail is stored to skip the poll wait."""

    def __init__(self, settings: Settings, store: Store,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.store = store
        self.queue = Queue(store, settings.node.name)
        self.table = RouteTable(settings)
        self.recorder = Recorder(self.queue, metrics)
        self.alerts = Alerts(settings)
        delivery = settings.delivery
        self.timeouts = Timeouts(delivery.connect_timeout, delivery.greeting_timeout,
                                 delivery.command_timeout, delivery.data_timeout)
        self._gates: dict[str, RouteGate] = {}
        self._status: dict[str, RouteStatus] = {}
        self._status_read = 0.0
        self._inflight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def wake(self, *_: object) -> None:
        self._wake.set()

    async def start(self) -> None:
        released = await asyncio.to_thread(self.queue.release_leases, time.time(),
                                           self.settings.node.name)
        if released:
            log.info("returned %d recipients leased before a restart to the queue", released)
        self.recorder.start()
        for problem in self.alerts.problems():
            log.warning("%s", problem)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._claim_loop(), name="delivery"),
                       loop.create_task(self._upkeep(), name="delivery-upkeep")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=SHUTDOWN_GRACE)
            for task in pending:  # their rows stay leased and return at the next start
                task.cancel()
        for gate in self._gates.values():
            for _, client in gate.idle:
                client.abort()
        await self.recorder.stop()
        await self.alerts.stop()

    # -- claiming ----------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        delivery = self.settings.delivery
        failing = False
        while True:
            self._wake.clear()
            free = delivery.concurrency - len(self._inflight)
            claimed: list[ClaimedRecipient] = []
            down: set[str] = set()
            if free > 0:
                try:
                    await self._refresh_status()
                    down = {name for name, gate in self._gates.items() if gate.down}
                    claimed = await asyncio.to_thread(self.queue.claim_due, time.time(), free,
                                                      delivery.lease)
                    if failing:
                        log.info("delivery: the store answers again")
                    failing = False
                except StoreError as error:
                    if not failing:
                        log.error("delivery paused: the store failed: %s", error)
                    failing = True
            try:
                await self._dispatch(claimed, down)
            except StoreError as error:  # a probe claim failed: those rows wait for the lease
                log.error("delivery: could not dispatch %d recipients (they return to the "
                          "queue when their lease ends): %s", len(claimed), error)
            if claimed and len(claimed) >= free:
                continue  # more may be due; the next turn waits if no slot is free
            try:  # new mail (wake), a finished delivery (a free slot) or the poll interval
                await asyncio.wait_for(self._wake.wait(), delivery.poll_interval)
            except TimeoutError:
                continue
            # The queue was short: let a little more become due, so that one claim and
            # one outcome commit serve several messages instead of one each.
            await asyncio.sleep(CLAIM_GATHER)

    async def _dispatch(self, claimed: list[ClaimedRecipient], down: set[str]) -> None:
        """One task per group, oldest first; on a down route the oldest one is the probe.

        Rows claimed while their route was *down* are not delivered even if it came back
        meanwhile: they were picked in retry order, so they go back to the queue, which
        the recovery put in arrival order (see ``Queue.route_answered``).
        """
        probed: set[str] = set()
        for destination, rows in _groups(claimed, self.table):
            probe = False
            was_down = self._gate(destination).down or destination.name in down
            if was_down and not _expired(destination, rows):
                if destination.name in probed or not await self._take_probe(destination):
                    self._spawn(self._postpone(destination, rows))
                    continue
                probed.add(destination.name)
                probe = True
            self._spawn(self._deliver(destination, rows, probe))

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._inflight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed: %r", task.exception())

    async def _refresh_status(self) -> None:
        now = time.monotonic()
        if now - self._status_read < self.settings.delivery.poll_interval:
            return
        self._status_read = now
        for status in await asyncio.to_thread(self.queue.routes):
            self._status[status.name] = status
            gate = self._gates.get(status.name)
            if gate is not None and gate.down != (status.state == "down"):
                await gate.set_down(status.state == "down")

    def _gate(self, destination: Destination) -> RouteGate:
        gate = self._gates.get(destination.name)
        if gate is None:
            delivery = self.settings.delivery
            gate = RouteGate(destination.name, delivery.route_concurrency,
                             delivery.initial_concurrency)
            status = self._status.get(destination.name)
            gate.down = status is not None and status.state == "down"
            self._gates[destination.name] = gate
        return gate

    # -- one group: one message, one destination ---------------------------------------

    async def _deliver(self, destination: Destination, rows: list[ClaimedRecipient],
                       probe: bool = False) -> None:
        now = time.time()
        expired = [r for r in rows if now >= r.queued_at + destination.retry.lifetime]
        live = [r for r in rows if now < r.queued_at + destination.retry.lifetime]
        try:
            if expired:
                await self._expire(destination, expired, now)
            if live:
                await self._attempt(destination, live, probe)
        except StoreError as error:
            log.error("%s: could not record the outcome (it will be retried after the "
                      "lease): %s", rows[0].queue_id, error)

    async def _attempt(self, destination: Destination, rows: list[ClaimedRecipient],
                       probe: bool) -> None:
        gate = self._gate(destination)
        await gate.acquire()
        try:
            if gate.down and not probe:  # it went down while this task waited for its slot
                await self._postpone(destination, rows)
                return
            await self._transact(destination, gate, rows)
        finally:
            await gate.release()

    async def _take_probe(self, destination: Destination) -> bool:
        status = self._status.get(destination.name)
        failures = status.failures if status else 1
        cadence = destination.retry.backoff(
            max(1, failures - self.settings.delivery.down_after + 1))
        now = time.time()
        got, due = await asyncio.to_thread(self.queue.claim_probe, destination.name, now,
                                           now + cadence)
        if status is not None:
            self._status[destination.name] = dataclasses.replace(status, next_probe_at=due)
        return got

    async def _postpone(self, destination: Destination, rows: list[ClaimedRecipient]) -> None:
        """While a route is down, rows wait for its next probe without a connection.

        Their senders still get the delay notice when it is due: a long outage must not
        leave all but the probe's sender uninformed.
        """
        status = self._status.get(destination.name)
        now = time.time()
        until = max(now + 0.1, status.next_probe_at if status else 0.0)
        reason = f"delivery to {destination.name} temporarily suspended: " + (
            status.last_error if status and status.last_error else "route down")
        warn = {r.row_id for r in rows if self._delay_notice_due(r, destination, now)}
        reports = [Report(r, Action.DELAYED, "4.4.1", reason, None, None,
                          will_retry_until=r.queued_at + destination.retry.lifetime)
                   for r in rows if r.row_id in warn]
        try:
            notices: list[IncomingMessage] = []
            if reports:
                data = rows[0].data
                if data is None:
                    data = await asyncio.to_thread(self.store.message_data, rows[0].queue_id)
                notices = self._notices(reports, data or b"", now)
            await self.recorder.record([
                Outcome(r.row_id, r.queue_id, r.address, S.DEFERRED, reason, until,
                        attempted=False, delay_notified=r.delay_notified or r.row_id in warn,
                        route=destination.name) for r in rows], notices)
        except StoreError as error:
            log.error("%s: could not postpone (retried after the lease): %s", rows[0].queue_id,
                      error)

    @staticmethod
    def _delay_notice_due(row: ClaimedRecipient, destination: Destination, now: float) -> bool:
        warning = destination.retry.delay_warning
        return not row.delay_notified and warning > 0 and now - row.queued_at >= warning

    async def _transact(self, destination: Destination, gate: RouteGate,
                        rows: list[ClaimedRecipient]) -> None:
        head = rows[0]
        started = time.monotonic()
        data = head.data
        if data is None:
            data = await asyncio.to_thread(self.store.message_data, head.queue_id)
        if data is None:
            log.error("%s: message data missing; recipients stay queued", head.queue_id)
            return
        replies: dict[str, Reply] | None = None
        client: MailClient | None = None
        try:
            for reused in (True, False):
                client = gate.take_idle() if reused else None
                if reused and client is None:
                    continue
                try:
                    if client is None:
                        client = await self._connect(destination)
                    replies = await client.send(self._transaction(head, rows, data, client))
                    break
                except SessionFailed:
                    if client is not None:
                        client.abort()
                    if not reused:
                        raise
                    # A cached connection the server had closed: one fresh try.
        except SessionFailed as failure:
            gate.backed_off()
            await self._route_failed(destination, gate, failure.reply)
            status = self._status.get(destination.name)
            # On a down route, wait for the next probe like the postponed rows, so that
            # the oldest message is the next probe, not the one that failed last.
            probe_at = status.next_probe_at if status and status.state == "down" else None
            await self._settle(destination, rows, data, dict.fromkeys(
                (r.address for r in rows), failure.reply), remote=None, dsn_downstream=False,
                not_before=probe_at)
            return
        except MxError as error:
            await self._settle(destination, rows, data, dict.fromkeys(
                (r.address for r in rows), error.reply), remote=None, dsn_downstream=False)
            return
        assert client is not None and replies is not None
        gate.put_idle(client)
        elapsed = time.monotonic() - started
        if any(reply.code < 400 for reply in replies.values()):
            gate.succeeded(elapsed)
        elif all(400 <= reply.code < 500 for reply in replies.values()):
            gate.backed_off()
        await self._route_answered(destination, gate)
        await self._settle(destination, rows, data, replies, remote=client.remote,
                           dsn_downstream="DSN" in client.extensions, lmtp=client.lmtp)

    async def _connect(self, destination: Destination) -> MailClient:
        helo = self.settings.smtp.hostname
        if destination.host is not None:
            return await MailClient.open(
                destination.host, destination.port, lmtp=destination.lmtp, helo=helo,
                tls_mode=destination.tls_mode, tls_context=destination.tls_context(),
                timeouts=self.timeouts, auth=destination.auth)
        dns = self.settings.dns
        resolver = ResolverSettings(tuple((e.host, e.port) for e in dns.nameservers), dns.timeout)
        hosts = await resolve_mx(destination.mx_domain or "", resolver)
        failure: SessionFailed | None = None
        allow_private = self.settings.outbound.allow_private_mx
        for host in hosts:
            for address in host.addresses:
                if not allow_private and not ipaddress.ip_address(address).is_global:
                    continue  # a stranger's MX must not aim our mail at internal hosts
                try:
                    return await MailClient.open(
                        address, destination.port, lmtp=False, helo=helo,
                        tls_mode=destination.tls_mode, tls_context=None,
                        timeouts=self.timeouts, remote=host.name)
                except SessionFailed as error:
                    failure = error
        if failure is None:
            raise MxError(Reply(554, "5.4.4", f"the MX hosts of {destination.mx_domain} have "
                                              "only non-public addresses"))
        raise failure

    def _transaction(self, head: ClaimedRecipient, rows: Sequence[ClaimedRecipient],
                     data: bytes, client: MailClient) -> Transaction:
        ext = client.extensions
        mail: list[str] = []
        if "SIZE" in ext:
            mail.append(f"SIZE={len(data)}")
        if head.body_type == "8BITMIME" and "8BITMIME" in ext:
            mail.append("BODY=8BITMIME")
        if head.smtputf8 and "SMTPUTF8" in ext:
            mail.append("SMTPUTF8")
        rcpt: list[tuple[str, ...]] = [() for _ in rows]
        if "DSN" in ext:
            if head.ret:
                mail.append(f"RET={head.ret}")
            if head.envid:
                mail.append(f"ENVID={xtext(head.envid)}")
            rcpt = [_dsn_rcpt_params(r) for r in rows]
        return Transaction(head.sender, tuple(r.address for r in rows), data, tuple(mail),
                           tuple(rcpt), smtputf8=head.smtputf8)

    # -- route health ------------------------------------------------------------------

    async def _route_failed(self, destination: Destination, gate: RouteGate,
                            reply: Reply) -> None:
        delivery = self.settings.delivery
        before = self._status.get(destination.name)
        status, change = await asyncio.to_thread(
            self.queue.route_failed, destination.name, str(reply), time.time(),
            delivery.down_after, destination.retry.min_backoff,
            down_seconds=delivery.down_after_minutes * 60, domains=_domains(destination),
            alerts=self.alerts.messages)
        self._status[destination.name] = status
        if status.state == "down" and not gate.down:
            await gate.set_down(True)
            if before is not None and before.state == "recovering":
                log.warning("route %s failed again before it was reported up: %s; probing "
                            "again", destination.name, reply)
        if change is not None:
            log.warning("route %s is down after %d failed connections: %s; probing every "
                        "%gs from now on", destination.name, status.failures, reply,
                        destination.retry.min_backoff)
            self.alerts.notify(change)

    async def _route_answered(self, destination: Destination, gate: RouteGate) -> None:
        status = self._status.get(destination.name)
        if status is not None and status.state == "up" and status.failures == 0:
            return
        up_after = self.settings.delivery.up_after
        status, change = await asyncio.to_thread(
            self.queue.route_answered, destination.name, time.time(), _domains(destination),
            up_after, self.alerts.messages)
        self._status[destination.name] = status
        reopened = gate.down and status.state != "down"
        if reopened:
            await gate.set_down(False)
            if change is None:
                log.warning("route %s answers again; its queue drains oldest first; reported "
                            "up after %d successful deliveries", destination.name, up_after)
            self.wake()
        if change is not None:
            log.warning("route %s is up again; %s", destination.name,
                        "its queue drains oldest first" if reopened
                        else f"{up_after} successful deliveries in a row")
            self.alerts.notify(change)

    # -- outcomes ----------------------------------------------------------------------

    async def _settle(self, destination: Destination, rows: Sequence[ClaimedRecipient],
                      data: bytes, replies: dict[str, Reply], remote: str | None,
                      dsn_downstream: bool, lmtp: bool = False,
                      not_before: float | None = None) -> None:
        now = time.time()
        delivery = self.settings.delivery
        outcomes: list[Outcome] = []
        reports: list[Report] = []
        for row in rows:
            reply = replies[row.address]
            text = str(reply)
            detail = f"route={destination.name} relay={remote or '-'} reply={text}"
            expires = row.queued_at + destination.retry.lifetime
            if reply.code < 400:
                outcomes.append(Outcome(row.row_id, row.queue_id, row.address, S.DELIVERED,
                                        text, now, remote_mta=remote, event="delivered",
                                        detail=detail, retention=destination.retention,
                                        delay_notified=row.delay_notified))
                if not dsn_downstream:
                    reports.append(Report(row, Action.DELIVERED if lmtp else Action.RELAYED,
                                          reply.enhanced or "2.0.0", text, remote, now))
                self._log(row, destination, remote, now, "sent", text)
            elif reply.code < 500:
                next_at = min(expires, now + destination.retry.backoff(row.attempts + 1))
                if not_before is not None:
                    next_at = min(expires, not_before)
                warn = self._delay_notice_due(row, destination, now)
                outcomes.append(Outcome(row.row_id, row.queue_id, row.address, S.DEFERRED,
                                        text, next_at, remote_mta=remote, event="deferred",
                                        detail=detail,
                                        delay_notified=row.delay_notified or warn))
                if warn:
                    reports.append(Report(row, Action.DELAYED, reply.enhanced or "4.0.0", text,
                                          remote, now, will_retry_until=expires))
                self._log(row, destination, remote, now, "deferred", text)
            else:
                outcomes.append(Outcome(row.row_id, row.queue_id, row.address, S.FAILED, text,
                                        now, remote_mta=remote, event="failed", detail=detail,
                                        retention=delivery.failed_retention_days * 86400,
                                        delay_notified=row.delay_notified))
                reports.append(Report(row, Action.FAILED, reply.enhanced or "5.0.0", text,
                                      remote, now))
                self._log(row, destination, remote, now, "bounced", text)
        await self.recorder.record(outcomes, self._notices(reports, data, now))

    async def _expire(self, destination: Destination, rows: list[ClaimedRecipient],
                      now: float) -> None:
        last = await asyncio.to_thread(self.queue.last_replies, rows[0].queue_id)
        data = await asyncio.to_thread(self.store.message_data, rows[0].queue_id) or b""
        outcomes, reports = [], []
        for row in rows:
            reply, remote, attempted = last.get(row.address, (None, None, None))
            text = (f"message expired after {_duration(destination.retry.lifetime)} in the "
                    f"queue; last reply: {reply or 'none'}")
            outcomes.append(Outcome(row.row_id, row.queue_id, row.address, S.FAILED, text, now,
                                    attempted=False, event="expired", detail=text,
                                    retention=self.settings.delivery.failed_retention_days * 86400))
            reports.append(Report(row, Action.FAILED, "4.4.7", reply or text, remote, attempted))
            self._log(row, destination, remote, now, "expired", text)
        await self.recorder.record(outcomes, self._notices(reports, data, now))

    def _notices(self, reports: list[Report], data: bytes, now: float) -> list[IncomingMessage]:
        """One notice per kind (failure, delay, success) for the reports of one message."""
        notices = []
        for kind in ((Action.FAILED,), (Action.DELAYED,), (Action.DELIVERED, Action.RELAYED)):
            group = [r for r in reports if r.action in kind]
            if not group:
                continue
            notice = notice_for(group, data, self.settings.smtp.hostname,
                                self.settings.node.name, group[0].row.queued_at, now)
            if notice is not None:
                notices.append(notice)
                log.info("%s: %s notice queued as %s", group[0].row.queue_id,
                         kind[0].value, notice.queue_id)
        return notices

    @staticmethod
    def _log(row: ClaimedRecipient, destination: Destination, remote: str | None, now: float,
             status: str, reply: str) -> None:
        log.info("%s: to=<%s>, relay=%s[%s], delay=%.2f, status=%s (%s)", row.queue_id,
                 row.address, destination.name, remote or "none", now - row.queued_at, status,
                 reply)

    # -- upkeep ------------------------------------------------------------------------

    async def _upkeep(self) -> None:
        delivery = self.settings.delivery
        next_sweep = next_purge = 0.0
        while True:
            await asyncio.sleep(1.0)
            mono = time.monotonic()
            for gate in self._gates.values():
                for client in gate.expired_idle(mono):
                    await client.quit()
            try:
                if mono >= next_sweep:
                    next_sweep = mono + LEASE_SWEEP_SECONDS
                    returned = await asyncio.to_thread(self.queue.release_leases, time.time())
                    if returned:
                        log.warning("returned %d recipients with expired leases to the queue",
                                    returned)
                if mono >= next_purge:
                    next_purge = mono + delivery.purge_interval
                    cutoff = time.time() - self.settings.scan.quarantine_days * 86400
                    keep = delivery.failed_retention_days * 86400
                    while await asyncio.to_thread(self.queue.expire_quarantine, cutoff, keep,
                                                  PURGE_BATCH) == PURGE_BATCH:
                        await asyncio.sleep(0)
                    while await asyncio.to_thread(self.queue.purge, time.time(),
                                                  PURGE_BATCH) == PURGE_BATCH:
                        await asyncio.sleep(0)
            except StoreError as error:
                log.error("delivery upkeep failed: %s", error)


def _groups(rows: Sequence[ClaimedRecipient],
            table: RouteTable) -> list[tuple[Destination, list[ClaimedRecipient]]]:
    grouped: dict[tuple[str, str], tuple[Destination, list[ClaimedRecipient]]] = {}
    for row in rows:
        destination = table.lookup(row.domain, row.route)
        key = (row.queue_id, destination.name)
        grouped.setdefault(key, (destination, []))[1].append(row)
    return list(grouped.values())


def _domains(destination: Destination) -> tuple[str, ...]:
    """The recipient domains whose mail waits for *destination*."""
    if destination.domains:
        return destination.domains
    return (destination.mx_domain,) if destination.mx_domain else ()


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} seconds"


def _expired(destination: Destination, rows: Sequence[ClaimedRecipient]) -> bool:
    return any(time.time() >= r.queued_at + destination.retry.lifetime for r in rows)


def _dsn_rcpt_params(row: ClaimedRecipient) -> tuple[str, ...]:
    params = []
    if row.notify:
        params.append(f"NOTIFY={row.notify}")
    if row.orcpt:
        kind, _, address = row.orcpt.partition(";")
        params.append(f"ORCPT={kind};{xtext(address)}")
    return tuple(params)
