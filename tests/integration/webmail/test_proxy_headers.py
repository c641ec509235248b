"""`[web] trusted_proxies`: behind a reverse proxy the client's own address counts (for the
sign-in throttle and the audit log), and only when the proxy is one we trust."""

from __future__ import annotations

import re

import httpx
import pytest
import sqlalchemy as sa

from spoolgate.store import schema
from spoolgate.store.store import open_store
from tests.gateway_process import free_port

pytestmark = pytest.mark.integration


def _failed_sign_in(base: str, forwarded_for: str) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        page = client.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        answer = client.post("/login", data={"email": "nobody@example.test",
                                             "password": "wrong guess", "csrf": token},
                             headers={"X-Forwarded-For": forwarded_for})
        assert answer.status_code == 401


def _throttled_ips(store_url: str) -> set[str]:
    store = open_store(store_url)
    try:
        with store.reading() as conn:
            keys = conn.execute(sa.select(schema.login_throttle.c.key)).scalars()
            return {key.removeprefix("ip:") for key in keys if key.startswith("ip:")}
    finally:
        store.close()


@pytest.mark.parametrize(("trusted", "seen"), [
    (["127.0.0.1"], "203.0.113.9"),   # the proxy on loopback is trusted: its header counts
    ([], "127.0.0.1"),                # no proxy configured: the header is ignored
    (["192.0.2.0/24"], "127.0.0.1"),  # a header from an untrusted peer is ignored
])
def test_the_client_address_behind_a_proxy(gateway_factory, trusted, seen) -> None:
    port = free_port()
    gateway = gateway_factory(extra={"web": {"enabled": True, "listen": f"127.0.0.1:{port}",
                                             "trusted_proxies": trusted}})
    _failed_sign_in(f"http://127.0.0.1:{port}", "203.0.113.9")
    assert _throttled_ips(gateway.store_url) == {seen}


def test_a_wrong_proxy_address_is_a_config_error(gateway_factory) -> None:
    gateway = gateway_factory(start=False, extra={"web": {"trusted_proxies": ["proxy.lan"]}})
    checked = gateway.cli("check-config")
    assert checked.returncode != 0
    assert "trusted_proxies[1]" in checked.stderr and "proxy.lan" in checked.stderr
