"""Email authentication for the built-in scanner: SPF (RFC 7208), DKIM (RFC 6376), DMARC (RFC 7489).

Owns the checks behind our ``Authentication-Results`` header and the symbols they score:
pyspf evaluates SPF for the envelope sender (the HELO name for the null sender), dkimpy
verifies up to :data:`MAX_SIGNATURES` DKIM signatures on the raw bytes, and DMARC aligns
both with the RFC5322.From domain of the one parse (:mod:`spoolgate.mime.parse`).

Every DNS question goes to the resolver the Authenticator was given, never to one of the
libraries' own: pyspf through a :class:`spf.query` subclass that overrides its ``dns``
method, dkimpy through the key record we fetch first and hand to it as its ``dnsfunc``.
All questions of one :meth:`Authenticator.check` share one deadline. It never raises: a
DNS failure or the deadline gives ``temperror``, anything the libraries cannot process
gives ``permerror`` or ``neutral``, and each method is guarded so a library bug in one
cannot cost the others.

Choices beyond the RFCs:

- The organizational domain comes from the Public Suffix List shipped inside the
  ``publicsuffixlist`` package (never fetched at run time); a domain that is itself a
  public suffix is its own organizational domain.
- No From address gives ``dmarc=permerror`` (RFC 5322 requires one; RFC 7489 §6.6.1 says
  such mail is typically rejected). Several From domains (several From fields or several
  addresses) are each evaluated and the strictest outcome is reported, as §6.6.1 allows:
  a second From header cannot hide a domain that publishes ``p=reject``.
- ``pct=`` is not sampled: the published policy is reported as it is. A record with a
  ``v=DMARC1`` but no valid ``p=`` is ``permerror`` unless it has ``rua=`` (then
  ``p=none``, §6.6.3 step 6).
- DKIM: no key record or an empty ``p=`` (revoked) is ``permerror``; a signature that
  cannot be parsed (or expired, or uses an unknown algorithm) is ``neutral``; ``rsa-sha1``
  is not accepted (RFC 8301) and gives ``permerror``.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dkim
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver
import spf
from dkim.util import InvalidTagValueList, parse_tag_value
from publicsuffixlist import PublicSuffixList

from spoolgate.mail.envelope import Envelope
from spoolgate.mail.verdict import AuthResult, Symbol
from spoolgate.mime.parse import ParsedMessage, addresses, parse_message

# (method, result; "fail:<policy>" for DMARC) -> the symbol and its score. Scores follow
# SpamAssassin's: a pass vouches a little, a fail of a domain's own policy weighs more
# the stricter that policy is; temporary and unknown outcomes score nothing.
AUTH_SYMBOLS: dict[tuple[str, str], tuple[str, float]] = {
    ("spf", "pass"): ("SPF_PASS", -0.1),
    ("spf", "fail"): ("SPF_FAIL", 1.0),
    ("spf", "softfail"): ("SPF_SOFTFAIL", 0.5),
    ("spf", "neutral"): ("SPF_NEUTRAL", 0.1),
    ("spf", "permerror"): ("SPF_PERMERROR", 0.1),
    ("spf", "temperror"): ("SPF_TEMPERROR", 0.0),
    ("dkim", "pass"): ("DKIM_VALID", -0.1),
    ("dkim", "fail"): ("DKIM_INVALID", 1.0),
    ("dkim", "neutral"): ("DKIM_INVALID", 1.0),
    ("dkim", "permerror"): ("DKIM_PERMERROR", 0.5),
    ("dkim", "temperror"): ("DKIM_TEMPERROR", 0.0),
    ("dmarc", "pass"): ("DMARC_PASS", -0.1),
    ("dmarc", "fail:reject"): ("DMARC_REJECT", 6.0),
    ("dmarc", "fail:quarantine"): ("DMARC_QUARANTINE", 3.0),
    ("dmarc", "fail:none"): ("DMARC_NONE", 0.5),
    ("dmarc", "permerror"): ("DMARC_PERMERROR", 0.5),
    ("dmarc", "temperror"): ("DMARC_TEMPERROR", 0.0),
}

MAX_SIGNATURES = 5  # DKIM signatures verified per message; the rest are ignored
MAX_FROM_DOMAINS = 5  # distinct From domains given a DMARC evaluation
_DNS_PORT = 53
_DMARC_POLICIES = ("none", "quarantine", "reject")
_DKIM_HEADER = re.compile(rb"(?im)^dkim-signature[ \t]*:")
_HOSTNAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)+")
_BYTES_REPR = re.compile(r"\bb'([^']*)'")


class _DnsFailure(Exception):
    """DNS could not say (SERVFAIL, REFUSED, timeout, deadline spent): a temperror."""


def stub_resolver(nameservers: Sequence[str], timeout: float) -> dns.resolver.Resolver:
    """A resolver on ``"host"``/``"host:port"``/``"[v6]:port"`` servers, or /etc/resolv.conf.

    With no servers and no usable resolv.conf, every question fails (so: temperror) instead
    of this raising at start-up; a port that is not a number raises ``ValueError``.
    """
    if nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(*_host_port(server))
                                for server in nameservers]
    else:
        try:
            resolver = dns.resolver.Resolver()
        except dns.exception.DNSException:
            resolver = dns.resolver.Resolver(configure=False)
    resolver.lifetime = timeout
    return resolver


def _host_port(server: str) -> tuple[str, int]:
    """("::1", 53) from "[::1]:53", "::1", "127.0.0.1:5353" or "127.0.0.1"."""
    if server.startswith("["):
        host, _, port = server[1:].partition("]")
        return host, int(port.lstrip(":") or _DNS_PORT)
    if server.count(":") == 1:
        host, _, port = server.partition(":")
        return host, int(port)
    return server, _DNS_PORT


class _Lookups:
    """The DNS questions of one check: all to our resolver, all before one deadline."""

    def __init__(self, resolver: dns.resolver.Resolver, deadline: float) -> None:
        self._resolver = resolver
        self._deadline = deadline
        self._answers: dict[tuple[str, str], list[Any]] = {}

    def records(self, name: str, rdtype: str) -> list[Any]:
        """The rdatas of ``name``/``rdtype``; [] for no such name or data or a bad name."""
        key = (name.lower().rstrip("."), rdtype)
        if key not in self._answers:
            self._answers[key] = self._ask(*key)
        return self._answers[key]

    def txt(self, name: str) -> list[bytes]:
        """Each TXT record of ``name`` with its strings joined (RFC 7208 §3.3)."""
        return [b"".join(record.strings) for record in self.records(name, "TXT")]

    def _ask(self, name: str, rdtype: str) -> list[Any]:
        try:
            qname = dns.name.from_text(name)
        except (dns.exception.DNSException, ValueError):
            return []
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise _DnsFailure("DNS time budget spent")
        try:
            answer = self._resolver.resolve(qname, rdtype, search=False, raise_on_no_answer=False,
                                            lifetime=min(remaining, self._resolver.lifetime))
        except dns.resolver.NXDOMAIN:
            return []
        except dns.exception.Timeout:
            raise _DnsFailure(f"DNS timeout for {name} {rdtype}") from None
        except dns.exception.DNSException as error:
            raise _DnsFailure(f"DNS failure for {name} {rdtype}: {type(error).__name__}") from None
        return list(answer.rrset or ())


class _SpfQuery(spf.query):
    """pyspf's evaluation with every DNS question asked through :class:`_Lookups`.

    Replaces ``spf.query.dns``, which would use pyspf's module-level resolver; the cache,
    CNAME chasing (dnspython follows CNAMEs) and the void-lookup limit live here instead.
    """

    def __init__(self, ip: str, sender: str, helo: str, lookups: _Lookups) -> None:
        super().__init__(i=ip, s=sender, h=helo, strict=True)
        self._lookups = lookups

    def dns(self, name: object, qtype: str, cnames: object = None,
            ignore_void: bool = False) -> list[Any]:
        try:
            result = [_spf_value(qtype, rdata)
                      for rdata in self._lookups.records(str(name), qtype)]
        except _DnsFailure as error:
            raise spf.TempError(str(error)) from None
        if not result and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return result


def _spf_value(qtype: str, rdata: Any) -> object:
    """An rdata in the shape pyspf's own dnspython look-up gives it."""
    if qtype in ("A", "AAAA"):
        return rdata.address
    if qtype == "MX":
        return (rdata.preference, rdata.exchange)
    if qtype == "PTR":
        return rdata.target.to_text(omit_final_dot=True)
    return rdata.strings


