"""The composition root: builds every part from the settings and owns start-up and shutdown.

Start-up order: store (migrations) -> group committer -> intake -> SMTP
listeners -> extra ingress workers -> delivery -> webmail -> monitoring listener (the
last three on the primary process only). SMTP ingress, delivery and the webmail can each
be switched off, so a node can do any of them. Shutdown runs it backwards: stop serving
the monitoring listener and the webmail, stop
accepting, let sessions finish their current
transaction (bounded), let deliveries in flight finish (bounded; the rest stay
leased and return to the queue at the next start), drain the committer, close
the store. Nothing is created at import time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo

from spoolgate.admin.actions import make_releaser
from spoolgate.admin.console import console_routes
from spoolgate.admin.monitoring import MonitoringService, start_monitoring
from spoolgate.config import Settings
from spoolgate.delivery.scheduler import DeliveryService
from spoolgate.ingress.server import SmtpService, start_smtp
from spoolgate.intake.pipeline import Intake, IntakeSettings
from spoolgate.intake.refusals import RefusalRecorder
from spoolgate.intake.rescan import Rescanner
from spoolgate.intake.scanning import Scanning
from spoolgate.mail.envelope import Envelope
from spoolgate.mail.verdict import Action
from spoolgate.ops.logging import setup_logging
from spoolgate.ops.metrics import Metrics
from spoolgate.scan.attachments import AttachmentRules
from spoolgate.scan.authentication import Authenticator, stub_resolver
from spoolgate.scan.base import Scanner
from spoolgate.scan.bayes import BayesClassifier
from spoolgate.scan.builtin import BuiltinScanner
from spoolgate.scan.clamav import ClamavScanner
from spoolgate.scan.heuristics import HeuristicsContext
from spoolgate.scan.pipeline import ScanPipeline
from spoolgate.scan.policy import ScanPolicy
from spoolgate.scan.rspamd import RspamdScanner
from spoolgate.scan.spamassassin import SpamAssassinScanner
from spoolgate.store.bayes import BayesStore
from spoolgate.store.groupcommit import GroupCommitter
from spoolgate.store.queue import Queue
from spoolgate.store.rejections import RefusalLog
from spoolgate.store.senders import SenderRules
from spoolgate.store.store import Store, StoreError, open_store
from spoolgate.webmail.digest import DigestSender
from spoolgate.webmail.server import WebService, start_webmail

log = logging.getLogger("spoolgate")
SHUTDOWN_GRACE = 10.0
CHECKPOINT_INTERVAL = 0.5


def run(main: Coroutine[object, object, None]) -> None:
    """Run *main* on uvloop (libuv's event loop) when it is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


@dataclass
class Gateway:
    settings: Settings
    store: Store
    committer: GroupCommitter
    smtp: SmtpService | None = None
    workers: list[multiprocessing.process.BaseProcess] = field(default_factory=list)
    maintenance: asyncio.Task[None] | None = None
    delivery: DeliveryService | None = None
    web: WebService | None = None
    refusals: RefusalRecorder | None = None
    metrics: Metrics = field(default_factory=Metrics)
    monitoring: MonitoringService | None = None
    digest: asyncio.Task[None] | None = None
    rescanner: asyncio.Task[None] | None = None


async def start_gateway(settings: Settings, primary: bool = True) -> Gateway:
    """Open the store and start listening; with *primary*, also start the extra workers."""
    store = await asyncio.to_thread(open_store, settings.store.url, settings.store.auto_migrate)
    metrics = Metrics(process=True)
    delivery = (DeliveryService(settings, store, metrics)
                if primary and settings.delivery.enabled else None)
    committer = GroupCommitter(store, max_wait=settings.store.group_commit_wait_ms / 1000,
                               observe=delivery.wake if delivery else None, metrics=metrics)
    committer.start()
    refusals = RefusalRecorder(RefusalLog(store), settings.smtp.refusal_log_days)
    refusals.start()
    scanning = build_scanning(settings, store)
    intake = Intake(IntakeSettings(hostname=settings.smtp.hostname, node=settings.node.name,
                                   max_received_headers=settings.smtp.max_received_headers,
                                   hold_unscanned=_holds_unscanned(settings)),
                    committer, scanning, refusals=refusals, metrics=metrics)
    gateway = Gateway(settings, store, committer, refusals=refusals, metrics=metrics)
    # With several ingress processes, delivery gets the primary process to itself (as
    # Postfix keeps qmgr and smtp apart from smtpd), so the two never share one GIL.
    listens = settings.smtp.enabled and (
        not primary or delivery is None or settings.smtp.workers == 1)
    if listens:
        gateway.smtp = await start_smtp(settings, intake, metrics)
    if primary:
        if settings.smtp.enabled:
            gateway.workers = _spawn_workers(settings, settings.smtp.workers - int(listens))
        gateway.maintenance = asyncio.get_running_loop().create_task(_maintain(store))
    if delivery is not None:
        await delivery.start()
        gateway.delivery = delivery
        if scanning is not None and _holds_unscanned(settings):
            rescanner = Rescanner(Queue(store, settings.node.name), scanning,
                                  hold=settings.scan.rescan_hold_minutes * 60,
                                  interval=settings.scan.rescan_interval)
            gateway.rescanner = asyncio.get_running_loop().create_task(rescanner.run())
    if primary:
        gateway.digest = start_digest(settings, store,
                                      functools.partial(intake.accept, origin="gateway"))
    if primary and settings.web.enabled:
        gateway.web = await start_webmail(settings, store,
                                          submit=functools.partial(intake.accept,
                                                                   origin="webmail"),
                                          scanning=scanning,
                                          classifier=build_classifier(settings, store),
                                          extra_routes=_console(settings, store, scanning),
                                          metrics=metrics)
    if primary and settings.metrics.enabled:
        gateway.monitoring = await start_monitoring(
            settings, metrics, store, lambda: _smtp_not_ready(gateway),
            scanning.scanners if scanning is not None else ())
    return gateway


def _holds_unscanned(settings: Settings) -> bool:
    """Whether mail a ``rescan_on_error`` scanner let through is held for a rescan."""
    return bool(settings.scan.rescan_on_error) and settings.scan.rescan_hold_minutes > 0


def digest_sender(settings: Settings, store: Store,
                  submit: Callable[[Envelope, bytes], Awaitable[str]]) -> DigestSender | None:
    """The quarantine digest's sender, or None when ``[digest]`` is off or has no
    ``public_url`` (its links need one: said once in the log)."""
    digest = settings.digest
    if not digest.enabled:
        return None
    if digest.public_url is None:
        log.warning("quarantine digests are off: set [digest] public_url to the webmail's "
                    "address as users reach it")
        return None
    return DigestSender(store, submit, public_url=digest.public_url, hour=digest.hour,
                        zone=ZoneInfo(settings.web.timezone), link_days=digest.link_days,
                        node=settings.node.name,
                        user_release={d.name: d.spam.user_release for d in settings.domains})


def start_digest(settings: Settings, store: Store,
                 submit: Callable[[Envelope, bytes], Awaitable[str]]) -> asyncio.Task[None] | None:
    """The daily digest's task on the primary node (None when digests are off)."""
    sender = digest_sender(settings, store, submit)
    return asyncio.get_running_loop().create_task(sender.run()) if sender else None


async def send_digests_now(settings: Settings, force: bool = False) -> int:
    """``spoolgate digest send``: queue the digests due now (with *force*, every opted-in
    user's) through a short-lived intake, and return how many."""
    store = await asyncio.to_thread(open_store, settings.store.url, settings.store.auto_migrate)
    committer = GroupCommitter(store)
    committer.start()
    try:
        intake = Intake(IntakeSettings(hostname=settings.smtp.hostname, node=settings.node.name,
                                       max_received_headers=settings.smtp.max_received_headers),
                        committer, build_scanning(settings, store))
        sender = digest_sender(settings, store,
                               functools.partial(intake.accept, origin="gateway"))
        return await sender.send_due(force) if sender is not None else 0
    finally:
        await committer.stop()
        await asyncio.to_thread(store.close)


def _smtp_not_ready(gateway: Gateway) -> str | None:
    """Why the SMTP side cannot take mail now (for ``/readyz``), or None."""
    if not gateway.settings.smtp.enabled:
        return None
    if gateway.smtp is not None and not all(s.is_serving() for s in gateway.smtp.servers):
        return "SMTP listeners closed"
    if any(not worker.is_alive() for worker in gateway.workers):
        return "an ingress worker process has exited"
    return None


def build_scanning(settings: Settings, store: Store | None = None,
                   executor: Executor | None = None) -> Scanning | None:
    """The scanners of ``[scan]`` and each domain's policy; None when none is configured.

    *store* holds the Bayes classifier's tokens (no Bayes without it); *executor* runs the
    built-in scanner's blocking work (the default executor when None).
    """
    scan = settings.scan
    scanners: list[Scanner] = []
    for name in scan.scanners:
        if name == "builtin":
            scanners.append(_builtin_scanner(settings, store, executor))
        elif name == "clamav":
            scanners.append(ClamavScanner(scan.clamav))
        elif name == "rspamd":
            scanners.append(RspamdScanner(scan.rspamd))
        elif name == "spamassassin":
            scanners.append(SpamAssassinScanner(scan.spamassassin,
                                                hostname=settings.smtp.hostname))
    if not scanners:
        return None
    rescan = frozenset(scan.rescan_on_error)
    policies = {d.name: ScanPolicy(
        tag_score=d.spam.tag, quarantine_score=d.spam.quarantine, reject_score=d.spam.reject,
        virus_action=Action(d.spam.virus), unscannable_action=Action(d.spam.unscannable),
        rescan_on_error=rescan, allow=d.spam.allow_senders, block=d.spam.block_senders,
        subject_prefix=d.spam.subject_prefix, dmarc_enforce=d.spam.dmarc_enforce)
        for d in settings.domains}
    return Scanning(ScanPipeline(scanners, scan.budget), policies,
                    SenderRules(store).snapshot if store is not None else None)


def build_classifier(settings: Settings, store: Store) -> BayesClassifier | None:
    """The built-in Bayes classifier over *store*, for learning what users mark as spam or
    not spam; None unless the built-in scanner runs with ``[scan] bayes`` on."""
    if not settings.scan.bayes or "builtin" not in settings.scan.scanners:
        return None
    return BayesClassifier(BayesStore(store.engine, store.write_lock))


def _builtin_scanner(settings: Settings, store: Store | None,
                     executor: Executor | None) -> BuiltinScanner:
    scan = settings.scan
    rules = AttachmentRules(max_archive_depth=scan.max_archive_depth)
    if scan.blocked_extensions is not None:
        rules = replace(rules, blocked_extensions=frozenset(
            extension.lstrip(".") for extension in scan.blocked_extensions))
    authenticator = None
    if scan.authentication:
        nameservers = [str(endpoint) for endpoint in settings.dns.nameservers]
        authenticator = Authenticator(stub_resolver(nameservers, settings.dns.timeout),
                                      timeout=min(scan.budget, settings.dns.timeout))
    bayes = BayesClassifier(BayesStore(store.engine, store.write_lock)) \
        if store and scan.bayes else None
    return BuiltinScanner(
        context=HeuristicsContext(own_domains=frozenset(d.name for d in settings.domains)),
        attachments=rules, authenticator=authenticator, bayes=bayes, executor=executor)


async def _maintain(store: Store) -> None:
    """Background store upkeep on the primary process: WAL checkpoints off the commit path."""
    failing = False
    while True:
        await asyncio.sleep(CHECKPOINT_INTERVAL)
        try:
            await asyncio.to_thread(store.checkpoint)
        except StoreError as error:
            if not failing:  # once per change, not every half second
                log.warning("store checkpoint failed (logged once until it works again): %s", error)
            failing = True
        else:
            if failing:
                log.info("store checkpoint working again")
            failing = False


async def stop_gateway(gateway: Gateway) -> None:
    if gateway.monitoring is not None:
        await gateway.monitoring.stop()
    for task in (gateway.digest, gateway.rescanner):
        if task is not None:
            task.cancel()
    if gateway.web is not None:
        await gateway.web.stop()
    if gateway.smtp is not None:
        await gateway.smtp.close()
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while gateway.smtp.limiter.open_sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    if gateway.delivery is not None:
        await gateway.delivery.stop()
    if gateway.maintenance is not None:
        gateway.maintenance.cancel()
    for worker in gateway.workers:
        worker.terminate()
    if gateway.refusals is not None:
        await gateway.refusals.stop()
    await gateway.committer.stop()
    await asyncio.to_thread(gateway.store.close)
    for worker in gateway.workers:
        await asyncio.to_thread(worker.join, SHUTDOWN_GRACE)


async def serve(settings: Settings, primary: bool = True) -> None:
    """Run the gateway until SIGTERM or SIGINT (or, for a worker, until its parent dies)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    gateway = await start_gateway(settings, primary)
    watcher = None if primary else loop.create_task(_watch_parent(os.getppid(), stop))
    log.info("started node=%s store=%s pid=%d", settings.node.name, gateway.store.backend,
             os.getpid())
    await stop.wait()
    log.info("stopping pid=%d", os.getpid())
    if watcher is not None:
        watcher.cancel()
    await stop_gateway(gateway)


def _console(settings: Settings, store: Store, scanning: Scanning | None):
    """The admin console's routes, served by the webmail's listener."""
    releaser = make_releaser(Queue(store, settings.node.name), scanning)
    return console_routes(settings, releaser)


async def serve_web(settings: Settings) -> None:
    """Run only the webmail until SIGTERM or SIGINT (``spoolgate web``)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    store = await asyncio.to_thread(open_store, settings.store.url, settings.store.auto_migrate)
    try:
        scanning = build_scanning(settings, store)
        web = await start_webmail(settings, store, scanning=scanning,
                                  classifier=build_classifier(settings, store),
                                  extra_routes=_console(settings, store, scanning))
        await stop.wait()
        await web.stop()
    finally:
        await asyncio.to_thread(store.close)


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(0.5)
    stop.set()


def _spawn_workers(settings: Settings, count: int) -> list[multiprocessing.process.BaseProcess]:
    context = multiprocessing.get_context("spawn")
    workers = []
    for number in range(1, count + 1):
        worker = context.Process(target=run_worker, args=(settings,), name=f"ingress-{number}",
                                 daemon=True)
        worker.start()
        workers.append(worker)
    return workers


def run_worker(settings: Settings) -> None:
    """Entry point of an ingress worker process."""
    setup_logging(settings.log.level, settings.log.format, settings.log.file)
    run(serve(settings, primary=False))
