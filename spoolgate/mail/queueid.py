"""Queue IDs: short, unique across nodes and processes, sortable by arrival time."""

from __future__ import annotations

import secrets
import time

# Crockford's base32 without I, L, O, U: no lookalikes when an admin reads one aloud.
_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZ"
_BASE = len(_ALPHABET)


def _encode(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, _BASE)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_queue_id(now: float | None = None) -> str:
    """Return a 14-character ID: 9 characters of milliseconds, 5 random ones."""
    millis = int((time.time() if now is None else now) * 1000)
    return _encode(millis, 9) + _encode(secrets.randbelow(_BASE**5), 5)


def is_queue_id(text: str) -> bool:
    """True when *text* has the shape of a queue ID (used to validate CLI input)."""
    return len(text) == 14 and all(c in _ALPHABET for c in text)