@dataclass(frozen=True, slots=True)
class _Policy:
    """One DMARC record as it applies to the From domain."""

    policy: str  # the p= or sp= that applies
    adkim: str  # "r" or "s"
    aspf: str


class Authenticator:
    """SPF, DKIM and DMARC for one message at a time, against one resolver, thread-safe.

    ``timeout`` bounds all DNS questions of one :meth:`check` together; each question is
    also bounded by the resolver's ``lifetime``.
    """

    def __init__(self, resolver: dns.resolver.Resolver, *, timeout: float = 10.0) -> None:
        self._resolver = resolver
        self._timeout = timeout
        self._psl = PublicSuffixList()  # the list bundled with the package: no download

    def check(self, data: bytes, envelope: Envelope,
              parsed: ParsedMessage | None = None) -> tuple[AuthResult, ...]:
        """SPF, then each DKIM signature, then DMARC; blocking, so call it off the loop."""
        lookups = _Lookups(self._resolver, time.monotonic() + self._timeout)
        spf_result = _guarded("spf", lambda: _spf(envelope, lookups))
        dkim_results = _guarded_all("dkim", lambda: _dkim(data, lookups))
        parsed = parsed or parse_message(data)
        dmarc_result = _guarded("dmarc", lambda: self._dmarc(
            from_domains(parsed), spf_result, dkim_results, lookups))
        return (spf_result, *dkim_results, dmarc_result)

    def organizational_domain(self, domain: str) -> str:
        """The registered domain (RFC 7489 §3.2) of ``domain``, by the Public Suffix List."""
        domain = domain.lower().rstrip(".")
        return self._psl.privatesuffix(domain) or domain

    def _dmarc(self, domains: Sequence[str], spf_result: AuthResult,
               dkim_results: Sequence[AuthResult], lookups: _Lookups) -> AuthResult:
        if not domains:
            return AuthResult("dmarc", "permerror", "no From domain")
        outcomes = [self._dmarc_one(domain, spf_result, dkim_results, lookups)
                    for domain in domains[:MAX_FROM_DOMAINS]]
        return min(outcomes, key=_dmarc_severity)

    def _dmarc_one(self, domain: str, spf_result: AuthResult,
                   dkim_results: Sequence[AuthResult], lookups: _Lookups) -> AuthResult:
        properties: tuple[tuple[str, str], ...] = (("header.from", domain),)
        try:
            policy = self._policy(domain, lookups)
        except _DnsFailure as error:
            return AuthResult("dmarc", "temperror", str(error), properties)
        if policy is None:
            return AuthResult("dmarc", "none", "no DMARC record", properties)
        if isinstance(policy, str):
            return AuthResult("dmarc", "permerror", policy, properties)
        properties += (("policy.dmarc", policy.policy),)
        aligned = self._aligned(domain, policy, spf_result, dkim_results)
        if aligned:
            return AuthResult("dmarc", "pass", f"aligned {aligned}", properties)
        return AuthResult("dmarc", "fail", "no aligned SPF or DKIM pass", properties)

    def _policy(self, domain: str, lookups: _Lookups) -> _Policy | str | None:
        """The policy for ``domain``: its own record's p=, else its organizational domain's
        sp= (or p=); None without a record, a reason text for a broken one."""
        record = _dmarc_record(domain, lookups)
        if record is not None:
            return _parse_policy(record, subdomain=False)
        organizational = self.organizational_domain(domain)
        if organizational == domain:
            return None
        record = _dmarc_record(organizational, lookups)
        return None if record is None else _parse_policy(record, subdomain=True)

    def _aligned(self, domain: str, policy: _Policy, spf_result: AuthResult,
                 dkim_results: Sequence[AuthResult]) -> str:
        """Which identifier aligns with the From domain ("spf", "dkim"), "" for none."""
        if spf_result.result == "pass" and any(
                self._same(domain, value, policy.aspf) for name, value in spf_result.properties
                if name in ("smtp.mailfrom", "smtp.helo")):
            return "spf"
        for result in dkim_results:
            if result.result == "pass" and any(
                    self._same(domain, value, policy.adkim)
                    for name, value in result.properties if name == "header.d"):
                return "dkim"
        return ""

    def _same(self, from_domain: str, other: str, mode: str) -> bool:
        other = other.lower().rstrip(".")
        if mode == "s":
            return other == from_domain
        return self.organizational_domain(other) == self.organizational_domain(from_domain)


