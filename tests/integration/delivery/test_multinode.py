"""Two gateways on one PostgreSQL store: leases keep each message to one delivery."""

from __future__ import annotations

import collections
import threading

import pytest

from tests.integration.delivery.gateway import send_many, show, start_delivering, wait_states

pytestmark = pytest.mark.integration

PER_NODE = 1_000


def test_two_nodes_sharing_postgresql_deliver_2000_messages_each_once(
        gateway_factory, pg_url, postfix_downstream) -> None:
    nodes = [start_delivering(gateway_factory, pg_url,
                              {"example.test": postfix_downstream.route},
                              delivery={"concurrency": 20, "initial_concurrency": 5},
                              extra={"node": {"name": f"node-{n}"}}) for n in "ab"]
    sent: dict[str, list[str]] = {}

    def load(gateway, name: str) -> None:
        sent[name] = send_many(gateway.port, PER_NODE)

    threads = [threading.Thread(target=load, args=(g, n)) for g, n in zip(nodes, "ab",
                                                                              strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)

    everything = sent["a"] + sent["b"]
    assert len(everything) == 2 * PER_NODE
    wait_states(nodes[0], {"delivered": 2 * PER_NODE}, timeout=180)
    postfix_downstream.wait_for(2 * PER_NODE, timeout=60)
    copies = collections.Counter(postfix_downstream.message_ids())
    assert set(copies) == set(everything)
    assert [m for m, n in copies.items() if n > 1] == [], "delivered twice"
    # Both nodes took part in the delivery (each claimed rows the other had accepted).
    delivered_by = collections.Counter()
    log = nodes[0].log + nodes[1].log
    for gateway in nodes:
        for line in gateway.log.splitlines():
            if "status=sent" in line:
                delivered_by[gateway.config.parent.name] += 1
    assert all(count > 0 for count in delivered_by.values()) and len(delivered_by) == 2
    assert "ERROR" not in log
    first = show(nodes[0], nodes[0].log.split(": accepted")[0].split()[-1])
    assert first["entry"]["recipients"][0]["state"] == "delivered"
