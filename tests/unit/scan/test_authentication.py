"""spoolgate/scan/authentication.py: SPF, DKIM and DMARC against a real DNS server on loopback.

Every record lives in a :class:`LoopbackDns` zone; messages are signed with a key made for
the session and verified by dkimpy. The system resolver that pyspf and dkimpy would use on
their own is pointed at a second loopback server, a trap that must never be asked, so a
question that went anywhere but our resolver fails the test.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import dkim
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mail.verdict import AuthResult, Symbol
from spoolgate.scan.authentication import Authenticator, auth_symbols, stub_resolver
from tests.dns_server import LOOPBACK, LoopbackDns

GOOD_IP = "192.0.2.1"
OTHER_IP = "198.51.100.7"
SPF_ORG = 'example.org. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"\n'


@pytest.fixture(scope="session")
def rsa_key() -> tuple[bytes, str]:
    """(private key PEM for dkim.sign, public key base64 for a p= tag), made once."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(public).decode()


@pytest.fixture(autouse=True)
def trap(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackDns]:
    """The system resolver, aimed at a loopback server that must get no question."""
    with LoopbackDns() as server:
        monkeypatch.setattr(dns.resolver, "default_resolver",
                            stub_resolver([f"{LOOPBACK}:{server.port}"], 1.0))
        yield server
        assert server.queries == [], "a library resolved through the system resolver"


def _authenticator(server: LoopbackDns, budget: float = 5.0) -> Authenticator:
    return Authenticator(stub_resolver([f"{LOOPBACK}:{server.port}"], 2.0), timeout=budget)


def _envelope(sender: str = "alice@example.org", ip: str = GOOD_IP,
              helo: str = "mail.example.org") -> Envelope:
    return Envelope(sender, (Recipient("bob@example.test"),), ClientInfo(ip, helo))


def _message(from_header: str = "Alice <alice@example.org>",
             body: bytes = b"Hello, Bob.\r\n") -> bytes:
    head = (f"From: {from_header}\r\nTo: bob@example.test\r\nSubject: Lunch\r\n"
            "Date: Mon, 2 Jun 2025 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n")
    return head.encode() + b"\r\n" + body


def _sign(message: bytes, key: tuple[bytes, str], domain: str = "example.org",
          selector: str = "sel") -> bytes:
    header = dkim.sign(message, selector.encode(), domain.encode(), key[0],
                       include_headers=[b"from", b"to", b"subject", b"date"])
    return header + message


def _publish_key(server: LoopbackDns, key: tuple[bytes, str], domain: str = "example.org",
                 selector: str = "sel") -> None:
    server.add(f'{selector}._domainkey.{domain}. 300 IN TXT "v=DKIM1; k=rsa; p={key[1]}"')


def _check(server: LoopbackDns, data: bytes | None = None,
           envelope: Envelope | None = None) -> dict[str, list[AuthResult]]:
    results = _authenticator(server).check(data or _message(), envelope or _envelope())
    by_method: dict[str, list[AuthResult]] = {}
    for result in results:
        by_method.setdefault(result.method, []).append(result)
    return by_method


def _one(server: LoopbackDns, method: str, data: bytes | None = None,
         envelope: Envelope | None = None) -> AuthResult:
    [result] = _check(server, data, envelope)[method]
    return result


# SPF


@pytest.mark.parametrize(("record", "ip", "expected"), [
    ("v=spf1 ip4:192.0.2.0/24 -all", GOOD_IP, "pass"),
    ("v=spf1 ip4:192.0.2.0/24 -all", OTHER_IP, "fail"),
    ("v=spf1 ip4:192.0.2.0/24 ~all", OTHER_IP, "softfail"),
    ("v=spf1 ip4:192.0.2.0/24 ?all", OTHER_IP, "neutral"),
    ("v=spf1 ip4:192.0.2.300 -all", GOOD_IP, "permerror"),
    ("v=spf1 frobnicate -all", GOOD_IP, "permerror"),
    ("v=spf1 ip6:2001:db8::/32 -all", "2001:db8::25", "pass"),
    ("v=spf1 ip6:2001:db8::/32 -all", "2001:db9::25", "fail"),
])
def test_spf_results_of_the_mail_from_domain(loopback_dns: LoopbackDns, record: str, ip: str,
                                             expected: str) -> None:
    loopback_dns.add(f'example.org. 300 IN TXT "{record}"\n'
                     'example.org. 300 IN TXT "google-site-verification=abc"')
    result = _one(loopback_dns, "spf", envelope=_envelope(ip=ip))
    assert (result.result, result.properties) == (expected, (("smtp.mailfrom", "example.org"),))
    assert ("example.org.", "TXT") in loopback_dns.queries