def _spf(envelope: Envelope, lookups: _Lookups) -> AuthResult:
    """SPF for the MAIL FROM domain, or for the HELO name when the sender is null <>."""
    sender, helo = envelope.sender, envelope.client.helo
    domain = sender.rpartition("@")[2]
    identity = (("smtp.mailfrom", _ascii_domain(domain) or domain.lower()) if sender
                else ("smtp.helo", helo))
    properties = (identity,) if identity[1] else ()
    try:
        query = _SpfQuery(str(ipaddress.ip_address(envelope.client.ip)), sender, helo, lookups)
    except ValueError:
        return AuthResult("spf", "none", "client address is not an IP address", properties)
    result, _, explanation = query.check()
    reason = explanation if result in ("temperror", "permerror") else ""
    return AuthResult("spf", result, reason, properties)


def _dkim(data: bytes, lookups: _Lookups) -> tuple[AuthResult, ...]:
    """One result per DKIM-Signature (the first :data:`MAX_SIGNATURES`), ``none`` unsigned."""
    try:
        verifier = dkim.DKIM(data)
    except dkim.DKIMException:
        head = data.split(b"\r\n\r\n", 1)[0]
        if _DKIM_HEADER.search(head):
            return (AuthResult("dkim", "neutral", "message header not parseable"),)
        return (AuthResult("dkim", "none"),)
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    if not count:
        return (AuthResult("dkim", "none"),)
    return tuple(_verify_signature(verifier, index, lookups)
                 for index in range(min(count, MAX_SIGNATURES)))


