"""spoolgate/store/queue.py route health on SQLite and PostgreSQL: hysteresis, route events
recorded once per change, and the alerts queued in the same transaction."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from spoolgate.mail.envelope import IncomingMessage
from spoolgate.mail.states import RecipientState as S
from spoolgate.store.queue import OUTBOUND, Outcome, Queue, RouteChange
from spoolgate.store.store import Store, open_store
from tests.integration.store.messages import incoming

ROUTE = "smtp://10.0.0.5:25"
DOMAINS = ("example.test",)


@pytest.fixture
def queue(store: Store) -> Queue:
    return Queue(store, "node-a")


def _fail(queue: Queue, at: float, down_after: int = 3, down_seconds: float = 0.0,
          alerts=None) -> RouteChange | None:
    _, change = queue.route_failed(ROUTE, "421 4.4.0 connection refused", at, down_after, 5.0,
                                   down_seconds=down_seconds, domains=DOMAINS, alerts=alerts)
    return change


def test_down_needs_n_failures_that_span_m_seconds(queue: Queue) -> None:
    assert _fail(queue, 100.0, down_after=2, down_seconds=60) is None
    assert _fail(queue, 110.0, down_after=2, down_seconds=60) is None  # 2 failures, 10 s
    (status,) = queue.routes()
    assert (status.state, status.failures, status.failing_since) == ("up", 2, 100.0)

    change = _fail(queue, 160.0, down_after=2, down_seconds=60)
    assert change is not None and change.state == "down"
    assert (change.since, change.at, change.failures) == (100.0, 160.0, 3)
    assert change.last_error == "421 4.4.0 connection refused"
    (status,) = queue.routes()
    assert (status.state, status.since, status.next_probe_at) == ("down", 160.0, 165.0)


def test_a_success_between_failures_starts_the_count_again(queue: Queue) -> None:
    _fail(queue, 100.0)
    _fail(queue, 101.0)
    status, change = queue.route_answered(ROUTE, 102.0, DOMAINS)
    assert change is None and (status.state, status.failures, status.failing_since) == (
        "up", 0, None)
    assert _fail(queue, 103.0) is None and _fail(queue, 104.0) is None
    assert queue.routes()[0].failing_since == 103.0
    assert queue.route_events() == []


def test_each_change_is_one_event_and_repeats_are_none(queue: Queue) -> None:
    assert _fail(queue, 1.0, down_after=1) is not None
    assert [_fail(queue, 2.0 + n, down_after=1) for n in range(3)] == [None] * 3
    status, up = queue.route_answered(ROUTE, 10.0, DOMAINS)
    assert up is not None and up.state == "up" and up.since == 1.0 and status.state == "up"
    assert queue.route_answered(ROUTE, 11.0, DOMAINS)[1] is None

    events = queue.route_events()
    assert [(e.state, e.at, e.node, e.route) for e in events] == [
        ("up", 10.0, "node-a", ROUTE), ("down", 1.0, "node-a", ROUTE)]  # newest first
    assert "down after 1 failed attempts" in events[1].detail
    assert [e.state for e in queue.route_events(since=5.0)] == ["up"]
    assert [e.state for e in queue.route_events(limit=1)] == ["up"]


def test_up_after_k_successes(queue: Queue) -> None:
    _fail(queue, 100.0, down_after=1)

    status, change = queue.route_answered(ROUTE, 200.0, DOMAINS, up_after=3)
    assert change is None and (status.state, status.successes) == ("recovering", 1)
    status, change = queue.route_answered(ROUTE, 201.0, DOMAINS, up_after=3)
    assert change is None and (status.state, status.successes) == ("recovering", 2)
    status, change = queue.route_answered(ROUTE, 202.0, DOMAINS, up_after=3)
    assert change is not None and change.state == "up" and status.state == "up"
    assert [e.state for e in queue.route_events()] == ["up", "down"]


def test_a_failure_while_recovering_is_down_again_without_an_event(queue: Queue) -> None:
    _fail(queue, 100.0, down_after=1)
    assert queue.route_answered(ROUTE, 200.0, DOMAINS, up_after=2)[0].state == "recovering"
    assert _fail(queue, 201.0, down_after=1) is None
    (status,) = queue.routes()
    assert (status.state, status.successes, status.since) == ("down", 0, 100.0)
    assert status.next_probe_at == 206.0
    # The successes count again from one.
    assert queue.route_answered(ROUTE, 300.0, DOMAINS, up_after=2)[1] is None
    assert queue.route_answered(ROUTE, 301.0, DOMAINS, up_after=2)[1] is not None
    assert [e.state for e in queue.route_events()] == ["up", "down"]


def test_while_recovering_postponed_mail_is_due_at_once(queue: Queue,
                                                                     store: Store) -> None:
    old = incoming(["a@example.test"], received_at=10.0)
    store.commit_incoming([old])
    _fail(queue, 100.0, down_after=1)
    claimed = queue.claim_due(100.0, 10, 60.0)
    queue.record([Outcome(claimed[0].row_id, old.queue_id, "a@example.test", S.DEFERRED,
                          "suspended", 500.0, attempted=False, route=ROUTE)])
    assert queue.claim_due(150.0, 10, 60.0) == []  # waits for the probe

    assert queue.route_answered(ROUTE, 160.0, DOMAINS, up_after=2)[0].state == "recovering"
    assert [r.queue_id for r in queue.claim_due(160.0, 10, 60.0)] == [old.queue_id]


def _alert_for(change: RouteChange) -> list[IncomingMessage]:
    return [incoming(["ops@example.test", "oncall@provider.test"], sender="",
                     received_at=change.at, events=(("alert", change.state),))]


def test_the_alert_is_queued_with_the_change_for_the_outbound_route(queue: Queue,
                                                                     store: Store) -> None:
    for n in range(3):
        store.commit_incoming([incoming([f"u{n}@example.test"], received_at=1.0)])
    store.commit_incoming([incoming(["x@other.test"], received_at=1.0)])
    calls: list[RouteChange] = []

    def alerts(change: RouteChange) -> list[IncomingMessage]:
        calls.append(change)
        return _alert_for(change)

    assert _fail(queue, 5.0, down_after=2, alerts=alerts) is None
    assert calls == []  # no change, no alert
    change = _fail(queue, 6.0, down_after=2, alerts=alerts)
    assert calls == [change] and change.waiting == 3 and change.domains == DOMAINS
    assert _fail(queue, 7.0, down_after=2, alerts=alerts) is None and len(calls) == 1

    alert_rows = [r for r in queue.claim_due(10.0, 100, 60.0) if r.sender == ""]
    assert sorted(r.address for r in alert_rows) == ["oncall@provider.test", "ops@example.test"]
    assert {r.route for r in alert_rows} == {OUTBOUND}
    assert store.show(alert_rows[0].queue_id).events[0].kind == "alert"


def test_an_alert_that_cannot_be_built_leaves_the_route_as_it_was(queue: Queue,
                                                                   store: Store) -> None:
    """Nothing half-done: the change, its event and its alert commit together or not at all."""
    def broken(change: RouteChange) -> list[IncomingMessage]:
        raise RuntimeError("no alert")

    with pytest.raises(RuntimeError):
        _fail(queue, 1.0, down_after=1, alerts=broken)
    assert queue.routes() == [] and queue.route_events() == []
    assert _fail(queue, 2.0, down_after=1, alerts=_alert_for) is not None
    assert len(queue.route_events()) == 1 and store.count_messages() == 1


def test_many_nodes_failing_at_once_record_one_change(store: Store, store_url: str) -> None:
    """Nodes sharing one store: whoever makes the change records it, exactly once."""
    stores = [open_store(store_url) for _ in range(4)]
    queues = [Queue(s, f"node-{n}") for n, s in enumerate(stores)]
    start = threading.Barrier(len(queues))

    def hammer(queue: Queue) -> list[RouteChange]:
        start.wait(30)
        return [c for n in range(10) if (c := _fail(queue, 100.0 + n, 2, 0.0,
                                                    _alert_for)) is not None]

    try:
        with ThreadPoolExecutor(len(queues)) as pool:
            changes = [c for found in pool.map(hammer, queues) for c in found]
        assert len(changes) == 1
        (event,) = Queue(store, "reader").route_events()
        assert (event.id, event.node, event.state) == (changes[0].event_id, changes[0].node,
                                                       "down")
        assert store.count_messages() == 1  # one alert

        with ThreadPoolExecutor(len(queues)) as pool:
            ups = [c for c in pool.map(
                lambda q: q.route_answered(ROUTE, 500.0, DOMAINS, 1, _alert_for)[1], queues)
                if c is not None]
        assert len(ups) == 1 and store.count_messages() == 2
        assert [e.state for e in Queue(store, "reader").route_events()] == ["up", "down"]
    finally:
        for opened in stores:
            opened.close()