def test_spf_none_without_a_record(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add('example.org. 300 IN TXT "not spf"')
    assert _one(loopback_dns, "spf").result == "none"


def test_spf_none_for_a_domain_that_does_not_exist(loopback_dns: LoopbackDns) -> None:
    assert _one(loopback_dns, "spf", envelope=_envelope("a@nowhere.example")).result == "none"


def test_spf_permerror_past_ten_dns_lookups(loopback_dns: LoopbackDns) -> None:
    includes = " ".join(f"include:i{n}.example.org" for n in range(11))
    loopback_dns.add(f'example.org. 300 IN TXT "v=spf1 {includes} ip4:192.0.2.0/24 -all"\n'
                     + "".join(f'i{n}.example.org. 300 IN TXT "v=spf1 -all"\n' for n in range(11)))
    result = _one(loopback_dns, "spf")
    assert result.result == "permerror" and "lookups" in result.reason


def test_spf_temperror_when_the_server_fails(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add(SPF_ORG)
    loopback_dns.fail("example.org", "SERVFAIL", qtype="TXT")
    assert _one(loopback_dns, "spf").result == "temperror"


def test_spf_include_passes_for_the_included_network(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add('example.org. 300 IN TXT "v=spf1 include:_spf.example.net -all"\n'
                     '_spf.example.net. 300 IN TXT "v=spf1 ip4:203.0.113.0/24 -all"')
    assert _one(loopback_dns, "spf", envelope=_envelope(ip="203.0.113.9")).result == "pass"
    assert _one(loopback_dns, "spf", envelope=_envelope(ip=GOOD_IP)).result == "fail"
    assert ("_spf.example.net.", "TXT") in loopback_dns.queries


def test_spf_mx_and_a_mechanisms_resolve_addresses(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add('example.org. 300 IN TXT "v=spf1 mx a:out.example.org -all"\n'
                     "example.org. 300 IN MX 10 mx.example.org.\n"
                     "mx.example.org. 300 IN A 192.0.2.25\n"
                     "out.example.org. 300 IN AAAA 2001:db8::99")
    assert _one(loopback_dns, "spf", envelope=_envelope(ip="192.0.2.25")).result == "pass"
    assert _one(loopback_dns, "spf", envelope=_envelope(ip="2001:db8::99")).result == "pass"
    assert _one(loopback_dns, "spf", envelope=_envelope(ip="192.0.2.26")).result == "fail"
    assert {("mx.example.org.", "A"), ("out.example.org.", "AAAA")} <= set(loopback_dns.queries)


def test_null_sender_checks_the_helo_name(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add('mail.example.org. 300 IN TXT "v=spf1 a -all"\n'
                     "mail.example.org. 300 IN A 192.0.2.7")
    passed = _one(loopback_dns, "spf", envelope=_envelope("", ip="192.0.2.7"))
    failed = _one(loopback_dns, "spf", envelope=_envelope("", ip="192.0.2.8"))
    assert passed == AuthResult("spf", "pass", "", (("smtp.helo", "mail.example.org"),))
    assert failed.result == "fail"
    assert ("example.org.", "TXT") not in loopback_dns.queries


# DKIM


def test_dkim_pass_reports_domain_selector_identity_and_signature(
        loopback_dns: LoopbackDns, rsa_key: tuple[bytes, str]) -> None:
    _publish_key(loopback_dns, rsa_key)
    signed = _sign(_message(), rsa_key)
    b_tag = dkim.util.parse_tag_value(signed.split(b":", 1)[1].split(b"\r\nFrom:")[0])[b"b"]
    result = _one(loopback_dns, "dkim", signed)
    assert result.result == "pass"
    assert dict(result.properties) == {
        "header.d": "example.org", "header.s": "sel", "header.i": "@example.org",
        "header.b": b_tag.replace(b"\r\n", b"").replace(b" ", b"")[:8].decode()}
    assert ("sel._domainkey.example.org.", "TXT") in loopback_dns.queries


def test_dkim_fails_when_the_body_was_altered(loopback_dns: LoopbackDns,
                                              rsa_key: tuple[bytes, str]) -> None:
    _publish_key(loopback_dns, rsa_key)
    altered = _sign(_message(), rsa_key).replace(b"Hello, Bob.", b"Hello, Eve.")
    result = _one(loopback_dns, "dkim", altered)
    assert (result.result, result.reason) == ("fail", "body hash mismatch")


def test_dkim_fails_when_a_signed_header_was_altered(loopback_dns: LoopbackDns,
                                                     rsa_key: tuple[bytes, str]) -> None:
    _publish_key(loopback_dns, rsa_key)
    altered = _sign(_message(), rsa_key).replace(b"Subject: Lunch", b"Subject: Wire money")
    assert _one(loopback_dns, "dkim", altered).result == "fail"


def test_dkim_none_for_an_unsigned_message(loopback_dns: LoopbackDns) -> None:
    assert _one(loopback_dns, "dkim") == AuthResult("dkim", "none")
    assert not [q for q in loopback_dns.queries if "_domainkey" in q[0]]


def test_dkim_permerror_when_the_key_is_not_published(loopback_dns: LoopbackDns,
                                                      rsa_key: tuple[bytes, str]) -> None:
    result = _one(loopback_dns, "dkim", _sign(_message(), rsa_key))
    assert result.result == "permerror" and "no key" in result.reason


def test_dkim_permerror_for_a_revoked_key(loopback_dns: LoopbackDns,
                                          rsa_key: tuple[bytes, str]) -> None:
    loopback_dns.add('sel._domainkey.example.org. 300 IN TXT "v=DKIM1; k=rsa; p="')
    result = _one(loopback_dns, "dkim", _sign(_message(), rsa_key))
    assert result.result == "permerror" and "revoked" in result.reason


def test_dkim_temperror_when_the_key_lookup_fails(loopback_dns: LoopbackDns,
                                                  rsa_key: tuple[bytes, str]) -> None:
    _publish_key(loopback_dns, rsa_key)
    loopback_dns.fail("sel._domainkey.example.org", "SERVFAIL")
    assert _one(loopback_dns, "dkim", _sign(_message(), rsa_key)).result == "temperror"


def test_dkim_each_signature_gets_its_own_result(loopback_dns: LoopbackDns,
                                                 rsa_key: tuple[bytes, str]) -> None:
    _publish_key(loopback_dns, rsa_key)
    _publish_key(loopback_dns, rsa_key, "esp.example.net", "s2")
    twice = _sign(_sign(_message(), rsa_key), rsa_key, "esp.example.net", "s2")
    broken = twice.replace(b"s=sel;", b"s=gone;")
    results = _check(loopback_dns, broken)["dkim"]
    assert [(r.result, dict(r.properties)["header.d"]) for r in results] == [
        ("pass", "esp.example.net"), ("permerror", "example.org")]


def test_dkim_verifies_a_real_gmail_message(loopback_dns: LoopbackDns, corpus: Path) -> None:
    folder = corpus / "mimekit" / "dkim"
    if not (folder / "gmail.msg").is_file():
        pytest.skip(f"{folder / 'gmail.msg'} is not in the corpus")
    pem = (folder / "gmail.pub").read_text().splitlines()
    key = "".join(line for line in pem if not line.startswith("-----"))
    loopback_dns.add(f'20120113._domainkey.gmail.com. 300 IN TXT "k=rsa; p={key}"')
    message = (folder / "gmail.msg").read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    envelope = _envelope("jeff.stedfast@gmail.com", "2a00:1450:4010:c03::241",
                         "mail-la0-x241.google.com")
    result = _one(loopback_dns, "dkim", message, envelope)
    tampered = _one(loopback_dns, "dkim", message.replace(b"Testing", b"Tasting"), envelope)
    assert result == AuthResult("dkim", "pass", "", (
        ("header.d", "gmail.com"), ("header.s", "20120113"), ("header.b", "vV7a8hT9")))
    assert tampered.result == "fail"


# DMARC


def test_dmarc_passes_by_spf_alignment(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add(SPF_ORG + '_dmarc.example.org. 300 IN TXT "v=DMARC1; p=reject"')
    result = _one(loopback_dns, "dmarc")
    assert result == AuthResult("dmarc", "pass", "aligned spf", (
        ("header.from", "example.org"), ("policy.dmarc", "reject")))


def test_dmarc_passes_by_dkim_alignment(loopback_dns: LoopbackDns,
                                        rsa_key: tuple[bytes, str]) -> None:
    _publish_key(loopback_dns, rsa_key)
    loopback_dns.add('esp.example.net. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"\n'
                     '_dmarc.example.org. 300 IN TXT "v=DMARC1; p=reject"')
    checked = _check(loopback_dns, _sign(_message(), rsa_key), _envelope("b@esp.example.net"))
    assert checked["spf"][0].result == "pass"
    assert (checked["dmarc"][0].result, checked["dmarc"][0].reason) == ("pass", "aligned dkim")


@pytest.mark.parametrize(("policy", "symbol", "score"), [
    ("reject", "DMARC_REJECT", 6.0), ("quarantine", "DMARC_QUARANTINE", 3.0),
    ("none", "DMARC_NONE", 0.5)])
def test_dmarc_fails_without_alignment_and_scores_the_policy(
        loopback_dns: LoopbackDns, policy: str, symbol: str, score: float) -> None:
    loopback_dns.add(SPF_ORG + f'_dmarc.example.org. 300 IN TXT "v=DMARC1; p={policy}"\n'
                     'evil.example.net. 300 IN TXT "v=spf1 +all"')
    results = _authenticator(loopback_dns).check(_message(), _envelope("x@evil.example.net"))
    [dmarc] = [r for r in results if r.method == "dmarc"]
    assert (dmarc.result, dict(dmarc.properties)["policy.dmarc"]) == ("fail", policy)
    assert Symbol(symbol, score, f"dmarc=fail header.from=example.org policy.dmarc={policy} "
                                 "no aligned SPF or DKIM pass") in auth_symbols(results)


@pytest.mark.parametrize(("mode", "expected"), [("r", "pass"), ("s", "fail")])
def test_dmarc_relaxed_and_strict_spf_alignment(loopback_dns: LoopbackDns, mode: str,
                                                expected: str) -> None:
    loopback_dns.add('bounce.example.org. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"\n'
                     f'_dmarc.example.org. 300 IN TXT "v=DMARC1; p=reject; aspf={mode}"')
    envelope = _envelope("b@bounce.example.org")
    assert _one(loopback_dns, "dmarc", envelope=envelope).result == expected


@pytest.mark.parametrize(("mode", "expected"), [("r", "pass"), ("s", "fail")])
def test_dmarc_relaxed_and_strict_dkim_alignment(
        loopback_dns: LoopbackDns, rsa_key: tuple[bytes, str], mode: str, expected: str) -> None:
    _publish_key(loopback_dns, rsa_key, "mail.example.org")
    loopback_dns.add(f'_dmarc.example.org. 300 IN TXT "v=DMARC1; p=reject; adkim={mode}"')
    signed = _sign(_message(), rsa_key, "mail.example.org")
    checked = _check(loopback_dns, signed, _envelope("x@elsewhere.example"))
    assert checked["dkim"][0].result == "pass"
    assert checked["dmarc"][0].result == expected


def test_dmarc_subdomain_policy_comes_from_the_organizational_domain(
        loopback_dns: LoopbackDns) -> None:
    loopback_dns.add('_dmarc.example.org. 300 IN TXT "v=DMARC1; p=none; sp=reject"')
    sub = _one(loopback_dns, "dmarc", _message("a@news.example.org"), _envelope("a@x.example"))
    org = _one(loopback_dns, "dmarc", _message("a@example.org"), _envelope("a@x.example"))
    assert dict(sub.properties) == {"header.from": "news.example.org", "policy.dmarc": "reject"}
    assert dict(org.properties)["policy.dmarc"] == "none"
    assert ("_dmarc.news.example.org.", "TXT") in loopback_dns.queries


def test_dmarc_none_without_a_record(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add(SPF_ORG)
    result = _one(loopback_dns, "dmarc")
    assert (result.result, result.properties) == ("none", (("header.from", "example.org"),))


def test_dmarc_permerror_for_a_record_without_a_policy(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add('_dmarc.example.org. 300 IN TXT "v=DMARC1; p=bounce"')
    assert _one(loopback_dns, "dmarc").result == "permerror"


def test_dmarc_temperror_when_the_policy_lookup_fails(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add(SPF_ORG)
    loopback_dns.fail("_dmarc.example.org", "SERVFAIL")
    assert _one(loopback_dns, "dmarc").result == "temperror"


def test_dmarc_permerror_without_a_from_address(loopback_dns: LoopbackDns) -> None:
    message = b"To: bob@example.test\r\nSubject: no from\r\n\r\nHi\r\n"
    assert _one(loopback_dns, "dmarc", message) == AuthResult("dmarc", "permerror",
                                                              "no From domain")


def test_dmarc_second_from_header_cannot_hide_a_reject_policy(loopback_dns: LoopbackDns) -> None:
    loopback_dns.add(SPF_ORG + '_dmarc.example.org. 300 IN TXT "v=DMARC1; p=none"\n'
                     '_dmarc.bank.example. 300 IN TXT "v=DMARC1; p=reject"')
    message = _message("a@example.org").replace(b"To:", b"From: ceo@bank.example\r\nTo:", 1)
    result = _one(loopback_dns, "dmarc", message)
    assert (result.result, dict(result.properties)) == (
        "fail", {"header.from": "bank.example", "policy.dmarc": "reject"})


def test_organizational_domain_uses_the_public_suffix_list(loopback_dns: LoopbackDns) -> None:
    authenticator = _authenticator(loopback_dns)
    assert authenticator.organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert authenticator.organizational_domain("News.Example.ORG.") == "example.org"
    assert authenticator.organizational_domain("co.uk") == "co.uk"


# Bounds and failure


def test_all_questions_share_one_deadline() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOOPBACK, 0))  # takes questions and never answers
        resolver = stub_resolver([f"{LOOPBACK}:{silent.getsockname()[1]}"], 5.0)
        started = time.monotonic()
        results = Authenticator(resolver, timeout=0.5).check(_message(), _envelope())
        elapsed = time.monotonic() - started
    assert [(r.method, r.result) for r in results] == [
        ("spf", "temperror"), ("dkim", "none"), ("dmarc", "temperror")]
    assert elapsed < 2.0


@pytest.mark.parametrize("data", [b"", b"\x00\xff garbage", b"no header line\r\n\r\nbody",
                                  b"DKIM-Signature: v=1; d=\r\n\r\n",
                                  b"DKIM-Signature: v=1\r\nbad header\r\n\r\n"])
def test_garbage_gives_results_not_exceptions(loopback_dns: LoopbackDns, data: bytes) -> None:
    results = _authenticator(loopback_dns).check(data, _envelope(ip="not an address"))
    assert [r.method for r in results][0] == "spf" and results[-1].method == "dmarc"
    assert results[0].result == "none"


# Symbols


def test_symbols_follow_the_results() -> None:
    helo = AuthResult("spf", "softfail", "", (("smtp.helo", "mail.example.org"),))
    dkim_results = [AuthResult("dkim", "fail", "body hash mismatch"),
                    AuthResult("dkim", "fail", "body hash mismatch")]
    names = {s.name: s.score for s in auth_symbols([helo, *dkim_results])}
    assert names == {"SPF_HELO_SOFTFAIL": 0.5, "DKIM_INVALID": 1.0}


def test_a_passing_signature_outweighs_a_broken_one() -> None:
    results = [AuthResult("dkim", "fail"), AuthResult("dkim", "pass"),
               AuthResult("spf", "pass", "", (("smtp.mailfrom", "example.org"),))]
    assert [s.name for s in auth_symbols(results)] == ["DKIM_VALID", "SPF_PASS"]


def test_no_symbol_for_absent_authentication() -> None:
    assert auth_symbols([AuthResult("spf", "none"), AuthResult("dkim", "none"),
                         AuthResult("dmarc", "none")]) == ()
