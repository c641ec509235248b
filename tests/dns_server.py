"""A DNS server on loopback with test zones, so no test resolves a name off this machine.

Owns :class:`LoopbackDns`: a dnslib server answering UDP and TCP on 127.0.0.1 and one free
port from records given as RFC 1035 zone lines. It answers authoritatively: the records of
the name asked (following in-zone CNAMEs), NODATA when the name exists with other types or
has names under it, NXDOMAIN otherwise, or the rcode set with :meth:`LoopbackDns.fail`.
It records every question so a test can check what was asked. A malformed zone line raises
dnslib's error from :meth:`LoopbackDns.add`; a port that cannot be bound raises ``OSError``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import TracebackType

import pytest
from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord, ZoneParser
from dnslib.server import BaseResolver, DNSLogger, DNSServer

LOOPBACK = "127.0.0.1"
TXT_CHUNK = 255  # RFC 1035 §3.3: a <character-string> holds at most 255 bytes.
_CNAME_HOPS = 8
_BIND_ATTEMPTS = 20
_CLASSES = ("IN", "CH", "HS")


def _key(name: object) -> str:
    """The case-insensitive, absolute form of a DNS name used to index the zone."""
    text = str(name).lower()
    return text if text.endswith(".") else text + "."


class _ZoneParser(ZoneParser):
    """dnslib's zone parser (what ``RR.fromZone`` runs), splitting long TXT strings.

    A TXT string longer than 255 bytes is cut into 255-byte strings, as DNS publishers do
    with DKIM keys and long SPF records, so a test can paste a key as one quoted string.
    """

    def parse_rr(self, rr: list[str]) -> RR:
        at = 1 + rr[1].isdigit()
        at += rr[at] in _CLASSES
        if rr[at] != "TXT":
            return super().parse_rr(rr)
        strings = [token.encode() for token in rr[at + 1:]]
        record = super().parse_rr([*rr[:at + 1], ""])
        record.rdata = TXT([s[i:i + TXT_CHUNK] for s in strings
                            for i in range(0, max(len(s), 1), TXT_CHUNK)])
        return record


class _ZoneResolver(BaseResolver):
    """Answers from the records and failures a :class:`LoopbackDns` holds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[str, list[RR]] = {}
        self.failures: dict[tuple[str, int | None], int] = {}
        self.queries: list[tuple[str, str]] = []

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        question = request.q
        with self.lock:
            self.queries.append((str(question.qname), QTYPE[question.qtype]))
            self._answer(reply, _key(question.qname), question.qtype)
        return reply

    def _answer(self, reply: DNSRecord, name: str, qtype: int) -> None:
        for _ in range(_CNAME_HOPS):
            failure = self.failures.get((name, qtype), self.failures.get((name, None)))
            if failure is not None:
                reply.header.rcode = failure
                return
            records = self.records.get(name, [])
            matching = [rr for rr in records if qtype in (rr.rtype, QTYPE.ANY)]
            if matching:
                reply.add_answer(*matching)
                return
            alias = next((rr for rr in records if rr.rtype == QTYPE.CNAME), None)
            if alias is None:
                if not self._exists(name):
                    reply.header.rcode = RCODE.NXDOMAIN
                return
            reply.add_answer(alias)
            name = _key(alias.rdata.label)

    def _exists(self, name: str) -> bool:
        return any(owner == name or owner.endswith("." + name) for owner in self.records)


class LoopbackDns:
    """A DNS server for tests on 127.0.0.1, UDP and TCP on the same free port.

    Use it as a context manager or with :meth:`start` and :meth:`stop`; :attr:`address` is
    what a resolver under test should be pointed at.
    """

    def __init__(self, zone_text: str = "") -> None:
        self._resolver = _ZoneResolver()
        self._servers: list[DNSServer] = []
        self._threads: list[threading.Thread] = []
        self.port = 0
        if zone_text:
            self.add(zone_text)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of the running server."""
        return (LOOPBACK, self.port)

    @property
    def queries(self) -> list[tuple[str, str]]:
        """Every question received so far, as (qname as sent, type name such as "MX")."""
        with self._resolver.lock:
            return list(self._resolver.queries)

    def add(self, zone_text: str) -> None:
        """Add the records of RFC 1035 zone lines (absolute names; TXT strings split)."""
        records = list(_ZoneParser(zone_text))
        with self._resolver.lock:
            for record in records:
                self._resolver.records.setdefault(_key(record.rname), []).append(record)

    def fail(self, name: str, rcode: int | str, qtype: str | None = None) -> None:
        """Make questions for ``name`` (of type ``qtype``, or all) answer ``rcode``.

        ``rcode`` is a name such as "SERVFAIL" or "REFUSED", or its number.
        """
        code = getattr(RCODE, rcode) if isinstance(rcode, str) else rcode
        with self._resolver.lock:
            self._resolver.failures[(_key(name), None if qtype is None else getattr(QTYPE, qtype))] = code

    def start(self) -> LoopbackDns:
        """Bind UDP and TCP on one free loopback port and serve in background threads."""
        self._servers = self._bind()
        self.port = self._servers[0].server.server_address[1]
        for server in self._servers:
            thread = threading.Thread(target=server.server.serve_forever,
                                      kwargs={"poll_interval": 0.05}, daemon=True,
                                      name=f"loopback-dns-{self.port}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving and close both sockets."""
        for server in self._servers:
            server.server.shutdown()
            server.server.server_close()
        for thread in self._threads:
            thread.join()
        self._servers, self._threads = [], []

    def _bind(self) -> list[DNSServer]:
        logger = DNSLogger(log="-request,-reply,-truncated,-error")
        for _ in range(_BIND_ATTEMPTS):
            udp = DNSServer(self._resolver, address=LOOPBACK, port=0, logger=logger)
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(self._resolver, address=LOOPBACK, port=port, tcp=True,
                                logger=logger)
            except OSError:
                udp.server.server_close()
                continue
            return [udp, tcp]
        raise OSError("no loopback port free for both UDP and TCP")

    def __enter__(self) -> LoopbackDns:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


@pytest.fixture
def loopback_dns() -> Iterator[LoopbackDns]:
    """A running :class:`LoopbackDns` with an empty zone; add records with ``add``."""
    with LoopbackDns() as server:
        yield server
