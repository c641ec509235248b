"""The outage drill: the company's server is down, mail waits, then drains exactly once."""

from __future__ import annotations

import time

import pytest

from tests.downstream import ConnectionCounter, PostfixDownstream
from tests.gateway_process import free_port
from tests.integration.delivery.gateway import queue_json, send_many, start_delivering, wait_states

pytestmark = [pytest.mark.integration, pytest.mark.drill]

MESSAGES = 500
CONCURRENCY = 20
ROUTE_CONCURRENCY = 5
PROBE_EVERY = 1.0



def test_outage_then_recovery_delivers_everything_once_in_order_without_a_probe_storm(
        gateway_factory, store_url, folder) -> None:
    port = free_port()
    down = ConnectionCounter(port).start()  # the company's server: up as TCP, refusing service
    try:
        gateway = start_delivering(
            gateway_factory, store_url, {"example.test": f"smtp://127.0.0.1:{port}"},
            delivery={"min_backoff": PROBE_EVERY, "max_backoff": PROBE_EVERY,
                      "concurrency": CONCURRENCY, "route_concurrency": ROUTE_CONCURRENCY,
                      "down_after": 3})
        outage_started = time.monotonic()
        sent = send_many(gateway.port, MESSAGES)

        found = wait_states(gateway, {"deferred": MESSAGES}, timeout=60)
        assert found == {"deferred": MESSAGES}
        for entry in queue_json(gateway, "--limit", "100000")[:20]:
            reply = entry["recipients"][0]["last_reply"]
            assert "421" in reply or "suspended" in reply, reply
        routes = gateway.cli("routes")
        assert f"smtp://127.0.0.1:{port}" in routes.stdout and " down since " in routes.stdout
        # Let the gateway sit through a few probe periods of the outage.
        time.sleep(4 * PROBE_EVERY)
        outage = time.monotonic() - outage_started
        attempts = down.count
    finally:
        down.stop()

    # No storm: the failures that mark the route down (one per slot at most), then one
    # probe per period; never one connection per queued message.
    allowed = 3 + ROUTE_CONCURRENCY + int(outage / PROBE_EVERY) + 2
    assert attempts <= allowed, f"{attempts} connections in {outage:.1f}s of outage"
    assert gateway.log.count("is down after") == 1  # logged once per change

    company = PostfixDownstream(folder / "company", port).start()
    try:
        arrived = company.wait_for(MESSAGES, timeout=120)
        wait_states(gateway, {"delivered": MESSAGES}, timeout=60)
        time.sleep(1.0)  # a duplicate would still be on its way: give it a moment
        ids = company.message_ids()
    finally:
        company.stop()
    assert len(arrived) == MESSAGES
    assert len(ids) == MESSAGES and set(ids) == set(sent), "lost or duplicated messages"
    # Oldest first: after the probe that found the server back (any waiting message can
    # be that one), each message arrives within two claim batches of its place in the
    # sending order (the batch in flight at the recovery goes back to the queue in
    # arrival order, beside the next one; within a batch, parallel connections).
    probe, drained = ids[0], ids[1:]
    rest = [m for m in sent if m != probe]
    position = {message_id: index for index, message_id in enumerate(rest)}
    displacement = max(abs(position[m] - index) for index, m in enumerate(drained))
    assert displacement <= 2 * CONCURRENCY, displacement
    assert gateway.log.count("is up again") == 1
