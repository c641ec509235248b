"""The metric families: their names and types as Prometheus sees them, fixed label sets,
and one registry per :class:`Metrics` (two gateways in one process never share counts)."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from spoolgate.ops.metrics import REJECT_REASONS, REPLY_CLASSES, VERDICTS, Metrics, reply_class


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition text, parsed back as a scraper would."""
    text = generate_latest(metrics.registry).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _families(metrics: Metrics) -> dict[str, str]:
    text = generate_latest(metrics.registry).decode()
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def test_families_follow_prometheus_naming() -> None:
    families = _families(Metrics())
    assert families == {
        "spoolgate_smtp_sessions": "counter",
        "spoolgate_smtp_replies": "counter",
        "spoolgate_messages_accepted": "counter",
        "spoolgate_messages_rejected": "counter",
        "spoolgate_scan_duration_seconds": "histogram",
        "spoolgate_scan_verdicts": "counter",
        "spoolgate_delivery_attempts": "counter",
        "spoolgate_delivery_replies": "counter",
        "spoolgate_dsns_sent": "counter",
        "spoolgate_store_commit_batch_messages": "histogram",
        "spoolgate_store_commit_duration_seconds": "histogram",
        "spoolgate_webmail_signins": "counter",
    }
    samples = _samples(Metrics())
    counters = [name for name, kind in families.items() if kind == "counter"]
    for name in counters:  # the exposition names every counter's samples NAME_total
        assert any(sample == f"{name}_total" for sample, _ in samples), name


def test_every_label_value_is_exported_at_zero_before_any_event() -> None:
    samples = _samples(Metrics())
    for klass in REPLY_CLASSES:
        assert samples[("spoolgate_smtp_replies_total", (("class", klass),))] == 0
        assert samples[("spoolgate_delivery_replies_total", (("class", klass),))] == 0
    for reason in REJECT_REASONS:
        assert samples[("spoolgate_messages_rejected_total", (("reason", reason),))] == 0
    for verdict in VERDICTS:
        assert samples[("spoolgate_scan_verdicts_total", (("verdict", verdict),))] == 0
    assert samples[("spoolgate_webmail_signins_total", (("result", "failure"),))] == 0


def test_events_are_counted_under_their_labels() -> None:
    metrics = Metrics()
    for code in (220, 250, 250, "354", 550, 451):
        metrics.reply(code)
    metrics.rejected("relay")
    metrics.rejected("unknown_user")
    metrics.rejected("unknown_user")
    metrics.scanned("quarantine", 0.02)
    metrics.delivery_attempt("250 2.0.0 Ok: queued as X")
    metrics.delivery_attempt("451 4.4.1 connect to 127.0.0.1:25: connection refused")
    metrics.committed(3, 0.004)
    metrics.committed(1, 0.002)
    metrics.signin(True)
    metrics.signin(False)
    metrics.signin(False)
    samples = _samples(metrics)
    assert samples[("spoolgate_smtp_replies_total", (("class", "2xx"),))] == 3
    assert samples[("spoolgate_smtp_replies_total", (("class", "3xx"),))] == 1
    assert samples[("spoolgate_smtp_replies_total", (("class", "4xx"),))] == 1
    assert samples[("spoolgate_smtp_replies_total", (("class", "5xx"),))] == 1
    assert samples[("spoolgate_messages_rejected_total", (("reason", "unknown_user"),))] == 2
    assert samples[("spoolgate_messages_rejected_total", (("reason", "relay"),))] == 1
    assert samples[("spoolgate_scan_verdicts_total", (("verdict", "quarantine"),))] == 1
    assert samples[("spoolgate_scan_duration_seconds_count", ())] == 1
    assert samples[("spoolgate_delivery_attempts_total", ())] == 2
    assert samples[("spoolgate_delivery_replies_total", (("class", "4xx"),))] == 1
    assert samples[("spoolgate_store_commit_batch_messages_sum", ())] == 4
    assert samples[("spoolgate_store_commit_batch_messages_count", ())] == 2
    assert samples[("spoolgate_store_commit_batch_messages_bucket", (("le", "2.0"),))] == 1
    assert samples[("spoolgate_store_commit_duration_seconds_count", ())] == 2
    assert samples[("spoolgate_webmail_signins_total", (("result", "success"),))] == 1
    assert samples[("spoolgate_webmail_signins_total", (("result", "failure"),))] == 2


def test_label_values_cannot_grow_beyond_the_fixed_sets() -> None:
    metrics = Metrics()
    metrics.rejected("attacker-chosen text")
    metrics.reply("EHLO")
    metrics.delivery_attempt(None)
    samples = _samples(metrics)
    reasons = {dict(labels)["reason"] for name, labels in samples
               if name == "spoolgate_messages_rejected_total"}
    assert reasons == set(REJECT_REASONS)
    assert samples[("spoolgate_messages_rejected_total", (("reason", "other"),))] == 1
    assert samples[("spoolgate_smtp_replies_total", (("class", "other"),))] == 1
    assert samples[("spoolgate_delivery_replies_total", (("class", "other"),))] == 1


def test_two_gateways_in_one_process_keep_their_own_counts() -> None:
    first, second = Metrics(), Metrics()
    first.smtp_sessions.inc(5)
    assert _samples(first)[("spoolgate_smtp_sessions_total", ())] == 5
    assert _samples(second)[("spoolgate_smtp_sessions_total", ())] == 0


def test_process_figures_only_when_asked() -> None:
    assert not any(name.startswith("process_") for name in _families(Metrics()))
    assert "process_cpu_seconds" in _families(Metrics(process=True))


def test_reply_class() -> None:
    assert [reply_class(c) for c in (250, "421", "554 5.7.1 no", "", None, "1xx", 600)] == [
        "2xx", "4xx", "5xx", "other", "other", "other", "other"]
