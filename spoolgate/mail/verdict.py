"""What scanners report and what the policy decides, as plain values shared by every stage.

A scanner reports :class:`Findings`; it never decides. The policy (per domain) turns
the findings of all scanners into one :class:`Verdict`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Symbol:
    """One named observation with its score, e.g. ``GTUBE`` or ``DKIM_INVALID``."""

    name: str
    score: float = 0.0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AuthResult:
    """One RFC 8601 method result, e.g. ``spf=pass smtp.mailfrom=example.org``.

    ``properties`` are (ptype.property, value) pairs such as ``("smtp.mailfrom",
    "example.org")`` or ``("header.d", "example.org")``; ``reason`` is free text for the
    header's ``reason=`` and for logs.
    """

    method: str
    result: str
    reason: str = ""
    properties: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Findings:
    """What one scanner found in one message.

    ``error`` means the scanner could not scan at all (down, timed out): the policy
    answers ``451 4.7.1`` by default. ``unscannable`` means it scanned but could not
    see everything (size or recursion limits, an encrypted archive): never "clean".
    """

    scanner: str
    score: float = 0.0
    symbols: tuple[Symbol, ...] = ()
    viruses: tuple[str, ...] = ()
    error: str | None = None
    unscannable: str | None = None
    seconds: float = 0.0
    authentication: tuple[AuthResult, ...] = ()


class Action(StrEnum):
    PASS = "pass"
    TAG = "tag"
    QUARANTINE = "quarantine"
    REJECT = "reject"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The policy's decision for one message, with the findings behind it."""

    action: Action
    score: float
    reason: str
    findings: tuple[Findings, ...] = ()
