"""Connection admission: sessions in total and per client IP (per worker process)."""

from __future__ import annotations

from collections import Counter


class ConnectionLimiter:
    """Counts open sessions; :meth:`admit` says whether one more may start."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self._max_total = max_total
        self._max_per_ip = max_per_ip
        self._per_ip: Counter[str] = Counter()
        self._total = 0

    def admit(self, ip: str) -> bool:
        if self._total >= self._max_total or self._per_ip[ip] >= self._max_per_ip:
            return False
        self._total += 1
        self._per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self._total -= 1
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]

    @property
    def open_sessions(self) -> int:
        return self._total
