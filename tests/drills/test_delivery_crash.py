"""Crash drill for delivery: SIGKILL the gateway while it relays 1,000 messages to Postfix.

After the restart every message must reach the company's server; a message may
arrive twice only if it was in flight at the kill (the server had said 250 but
the gateway had not yet recorded it: the duplicate SMTP itself cannot avoid).
The number of rows leased at the kill is read from the store the dead gateway
left, and the duplicates are compared with it.
"""

from __future__ import annotations

import collections

import pytest
import sqlalchemy as sa

from spoolgate.store import schema
from spoolgate.store.engine import create_engine
from tests.downstream import PostfixDownstream, wait_until
from tests.gateway_process import free_port
from tests.integration.delivery.gateway import send_many, start_delivering, wait_states

pytestmark = [pytest.mark.drill, pytest.mark.integration]

MESSAGES = 1_000


def _in_flight(store_url: str) -> int:
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            r = schema.recipients
            return conn.execute(sa.select(sa.func.count()).select_from(r)
                                .where(r.c.state == "delivering")).scalar_one()
    finally:
        engine.dispose()


def test_sigkill_during_delivery_loses_nothing_and_duplicates_only_what_was_in_flight(
        gateway_factory, store_url, folder) -> None:
    company = PostfixDownstream(folder / "company", free_port()).start()
    try:
        # Queue the thousand first (delivery off), then restart with delivery on.
        gateway = start_delivering(gateway_factory, store_url, {"example.test": company.route},
                                   delivery={"enabled": False, "concurrency": 50,
                                             "route_concurrency": 10,
                                             "initial_concurrency": 10})
        sent = send_many(gateway.port, MESSAGES)
        assert len(sent) == MESSAGES
        gateway.stop()
        config = gateway.config.read_text()
        gateway.config.write_text(config.replace("enabled = false", "enabled = true", 1))
        gateway.start()
        # Kill in the middle of the drain.
        wait_until(lambda: company.count() >= MESSAGES // 3, 120, "a third delivered")
        gateway.kill()
        in_flight = _in_flight(store_url)
        delivered_before = company.count()

        gateway.start()
        wait_states(gateway, {"delivered": MESSAGES}, timeout=180)
        arrived = company.wait_for(MESSAGES, timeout=60)
        ids = company.message_ids()
    finally:
        company.stop()

    copies = collections.Counter(ids)
    duplicates = sum(n - 1 for n in copies.values())
    print(f"\nkilled with {in_flight} recipients in flight after {delivered_before} deliveries; "
          f"{duplicates} duplicate(s) at the downstream")
    assert set(copies) == set(sent), "a message was lost"
    assert len(arrived) >= MESSAGES
    assert duplicates <= in_flight
    assert "returned" in gateway.log and "leased before a restart" in gateway.log
