"""The test files the built-in scanner reports as viruses, with no daemon: EICAR.

Owns one table of test signatures: the virus name an anti-virus engine reports for a test
file, the symbol shown in logs and ``X-Spam-Status``, and the exact bytes. Today it holds
the EICAR anti-virus test file (eicar.org), the 68-byte string every anti-virus product
reports so that operators can check their set-up end to end. It is matched as ClamAV's
``Eicar-Test-Signature`` matches it: the whole string anywhere in what is looked at (the
raw message, any decoded leaf part, the first bytes of an archive member that
:mod:`spoolgate.scan.attachments` read), so a sentence that names EICAR or quotes part of
the string is not a finding. The EICAR file may be followed by whitespace up to 128 bytes;
the match ignores what follows, as ClamAV does.

This is not an anti-virus engine: it knows nothing but these test files, so a gateway
without ClamAV still has no virus scanning (``spoolgate check-config`` says so).
Pure functions over bytes the caller already holds; no I/O, never raises.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from spoolgate.mail.verdict import Symbol
from spoolgate.mime.parse import ParsedMessage, Part

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


@dataclass(frozen=True, slots=True)
class Signature:
    """One test file: the virus name engines report, our symbol for it, and its bytes."""

    virus: str
    symbol: str
    pattern: bytes
    description: str


TEST_SIGNATURES: tuple[Signature, ...] = (
    Signature("Eicar-Test-Signature", "EICAR_TEST_FILE", EICAR,
                  "the EICAR anti-virus test file"),
)

Hit = tuple[Signature, str]
"""A signature and where it was found, fit for a log line (``'a.zip'``, ``raw message``)."""


def signatures_in(data: bytes) -> tuple[Signature, ...]:
    """The test signatures whose exact bytes occur in *data*."""
    return tuple(s for s in TEST_SIGNATURES if s.pattern in data)


def message_hits(data: bytes, parsed: ParsedMessage) -> list[Hit]:
    """Test signatures in the decoded leaf parts of *parsed* (each part named), and in the
    raw bytes *data* for what no part showed (a part a parse limit cut off)."""
    hits = [(signature, _part_label(number, part))
            for number, part in enumerate(parsed.parts, 1)
            for signature in signatures_in(part.payload)]
    seen = {signature for signature, _ in hits}
    hits.extend((signature, "raw message") for signature in signatures_in(data)
                if signature not in seen)
    return hits


def virus_findings(hits: Iterable[Hit]) -> tuple[tuple[str, ...], tuple[Symbol, ...]]:
    """The virus names and one symbol per signature (score 0: a virus is decided by the
    policy's virus action, whatever the score) listing the first few places."""
    places: dict[Signature, list[str]] = {}
    for signature, where in hits:
        if where not in places.setdefault(signature, []):
            places[signature].append(where)
    viruses = tuple(signature.virus for signature in places)
    symbols = tuple(Symbol(signature.symbol, 0.0,
                           f"{signature.description} ({signature.virus}) in {_joined(where)}")
                    for signature, where in places.items())
    return viruses, symbols


def _part_label(number: int, part: Part) -> str:
    name = f" {part.filename[:80]!r}" if part.filename else ""
    return f"part {number}{name} ({part.content_type})"


def _joined(places: list[str]) -> str:
    more = f" and {len(places) - 3} more" if len(places) > 3 else ""
    return ", ".join(places[:3]) + more
