"""spoolgate/delivery/mx.py: MX, implicit MX, null MX and address look-ups on loopback DNS."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import dns.nameserver
import dns.resolver
import pytest

from spoolgate.delivery.mx import MxError, MxHost, ResolverSettings, resolve_mx
from spoolgate.mail.reply import Reply
from tests import dns_server
from tests.dns_server import LOOPBACK, LoopbackDns

loopback_dns = dns_server.loopback_dns  # until tests/conftest.py imports it for every test

TWO_HOSTS = """
example.net. 300 IN MX 20 mx2.example.net.
example.net. 300 IN MX 10 mx1.example.net.
mx1.example.net. 300 IN A 192.0.2.1
mx2.example.net. 300 IN A 192.0.2.2
"""


def _settings(server: LoopbackDns) -> ResolverSettings:
    return ResolverSettings(nameservers=(server.address,), timeout=2.0)


def _resolve(server: LoopbackDns, domain: str = "example.net") -> list[MxHost]:
    return asyncio.run(resolve_mx(domain, _settings(server)))


def _refusal(server: LoopbackDns, domain: str = "example.net") -> Reply:
    with pytest.raises(MxError) as caught:
        _resolve(server, domain)
    return caught.value.reply


@pytest.fixture
def never_answering_udp() -> Iterator[tuple[str, int]]:
    """A bound UDP port that reads nothing and answers nothing (no ICMP refusal either)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        yield sock.getsockname()


