"""tests/dns_server.py: the loopback DNS server other tests resolve against."""

from __future__ import annotations

import socket

import dns.message
import dns.query
import dns.rcode
import pytest

from tests import dns_server
from tests.dns_server import LOOPBACK, LoopbackDns

loopback_dns = dns_server.loopback_dns  # until tests/conftest.py imports it for every test

DKIM_KEY = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "x" * 560 + "IDAQAB"


def _ask(server: LoopbackDns, name: str, rdtype: str, *, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, LOOPBACK, port=server.port, timeout=2)


def _txt_strings(response: dns.message.Message) -> list[list[bytes]]:
    return [list(record.strings) for rrset in response.answer for record in rrset]


def test_a_long_txt_string_is_served_in_255_byte_chunks(loopback_dns: LoopbackDns) -> None:
    value = f"v=DKIM1; k=rsa; p={DKIM_KEY}"
    loopback_dns.add(f'sel._domainkey.example.net. 300 IN TXT "{value}"')
    [strings] = _txt_strings(_ask(loopback_dns, "sel._domainkey.example.net", "TXT"))
    assert [len(s) for s in strings] == [255, 255, len(value) - 510]
    assert b"".join(strings).decode() == value


def test_txt_strings_given_in_parentheses_over_lines_stay_separate(
        loopback_dns: LoopbackDns) -> None:
    loopback_dns.add('example.net. 300 IN TXT ( "v=spf1 ip4:192.0.2.0/24"\n'
                     '    " include:_spf.example.org -all" )\n'
                     '_dmarc.example.net. 300 IN TXT "v=DMARC1; p=reject"')
    assert _txt_strings(_ask(loopback_dns, "example.net", "TXT")) == [
        [b"v=spf1 ip4:192.0.2.0/24", b" include:_spf.example.org -all"]]
    assert _txt_strings(_ask(loopback_dns, "_dmarc.example.net", "TXT")) == [
        [b"v=DMARC1; p=reject"]]


def test_nxdomain_for_nothing_nodata_for_other_types_or_names_below() -> None:
    zone = ("example.net. 300 IN MX 10 mx1.example.net.\n"
            "sel._domainkey.example.org. 300 IN TXT \"v=DKIM1; p=\"")
    with LoopbackDns(zone) as server:
        missing = _ask(server, "nothing.example.net", "A")
        other_type = _ask(server, "example.net", "A")
        empty_non_terminal = _ask(server, "_domainkey.example.org", "TXT")
    assert missing.rcode() == dns.rcode.NXDOMAIN and not missing.answer
    assert other_type.rcode() == dns.rcode.NOERROR and not other_type.answer
    assert empty_non_terminal.rcode() == dns.rcode.NOERROR and not empty_non_terminal.answer


def test_names_match_without_regard_to_case(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add("Mail.Example.NET. 300 IN A 192.0.2.1")
    response = _ask(loopback_dns, "mail.example.net", "A")
    assert [record.address for record in response.answer[0]] == ["192.0.2.1"]


def test_tcp_queries_get_the_same_answer_as_udp(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add("example.net. 300 IN MX 10 mx1.example.net.\n"
                     "example.net. 300 IN MX 20 mx2.example.net.")
    over_tcp = _ask(loopback_dns, "example.net", "MX", tcp=True)
    over_udp = _ask(loopback_dns, "example.net", "MX")
    exchanges = sorted((mx.preference, str(mx.exchange)) for mx in over_tcp.answer[0])
    assert exchanges == [(10, "mx1.example.net."), (20, "mx2.example.net.")]
    assert over_tcp.answer == over_udp.answer


def test_a_cname_is_followed_inside_the_zone(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add("www.example.net. 300 IN CNAME host.example.net.\n"
                     "host.example.net. 300 IN AAAA 2001:db8::25")
    response = _ask(loopback_dns, "www.example.net", "AAAA")
    assert [rrset.rdtype.name for rrset in response.answer] == ["CNAME", "AAAA"]
    assert response.answer[1][0].address == "2001:db8::25"


@pytest.mark.parametrize("rcode", ["SERVFAIL", "REFUSED"])
def test_fail_answers_the_rcode_even_for_names_in_the_zone(loopback_dns: LoopbackDns,
                                                          rcode: str) -> None:
    loopback_dns.add("example.net. 300 IN A 192.0.2.1")
    loopback_dns.fail("example.net", rcode)
    response = _ask(loopback_dns, "example.net", "A")
    assert response.rcode() == dns.rcode.from_text(rcode) and not response.answer


def test_fail_can_be_limited_to_one_type(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add("example.net. 300 IN A 192.0.2.1\nexample.net. 300 IN AAAA 2001:db8::1")
    loopback_dns.fail("example.net", "SERVFAIL", qtype="AAAA")
    assert _ask(loopback_dns, "example.net", "AAAA").rcode() == dns.rcode.SERVFAIL
    assert _ask(loopback_dns, "example.net", "A").answer[0][0].address == "192.0.2.1"


def test_queries_records_every_question_as_sent(loopback_dns: LoopbackDns) -> None:
    _ask(loopback_dns, "Example.net", "MX")
    _ask(loopback_dns, "missing.example.net", "TXT", tcp=True)
    assert loopback_dns.queries == [("Example.net.", "MX"), ("missing.example.net.", "TXT")]


def test_stop_closes_the_port() -> None:
    server = LoopbackDns().start()
    _ask(server, "example.net", "A", tcp=True)
    server.stop()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(server.address, 2):
        pass
