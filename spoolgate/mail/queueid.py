"""Queue IDs: short, unique across nodes and processes, sortable by arrival time."""

from __future__ import annotations

import secrets
import time

# Digits and consonants: no vowels, so no words, and no I or O to misread as 1 or 0.
_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZ"
_BASE = len(_ALPHABET)
# From the clock, the last 5 characters are the nanoseconds within the millisecond times
# _SPREAD plus a random number below _SPREAD: IDs of one process never collide (its clock
# moves on between two calls) and two processes collide only on the same nanosecond and draw.
_SPREAD = _BASE**5 // 1_000_000


def _encode(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, _BASE)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_queue_id(now: float | None = None) -> str:
    """Return a 14-character ID: 9 characters of milliseconds, 5 that keep IDs of the same
    millisecond apart (random ones for an explicit *now*, which tests and tools pass)."""
    if now is not None:
        return _encode(int(now * 1000), 9) + _encode(secrets.randbelow(_BASE**5), 5)
    millis, nanos = divmod(time.time_ns(), 1_000_000)
    return _encode(millis, 9) + _encode(nanos * _SPREAD + secrets.randbelow(_SPREAD), 5)


def is_queue_id(text: str) -> bool:
    """True when *text* has the shape of a queue ID (used to validate CLI input)."""
    return len(text) == 14 and all(c in _ALPHABET for c in text)