def _verify_signature(verifier: dkim.DKIM, index: int, lookups: _Lookups) -> AuthResult:
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    properties = _signature_properties(signatures[index])
    try:
        signature, include_headers, headers = verifier.verify_headerprep(index)
    except dkim.DKIMException as error:
        return AuthResult("dkim", "neutral", f"signature not usable: {_text(error)}", properties)
    if signature[b"a"] == b"rsa-sha1":
        return AuthResult("dkim", "permerror", "rsa-sha1 not accepted (RFC 8301)", properties)
    name = (signature[b"s"] + b"._domainkey." + signature[b"d"]).decode("ascii", "replace")
    try:
        record = _key_record(name, lookups)
    except _DnsFailure as error:
        return AuthResult("dkim", "temperror", str(error), properties)
    except dkim.KeyFormatError as error:
        return AuthResult("dkim", "permerror", _text(error), properties)
    try:
        valid = verifier.verify_sig(signature, include_headers, headers[index],
                                    lambda _name, timeout=0: record)
    except dkim.KeyFormatError as error:
        return AuthResult("dkim", "permerror", _text(error), properties)
    except dkim.DKIMException as error:
        return AuthResult("dkim", "fail", _text(error).split(" (", 1)[0], properties)
    if valid:
        return AuthResult("dkim", "pass", "", properties)
    return AuthResult("dkim", "fail", "signature did not verify", properties)


def _text(error: Exception) -> str:
    """dkimpy's error text without Python's b'...' around the tags it quotes."""
    return _BYTES_REPR.sub(r"\1", str(error))


def _key_record(name: str, lookups: _Lookups) -> bytes:
    """The one DKIM key record at ``name``; KeyFormatError when missing, revoked or bad."""
    records = [txt for txt in lookups.txt(name) if txt.strip()]
    if not records:
        raise dkim.KeyFormatError(f"no key for signature at {name}")
    record = records[0]
    try:
        tags = parse_tag_value(record)
    except InvalidTagValueList:
        raise dkim.KeyFormatError(f"key record at {name} not parseable") from None
    if not tags.get(b"p", b"").strip():
        raise dkim.KeyFormatError(f"key revoked at {name}")
    dkim.evaluate_pk(name, record)
    return record


def _signature_properties(value: bytes) -> tuple[tuple[str, str], ...]:
    """header.d, header.s, header.i and the first 8 characters of b= (RFC 8601 §2.7.1)."""
    try:
        tags = parse_tag_value(value)
    except InvalidTagValueList:
        return ()
    found = []
    for tag, prop in ((b"d", "header.d"), (b"s", "header.s"), (b"i", "header.i")):
        value = tags.get(tag, b"").decode("ascii", "replace").strip()
        if value:
            found.append((prop, value))
    signature = re.sub(rb"\s+", b"", tags.get(b"b", b""))[:8]
    if signature:
        found.append(("header.b", signature.decode("ascii", "replace")))
    return tuple(found)


