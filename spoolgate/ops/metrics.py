"""The gateway's Prometheus metrics: one registry per gateway, counters bumped where events happen.

:class:`Metrics` owns the metric families of one process in its own
:class:`~prometheus_client.CollectorRegistry` (never the library's global one, so several
gateways or tests in one process do not collide). Stages get the object from the
composition root and call its small methods (``reply``, ``rejected``, ...); label values
come from fixed sets, so a mistake or a hostile peer can never grow the series count
(anything unknown is counted as ``other``). Figures that live in the store (queue depth,
route health) are not kept here: :mod:`spoolgate.admin.monitoring` reads them at scrape
time. Nothing here does I/O or raises.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)

REPLY_CLASSES = ("2xx", "3xx", "4xx", "5xx")
REJECT_REASONS = ("relay", "unknown_user", "size", "smuggling", "hops", "virus", "spam",
                  "policy", "tempfail", "store", "other")
VERDICTS = ("pass", "tag", "quarantine", "reject", "tempfail")
SIGNIN_RESULTS = ("success", "failure")
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def reply_class(code: int | str | None) -> str:
    """``"2xx"`` for ``250``; ``"other"`` for anything that is not a three-digit 2xx-5xx code."""
    text = str(code or "")[:3]
    if len(text) == 3 and text.isdigit() and text[0] in "2345":
        return f"{text[0]}xx"
    return "other"


class Metrics:
    """The metric families of one gateway process, in :attr:`registry`."""

    def __init__(self, process: bool = False) -> None:
        """With *process*, also export the standard ``process_*`` figures (CPU, memory, fds)."""
        # A ``*_created`` gauge beside every counter and histogram doubles the series for
        # nothing Prometheus needs; the switch is the library's, process-wide and idempotent.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        if process:
            ProcessCollector(registry=self.registry)
        registry = self.registry
        self.smtp_sessions = Counter(
            "spoolgate_smtp_sessions", "SMTP connections accepted by the listeners",
            registry=registry)
        self.smtp_replies = Counter(
            "spoolgate_smtp_replies", "SMTP replies sent to clients, by code class",
            ["class"], registry=registry)
        self.messages_accepted = Counter(
            "spoolgate_messages_accepted", "Messages stored durably and answered 250",
            registry=registry)
        self.messages_rejected = Counter(
            "spoolgate_messages_rejected",
            "Refusals in the SMTP session by reason (relay and unknown_user count refused "
            "recipients, the others refused messages)", ["reason"], registry=registry)
        self.scan_seconds = Histogram(
            "spoolgate_scan_duration_seconds", "Time to scan one message and decide its verdict",
            buckets=_SECONDS_BUCKETS, registry=registry)
        self.scan_verdicts = Counter(
            "spoolgate_scan_verdicts", "Scan verdicts by action", ["verdict"], registry=registry)
        self.delivery_attempts = Counter(
            "spoolgate_delivery_attempts",
            "Recipient delivery attempts recorded (one per recipient per try)", registry=registry)
        self.delivery_replies = Counter(
            "spoolgate_delivery_replies",
            "Replies to delivery attempts by code class (local failures such as a refused "
            "connection count as the 4xx they are recorded as)", ["class"], registry=registry)
        self.dsns_sent = Counter(
            "spoolgate_dsns_sent", "Delivery status notifications queued to senders",
            registry=registry)
        self.commit_batch = Histogram(
            "spoolgate_store_commit_batch_messages",
            "Messages made durable by one group commit", buckets=_BATCH_BUCKETS,
            registry=registry)
        self.commit_seconds = Histogram(
            "spoolgate_store_commit_duration_seconds",
            "Time of one group commit (transaction and fsync)", buckets=_SECONDS_BUCKETS,
            registry=registry)
        self.webmail_signins = Counter(
            "spoolgate_webmail_signins", "Webmail sign-in attempts by result", ["result"],
            registry=registry)
        # Every series exists from the start at 0, so rate() and alerts see the first event.
        for klass in (*REPLY_CLASSES, "other"):
            self.smtp_replies.labels(klass)
            self.delivery_replies.labels(klass)
        for reason in REJECT_REASONS:
            self.messages_rejected.labels(reason)
        for verdict in VERDICTS:
            self.scan_verdicts.labels(verdict)
        for result in SIGNIN_RESULTS:
            self.webmail_signins.labels(result)

    def reply(self, code: int | str) -> None:
        """Count one SMTP reply sent to a client (its first line's code)."""
        self.smtp_replies.labels(reply_class(code)).inc()

    def rejected(self, reason: str) -> None:
        """Count one refusal; *reason* is one of :data:`REJECT_REASONS` (else ``other``)."""
        self.messages_rejected.labels(reason if reason in REJECT_REASONS else "other").inc()

    def scanned(self, verdict: str, seconds: float) -> None:
        """Count one verdict (an ``Action`` value) and how long the scan took."""
        self.scan_seconds.observe(seconds)
        self.scan_verdicts.labels(verdict if verdict in VERDICTS else "other").inc()

    def delivery_attempt(self, reply: str | None) -> None:
        """Count one recorded delivery attempt by the class of its reply text (``"250 ..."``)."""
        self.delivery_attempts.inc()
        self.delivery_replies.labels(reply_class(reply)).inc()

    def committed(self, messages: int, seconds: float) -> None:
        """Record one group commit of *messages* that took *seconds*."""
        self.commit_batch.observe(messages)
        self.commit_seconds.observe(seconds)

    def signin(self, succeeded: bool) -> None:
        """Count one webmail sign-in attempt (for the webmail's sign-in handler to call)."""
        self.webmail_signins.labels("success" if succeeded else "failure").inc()