def test_hosts_come_in_preference_order_with_their_addresses(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add(TWO_HOSTS + "example.net. 300 IN MX 5 mx0.example.net.\n"
                                 "mx0.example.net. 300 IN A 192.0.2.10")
    assert _resolve(loopback_dns) == [MxHost("mx0.example.net", 5, ("192.0.2.10",)),
                                      MxHost("mx1.example.net", 10, ("192.0.2.1",)),
                                      MxHost("mx2.example.net", 20, ("192.0.2.2",))]


def test_equal_preferences_come_in_both_orders(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add("example.net. 300 IN MX 10 a.example.net.\n"
                     "example.net. 300 IN MX 10 b.example.net.\n"
                     "example.net. 300 IN MX 20 backup.example.net.\n"
                     "a.example.net. 300 IN A 192.0.2.1\n"
                     "b.example.net. 300 IN A 192.0.2.2\n"
                     "backup.example.net. 300 IN A 192.0.2.3")
    orders = [tuple(host.name for host in _resolve(loopback_dns)) for _ in range(50)]
    # Both orders missing from 50 fair draws has a probability of 2 ** -49.
    assert set(orders) == {("a.example.net", "b.example.net", "backup.example.net"),
                           ("b.example.net", "a.example.net", "backup.example.net")}


def test_without_mx_the_domain_itself_is_the_mx(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add("example.net. 300 IN A 192.0.2.1\n"
                     "example.net. 300 IN AAAA 2001:db8::1\n"
                     'example.net. 300 IN TXT "v=spf1 -all"')
    assert _resolve(loopback_dns) == [MxHost("example.net", 0, ("2001:db8::1", "192.0.2.1"))]


def test_without_mx_and_without_address_the_domain_takes_no_mail(
        loopback_dns: LoopbackDns) -> None:
    loopback_dns.add('example.net. 300 IN TXT "v=spf1 -all"')
    assert _refusal(loopback_dns) == Reply(550, "5.4.4",
                                           "domain example.net has no MX and no address record")


def test_without_mx_and_with_failing_address_look_ups_it_is_temporary(
        loopback_dns: LoopbackDns) -> None:
    loopback_dns.add('example.net. 300 IN TXT "v=spf1 -all"')
    loopback_dns.fail("example.net", "SERVFAIL", qtype="A")
    reply = _refusal(loopback_dns)
    assert (reply.code, reply.enhanced, reply.permanent) == (451, "4.4.3", False)


def test_null_mx_is_permanent_and_asks_no_addresses(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add("example.net. 300 IN MX 0 .\nexample.net. 300 IN A 192.0.2.1")
    reply = _refusal(loopback_dns)
    assert (reply.code, reply.enhanced, reply.permanent) == (556, "5.1.10", True)
    assert loopback_dns.queries == [("example.net.", "MX")]


def test_a_root_exchange_next_to_real_ones_is_skipped(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add(TWO_HOSTS + "example.net. 300 IN MX 0 .")
    assert [host.name for host in _resolve(loopback_dns)] == ["mx1.example.net",
                                                              "mx2.example.net"]


def test_nxdomain_is_permanent(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add(TWO_HOSTS)
    assert _refusal(loopback_dns, "nowhere.example.net") == Reply(
        550, "5.1.2", "domain nowhere.example.net not found")


@pytest.mark.parametrize("rcode", ["SERVFAIL", "REFUSED"])
def test_a_failing_nameserver_is_temporary(loopback_dns: LoopbackDns, rcode: str) -> None:
    loopback_dns.add(TWO_HOSTS)
    loopback_dns.fail("example.net", rcode)
    reply = _refusal(loopback_dns)
    assert (reply.code, reply.enhanced, reply.permanent) == (451, "4.4.3", False)
    assert "example.net" in reply.text


def test_a_silent_nameserver_is_temporary_after_the_timeout(
        never_answering_udp: tuple[str, int]) -> None:
    settings = ResolverSettings(nameservers=(never_answering_udp,), timeout=0.5)
    started = time.monotonic()
    with pytest.raises(MxError) as caught:
        asyncio.run(asyncio.wait_for(resolve_mx("example.net", settings), 10))
    elapsed = time.monotonic() - started
    assert caught.value.reply == Reply(451, "4.4.3", "MX look-up for example.net failed: timed out")
    assert 0.45 <= elapsed < 3.0  # waited for the answer, and gave up near the configured 0.5 s


def test_an_exchange_without_addresses_is_skipped(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add(TWO_HOSTS + "example.net. 300 IN MX 5 gone.example.net.\n"
                                 "example.net. 300 IN MX 7 flaky.example.net.\n"
                                 'mx3.example.net. 300 IN TXT "no address here"\n'
                                 "example.net. 300 IN MX 8 mx3.example.net.")
    loopback_dns.fail("flaky.example.net", "SERVFAIL")
    assert [host.name for host in _resolve(loopback_dns)] == ["mx1.example.net",
                                                              "mx2.example.net"]


def test_no_exchange_with_an_address_is_temporary(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add("example.net. 300 IN MX 10 gone.example.net.\n"
                     "example.net. 300 IN MX 20 flaky.example.org.")
    loopback_dns.fail("flaky.example.org", "SERVFAIL")
    assert _refusal(loopback_dns) == Reply(451, "4.4.3",
                                           "no mail exchanger of example.net has an address")


def test_ipv6_addresses_are_returned_first_and_interleaved(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add("example.net. 300 IN MX 10 dual.example.net.\n"
                     "example.net. 300 IN MX 20 v6only.example.net.\n"
                     "dual.example.net. 300 IN A 192.0.2.1\n"
                     "dual.example.net. 300 IN A 192.0.2.2\n"
                     "dual.example.net. 300 IN A 192.0.2.3\n"
                     "dual.example.net. 300 IN AAAA 2001:db8::1\n"
                     "dual.example.net. 300 IN AAAA 2001:db8::2\n"
                     "v6only.example.net. 300 IN AAAA 2001:db8::6")
    dual, v6only = _resolve(loopback_dns)
    assert dual.addresses == ("2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2",
                              "192.0.2.3")
    assert v6only == MxHost("v6only.example.net", 20, ("2001:db8::6",))


def test_an_idn_domain_is_looked_up_in_a_labels(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add("xn--bcher-kva.example. 300 IN MX 10 mx.xn--bcher-kva.example.\n"
                     "mx.xn--bcher-kva.example. 300 IN A 192.0.2.1")
    assert _resolve(loopback_dns, "bücher.example") == [
        MxHost("mx.xn--bcher-kva.example", 10, ("192.0.2.1",))]
    assert ("xn--bcher-kva.example.", "MX") in loopback_dns.queries


def test_an_exchange_named_by_an_ip_address_is_skipped_unasked(
        loopback_dns: LoopbackDns) -> None:
    loopback_dns.add(TWO_HOSTS + "example.net. 300 IN MX 1 192.0.2.99.")
    assert [host.name for host in _resolve(loopback_dns)] == ["mx1.example.net",
                                                              "mx2.example.net"]
    assert not [name for name, _ in loopback_dns.queries if name.startswith("192.")]


def test_an_exchange_that_is_a_cname_is_followed(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add("example.net. 300 IN MX 10 alias.example.net.\n"
                     "alias.example.net. 300 IN CNAME real.example.org.\n"
                     "real.example.org. 300 IN A 192.0.2.7")
    assert _resolve(loopback_dns) == [MxHost("alias.example.net", 10, ("192.0.2.7",))]


def test_an_address_literal_needs_no_dns(loopback_dns: LoopbackDns) -> None:
    assert _resolve(loopback_dns, "[192.0.2.5]") == [MxHost("[192.0.2.5]", 0, ("192.0.2.5",))]
    assert _resolve(loopback_dns, "[IPv6:2001:DB8::5]") == [
        MxHost("[IPv6:2001:DB8::5]", 0, ("2001:db8::5",))]
    assert loopback_dns.queries == []


@pytest.mark.parametrize("domain", ["", ".", "exa mple.net", "a..example.net",
                                    "under_score.example.net", "[192.0.2.300]",
                                    "x" * 64 + ".example"])
def test_a_name_that_is_not_a_mail_domain_is_permanent_and_unasked(
        loopback_dns: LoopbackDns, domain: str) -> None:
    reply = _refusal(loopback_dns, domain)
    assert (reply.code, reply.enhanced) == (553, "5.1.3")
    assert loopback_dns.queries == []


def test_only_the_configured_nameserver_is_asked(loopback_dns: LoopbackDns,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> None:
        raise AssertionError("read /etc/resolv.conf although nameservers were configured")

    monkeypatch.setattr(dns.resolver.BaseResolver, "read_resolv_conf", refuse)
    loopback_dns.add(TWO_HOSTS)
    _resolve(loopback_dns)
    assert sorted(loopback_dns.queries) == [
        ("example.net.", "MX"), ("mx1.example.net.", "A"), ("mx1.example.net.", "AAAA"),
        ("mx2.example.net.", "A"), ("mx2.example.net.", "AAAA")]


def test_without_nameservers_the_system_configuration_is_used(
        loopback_dns: LoopbackDns, monkeypatch: pytest.MonkeyPatch) -> None:
    def point_at_loopback(resolver: dns.resolver.BaseResolver, _file: object) -> None:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(LOOPBACK, loopback_dns.port)]

    monkeypatch.setattr(dns.resolver.BaseResolver, "read_resolv_conf", point_at_loopback)
    loopback_dns.add(TWO_HOSTS)
    hosts = asyncio.run(resolve_mx("example.net", ResolverSettings(timeout=2.0)))
    assert [host.name for host in hosts] == ["mx1.example.net", "mx2.example.net"]
    assert ("example.net.", "MX") in loopback_dns.queries