def from_domains(parsed: ParsedMessage) -> list[str]:
    """The distinct domains of every address in every From field, in order (ASCII form)."""
    values = [value for name, value in parsed.headers if name.lower() == "from"]
    domains: dict[str, None] = {}
    for _, address in addresses(*values):
        domain = _ascii_domain(address.rpartition("@")[2]) if "@" in address else None
        if domain:
            domains[domain] = None
    return list(domains)


def _ascii_domain(domain: str) -> str | None:
    try:
        name = dns.name.from_unicode(domain.strip().rstrip("."))
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return None
    text = name.to_text(omit_final_dot=True).lower()
    return text if _HOSTNAME.fullmatch(text) else None


def _dmarc_record(domain: str, lookups: _Lookups) -> bytes | None:
    """The one DMARC record at ``_dmarc.<domain>``; None for none or several (§6.6.3)."""
    records = [txt for txt in lookups.txt(f"_dmarc.{domain}")
               if re.match(rb"v\s*=\s*DMARC1\s*(;|$)", txt)]
    return records[0] if len(records) == 1 else None


def _parse_policy(record: bytes, *, subdomain: bool) -> _Policy | str:
    """The policy a record gives, or why it gives none (a permerror reason)."""
    tags = _dmarc_tags(record)
    policy = tags.get("p", "")
    if subdomain and tags.get("sp") in _DMARC_POLICIES:
        policy = tags["sp"]
    if policy not in _DMARC_POLICIES:
        if not tags.get("rua"):
            return "DMARC record without a valid p="
        policy = "none"
    return _Policy(policy, _mode(tags.get("adkim")), _mode(tags.get("aspf")))


def _dmarc_tags(record: bytes) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in record.decode("ascii", "replace").split(";"):
        tag, _, value = item.partition("=")
        tags.setdefault(tag.strip().lower(), value.strip().lower())
    return tags


def _mode(value: str | None) -> str:
    return "s" if value == "s" else "r"


def _dmarc_severity(result: AuthResult) -> int:
    """Lower is stricter: the outcome to report among several From domains."""
    policy = dict(result.properties).get("policy.dmarc", "none")
    if result.result == "fail":
        return _DMARC_POLICIES[::-1].index(policy) if policy in _DMARC_POLICIES else 2
    return 3 + ("temperror", "permerror", "none", "pass").index(result.result)


def _guarded(method: str, run: Callable[[], AuthResult]) -> AuthResult:
    """``run()``, or a temperror naming the library error it raised (never an exception)."""
    try:
        return run()
    except Exception as error:  # a library bug on hostile input must not stop the scan
        return AuthResult(method, "temperror", f"internal error: {type(error).__name__}")


def _guarded_all(method: str,
                 run: Callable[[], tuple[AuthResult, ...]]) -> tuple[AuthResult, ...]:
    try:
        return run()
    except Exception as error:  # as _guarded
        return (AuthResult(method, "temperror", f"internal error: {type(error).__name__}"),)


def auth_symbols(results: Iterable[AuthResult]) -> tuple[Symbol, ...]:
    """The scored symbols of :data:`AUTH_SYMBOLS` for ``results``, each symbol once.

    A failing DKIM signature is not scored when another one passes (mailing lists and
    forwarders break one signature and keep another).
    """
    results = list(results)
    dkim_passed = any(r.method == "dkim" and r.result == "pass" for r in results)
    symbols: dict[str, Symbol] = {}
    for result in results:
        if result.method == "dkim" and dkim_passed and result.result != "pass":
            continue
        entry = AUTH_SYMBOLS.get((result.method, _outcome(result)))
        if entry is not None:
            name, score = entry
            name = _helo_variant(result, name)
            symbols.setdefault(name, Symbol(name, score, _detail(result)))
    return tuple(symbols.values())


def _outcome(result: AuthResult) -> str:
    if result.method == "dmarc" and result.result == "fail":
        return f"fail:{dict(result.properties).get('policy.dmarc', 'none')}"
    return result.result


def _helo_variant(result: AuthResult, name: str) -> str:
    """SPF_HELO_FAIL and so on when SPF checked the HELO name, as SpamAssassin names them."""
    if any(prop == "smtp.helo" for prop, _ in result.properties):
        return name.replace("SPF_", "SPF_HELO_", 1)
    return name


def _detail(result: AuthResult) -> str:
    props = " ".join(f"{name}={value}" for name, value in result.properties)
    return " ".join(part for part in (f"{result.method}={result.result}", props,
                                      result.reason) if part)

