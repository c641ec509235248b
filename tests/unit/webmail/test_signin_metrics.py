"""Sign-ins and failures reach the gateway's /metrics counters."""

from __future__ import annotations

from starlette.testclient import TestClient

from spoolgate.ops.metrics import Metrics
from spoolgate.store.store import Store
from spoolgate.webmail.app import WebmailSettings, create_app
from tests.unit.webmail.conftest import HASHER, Clock, sign_in


def _count(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value("spoolgate_webmail_signins_total",
                                              {"result": outcome})
    return value or 0.0


def test_sign_ins_and_failures_are_counted(store: Store, settings: WebmailSettings,
                                          clock: Clock) -> None:
    metrics = Metrics()
    app = create_app(store, settings, clock=clock, hasher=HASHER, metrics=metrics)
    with TestClient(app, follow_redirects=False) as client:
        assert sign_in(client, password="wrong password here").status_code == 401
        assert sign_in(client, "nobody@example.test").status_code == 401
        assert sign_in(client).status_code == 303
    assert (_count(metrics, "failure"), _count(metrics, "success")) == (2.0, 1.0)
