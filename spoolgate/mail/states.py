"""Per-recipient queue states (DESIGN.md), with the Postfix words admins know."""

from __future__ import annotations

from enum import StrEnum


class RecipientState(StrEnum):
    QUEUED = "queued"          # Postfix: incoming/active, waiting for its first attempt
    DEFERRED = "deferred"      # a temporary failure; retried on the schedule
    DELIVERING = "delivering"  # leased by a delivery worker
    DELIVERED = "delivered"    # the company's server said 2xx; kept for the retention window
    FAILED = "failed"          # permanent failure or lifetime over; a DSN was due
    QUARANTINED = "quarantined"
    HELD = "held"              # Postfix: hold; never delivered, never expires while held
    DELETED = "deleted"


PENDING_STATES = frozenset({RecipientState.QUEUED, RecipientState.DEFERRED, RecipientState.DELIVERING})
