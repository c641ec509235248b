"""The SMTP envelope of one message and the DSN parameters that travel with it (RFC 3461)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Notify(StrEnum):
    NEVER = "NEVER"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DELAY = "DELAY"


class Ret(StrEnum):
    FULL = "FULL"
    HDRS = "HDRS"


@dataclass(frozen=True, slots=True)
class Recipient:
    """One envelope recipient and its RFC 3461 parameters (``notify`` empty = not given)."""

    address: str
    notify: frozenset[Notify] = frozenset()
    orcpt: str | None = None  # "addr-type;address", decoded from xtext

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who handed us the message."""

    ip: str
    helo: str
    tls: str | None = None  # e.g. "TLSv1.3:TLS_AES_256_GCM_SHA384"


@dataclass(frozen=True, slots=True)
class Envelope:
    """Everything the SMTP transaction said about one message except its bytes."""

    sender: str  # "" is the null sender <>
    recipients: tuple[Recipient, ...]
    client: ClientInfo
    ret: Ret | None = None
    envid: str | None = None
    body_type: str = "7BIT"
    smtputf8: bool = False
    declared_size: int | None = None


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A message accepted for storage: its queue ID, envelope and final bytes."""

    queue_id: str
    envelope: Envelope
    data: bytes
    received_at: float
    node: str
    events: tuple[tuple[str, str], ...] = field(default=())  # (kind, detail) to log with it
    quarantined: bool = False  # the scan policy said quarantine: stored, not delivered
    held: bool = False         # a scanner allowed to fail did: held for its rescan
    subject: str = ""          # as received (decoded, bounded), for message tracking
    message_id: str = ""
    origin: str = "smtp"       # or "webmail" (sent by a signed-in user), "gateway" (ours)
