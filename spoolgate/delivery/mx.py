"""Direct-MX routing: which hosts, at which addresses, take mail for a domain.

Owns the DNS side of direct delivery (RFC 5321 §5.1, RFC 7505): the MX look-up, the
implicit MX, the null MX, the A and AAAA look-ups of every exchange and the order to try
them in. It never connects to a mail server. Every failure is an :class:`MxError` whose
reply goes into the DSN or the deferral: permanent when DNS says the domain takes no mail
(no such domain, null MX, no MX and no address, a name that is not a domain), temporary
when DNS could not say (SERVFAIL, REFUSED, timeout) or no exchange has an address.

Choices beyond the RFCs: an MX whose exchange is an IP address (forbidden by RFC 5321 §5.1)
or the root (``.`` next to other MX records) is skipped; an exchange that is a CNAME is
followed, as Postfix and Exim do; addresses come IPv6 first, interleaved with IPv4
(RFC 8305 §4); an address literal (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``) is its own
host, without DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import re
from dataclasses import dataclass
from itertools import chain, zip_longest

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

from spoolgate.mail.reply import Reply

_HOSTNAME_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ResolverSettings:
    """Where and how long to ask: nameservers as (address, port); () means /etc/resolv.conf."""

    nameservers: tuple[tuple[str, int], ...] = ()
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class MxHost:
    """One mail exchanger: its name (the domain itself for the implicit MX) and addresses."""

    name: str
    preference: int
    addresses: tuple[str, ...]


class MxError(Exception):
    """No route to a domain's mail exchangers; ``reply.permanent`` says whether to bounce."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


async def resolve_mx(domain: str, settings: ResolverSettings) -> list[MxHost]:
    """The hosts to try for ``domain``, best first, each with at least one address.

    Equal preferences come in random order, so load spreads as RFC 5321 §5.1 asks.
    """
    literal = _address_literal(domain)
    if literal is not None:
        return [MxHost(domain, 0, (literal,))]
    name = _domain_name(domain)
    text = name.to_text(omit_final_dot=True)
    resolver = await _resolver(settings)
    exchanges = await _exchanges(resolver, name, text)
    if exchanges is None:
        return [await _implicit_mx(resolver, name, text)]
    hosts = await asyncio.gather(*(_exchange_host(resolver, exchange, preference)
                                   for exchange, preference in exchanges))
    reachable = [host for host in hosts if host.addresses]
    if not reachable:
        raise MxError(Reply(451, "4.4.3", f"no mail exchanger of {text} has an address"))
    return reachable


def _address_literal(domain: str) -> str | None:
    """The address of an RFC 5321 §4.1.3 address literal, None for a domain name."""
    if not domain.startswith("["):
        return None
    inner = domain[1:-1] if domain.endswith("]") else ""
    try:
        if inner[:5].lower() == "ipv6:":
            return str(ipaddress.IPv6Address(inner[5:]))
        return str(ipaddress.IPv4Address(inner))
    except ValueError:
        raise MxError(Reply(553, "5.1.3", f"invalid address literal {domain!r}")) from None


def _domain_name(domain: str) -> dns.name.Name:
    """The absolute DNS name of a mail domain, IDN labels converted to A-labels (IDNA)."""
    invalid = MxError(Reply(553, "5.1.3", f"invalid domain name {domain!r}"))
    try:
        name = dns.name.from_unicode(domain)
    except (dns.exception.DNSException, UnicodeError, ValueError):
        raise invalid from None
    labels = [label.decode("ascii", "replace") for label in name.labels if label]
    if not labels or not all(_HOSTNAME_LABEL.fullmatch(label) for label in labels):
        raise invalid
    return name


