"""Where a message entered the receiving site, and whether that looks like a botnet.

Owns the rules about the client that handed the message to the first mail server of the
receiving site: a home or dial-up address (its reverse DNS name spells the address, or
says dsl, dynamic, pool, ppp, ...), an address with no reverse DNS, a HELO that is a bare
word instead of a domain. Mail servers have static, named addresses; infected home
computers sending spam straight to MX hosts have none of that (SpamAssassin's
RDNS_DYNAMIC, RDNS_NONE and HELO rules test the same).

The entry point is the newest ``Received`` field whose client address is a public one,
read as Postfix, Sendmail, Exim, qmail and Exchange write it: the site's own hops
(loopback, private networks, this gateway behind a private relay) are passed over. These
are rules about one hop, the sender's side of it, not learned features: nothing of the
receiving site's path is scored. Without reverse DNS in the field (this gateway does not
look it up yet), only the HELO rule can apply. Pure functions of the parse: no I/O,
bounded, nothing a header contains makes them raise.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from spoolgate.mail.verdict import Symbol

MAX_FIELDS = 30  # Received fields looked at, newest first
MAX_FIELD = 2_000  # characters of one field read

RULES: dict[str, tuple[float, str]] = {
    "CLIENT_DYNAMIC": (2.0, "sent from a home or dial-up address"),
    "CLIENT_NO_RDNS": (1.5, "sent from an address without reverse DNS"),
    "CLIENT_HELO_BARE": (1.5, "the sending host greeted with a bare word, not a domain"),
}

_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
_ADDRESS = re.compile(rf"\[(?:IPv6:)?([0-9a-fA-F:.]+)\]|\(({_IPV4})\)")
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
_POSTFIX = re.compile(rf"\(\s*({_HOST})\s+\[")  # from HELO (RDNS [IP]) - Postfix, Sendmail
_EXIM = re.compile(rf"^\s*({_HOST})\s+\(\s*\[[^\]]+\]\s*(?:[:\d]*\s*)?helo=\s*([^\s)]+)", re.I)
_EXIM_BARE = re.compile(r"^\s*\[[^\]]+\]\s*(?:[:\d]*\s*)?\(\s*helo=\s*([^\s)]+)", re.I)
_QMAIL = re.compile(rf"^\s*({_HOST})\s+\(HELO\s+([^\s)]+)\)", re.I)
_FIRST_WORD = re.compile(r"^\s*(\S+)")
_DYNAMIC_WORD = re.compile(
    r"(?:^|[.\-\d])(?:dyn|dynamic|dhcp|dsl|adsl|xdsl|vdsl|cable|ppp|pppoe|dial|dialup|pool"
    r"|broadband|cpe|customer|client|catv|resid\w*|user|static)(?=[.\-\d]|$)", re.I)
_SERVER_WORD = re.compile(r"^(?:mail|mx|smtp|relay|out|mta|mo|mx\d|smtp\d|mail\d)[.\-\d]", re.I)


@dataclass(frozen=True, slots=True)
class EntryHop:
    """The client that handed the message to the receiving site's first server."""

    address: str
    rdns: str | None  # None: the field shows none; "" when it says there is none
    helo: str | None


def origin_symbols(headers: Sequence[tuple[str, str]]) -> list[Symbol]:
    """The rules of :data:`RULES` that the entry hop of *headers* (the parse's decoded
    header fields, newest first) matches."""
    hop = entry_hop(headers)
    if hop is None:
        return []
    return [Symbol(name, RULES[name][0], detail) for name, detail in _judge(hop)]


def entry_hop(headers: Sequence[tuple[str, str]]) -> EntryHop | None:
    """The newest Received field's client with a public address, as :class:`EntryHop`."""
    seen = 0
    for name, value in headers:
        if name.lower() != "received":
            continue
        seen += 1
        if seen > MAX_FIELDS:
            return None
        hop = _read(value[:MAX_FIELD])
        if hop is not None:
            return hop
    return None


def _read(value: str) -> EntryHop | None:
    clause = _from_clause(value)
    if clause is None:
        return None
    found = _ADDRESS.search(clause)
    if found is None:
        return None
    address = found.group(1) or found.group(2)
    if not _public(address):
        return None
    rdns, helo = _names(clause)
    return EntryHop(address, rdns, helo)


def _from_clause(value: str) -> str | None:
    text = " ".join(value.split())
    if not text.lower().startswith("from "):
        return None
    end = re.search(r"\)\s+by\s|\s+by\s", text)
    return text[5:end.start() + 1] if end else text[5:]


def _public(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return False


def _names(clause: str) -> tuple[str | None, str | None]:
    """(reverse DNS name, HELO) as the clause's format shows them."""
    if match := _EXIM.match(clause):
        return match.group(1), match.group(2)
    if match := _EXIM_BARE.match(clause):
        return "", match.group(1)
    if match := _QMAIL.match(clause):
        return ("" if match.group(1).lower() == "unknown" else match.group(1)), match.group(2)
    helo = _FIRST_WORD.match(clause)
    helo_name = helo.group(1) if helo else None
    if match := _POSTFIX.search(clause):
        rdns = match.group(1)
        return ("" if rdns.lower() == "unknown" else rdns), helo_name
    return None, helo_name  # Sendmail's "from HELO ([IP])" may mean either: no rule


def _judge(hop: EntryHop) -> Iterator[tuple[str, str]]:
    if hop.rdns == "":
        yield "CLIENT_NO_RDNS", f"[{hop.address}] has no reverse DNS"
    elif hop.rdns and _dynamic(hop.rdns, hop.address):
        yield "CLIENT_DYNAMIC", f"{hop.rdns} [{hop.address}]"
    helo = (hop.helo or "").strip("[]")
    if helo and "." not in helo and ":" not in helo and helo.lower() != "localhost":
        yield "CLIENT_HELO_BARE", f"HELO {helo[:40]}"


def _dynamic(rdns: str, address: str) -> bool:
    """Whether *rdns* names a home or pool address: it spells two or more of the address's
    numbers (or its hex), or says dsl, dynamic, pool... in its host labels."""
    host = rdns.lower()
    labels = host.split(".")
    local = ".".join(labels[:-2]) if len(labels) > 2 else labels[0]
    if _SERVER_WORD.match(local):
        return False
    if "." in address:
        octets = address.split(".")
        numbers = set(re.findall(r"\d+", local))
        if sum(octet in numbers for octet in set(octets[1:])) >= 2:
            return True
        if "".join(f"{int(o):02x}" for o in octets) in local:
            return True
    return bool(_DYNAMIC_WORD.search(local))