async def _resolver(settings: ResolverSettings) -> dns.asyncresolver.Resolver:
    """A stub resolver on the configured nameservers, or on the system's."""
    if settings.nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(address, port)
                                for address, port in settings.nameservers]
    else:
        try:
            # Reading /etc/resolv.conf is file I/O: keep it off the event loop.
            resolver = await asyncio.to_thread(dns.asyncresolver.Resolver)
        except dns.exception.DNSException as error:
            raise MxError(Reply(451, "4.4.3", f"no DNS resolver configured: {error}")) from None
    resolver.lifetime = settings.timeout
    return resolver


async def _exchanges(resolver: dns.asyncresolver.Resolver, name: dns.name.Name,
                     text: str) -> list[tuple[dns.name.Name, int]] | None:
    """MX exchanges and preferences in the order to try, None when the domain has no MX."""
    try:
        answer = await resolver.resolve(name, "MX", raise_on_no_answer=False, search=False)
    except dns.resolver.NXDOMAIN:
        raise MxError(Reply(550, "5.1.2", f"domain {text} not found")) from None
    except dns.exception.DNSException as error:
        raise MxError(Reply(451, "4.4.3",
                            f"MX look-up for {text} failed: {_failure(error)}")) from None
    if answer.rrset is None:
        return None
    records = [(mx.exchange, mx.preference) for mx in answer.rrset]
    if all(exchange == dns.name.root for exchange, _ in records):
        raise MxError(Reply(556, "5.1.10", f"domain {text} does not accept mail (null MX)"))
    random.shuffle(records)
    records.sort(key=lambda record: record[1])  # stable: equal preferences stay shuffled
    best: dict[dns.name.Name, int] = {}
    for exchange, preference in records:
        if exchange != dns.name.root:
            best.setdefault(exchange, preference)
    return list(best.items())


async def _implicit_mx(resolver: dns.asyncresolver.Resolver, name: dns.name.Name,
                       text: str) -> MxHost:
    """The domain itself at preference 0, when it has no MX record (RFC 5321 §5.1)."""
    addresses, failed = await _addresses(resolver, name)
    if addresses:
        return MxHost(text, 0, addresses)
    if failed:
        raise MxError(Reply(451, "4.4.3", f"address look-up for {text} failed"))
    raise MxError(Reply(550, "5.4.4", f"domain {text} has no MX and no address record"))


async def _exchange_host(resolver: dns.asyncresolver.Resolver, exchange: dns.name.Name,
                         preference: int) -> MxHost:
    """One MX exchange with its addresses; none when it does not resolve or is an IP."""
    text = exchange.to_text(omit_final_dot=True)
    if _is_ip_address(text):
        return MxHost(text, preference, ())
    addresses, _ = await _addresses(resolver, exchange)
    return MxHost(text, preference, addresses)


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


async def _addresses(resolver: dns.asyncresolver.Resolver,
                     name: dns.name.Name) -> tuple[tuple[str, ...], bool]:
    """IPv6 and IPv4 addresses of ``name`` interleaved, and whether a look-up failed."""
    ipv6, ipv4 = await asyncio.gather(_family(resolver, name, "AAAA"),
                                      _family(resolver, name, "A"))
    interleaved = chain.from_iterable(zip_longest(ipv6 or [], ipv4 or []))
    return tuple(address for address in interleaved if address), ipv6 is None or ipv4 is None


async def _family(resolver: dns.asyncresolver.Resolver, name: dns.name.Name,
                  rdtype: str) -> list[str] | None:
    """Addresses of one type; [] when there are none, None when DNS could not say."""
    try:
        answer = await resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
    except dns.resolver.NXDOMAIN:
        return []
    except dns.exception.DNSException:
        return None
    return [record.address for record in answer.rrset or ()]


def _failure(error: dns.exception.DNSException) -> str:
    """A short reason for a DSN, without dnspython's internals."""
    if isinstance(error, dns.exception.Timeout):
        return "timed out"
    if isinstance(error, dns.resolver.NoNameservers):
        return "no nameserver gave an answer (SERVFAIL or REFUSED)"
    return "DNS error"
