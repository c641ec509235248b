"""spoolgate/store/audit.py on SQLite and PostgreSQL."""

from __future__ import annotations

from spoolgate.store.audit import DETAIL_LIMIT, AuditLog
from spoolgate.store.store import Store


def test_entries_come_back_newest_first_and_filtered(store: Store) -> None:
    log = AuditLog(store)
    log.record(10.0, "admin@example.test", "192.0.2.7", "queue.release", "ABCDEF01234567")
    log.record(11.0, "cli:root", "", "user.add", "bob@example.test", "role=user")
    log.record(12.0, "admin@example.test", "192.0.2.7", "queue.delete", "ABCDEF01234567")

    entries = log.recent()
    assert [e.action for e in entries] == ["queue.delete", "user.add", "queue.release"]
    assert (entries[1].actor, entries[1].client_ip, entries[1].detail) == \
        ("cli:root", "", "role=user")
    assert [e.action for e in log.recent(actor="admin@example.test")] == \
        ["queue.delete", "queue.release"]
    assert [e.action for e in log.recent(target="bob@example.test")] == ["user.add"]
    assert [e.action for e in log.recent(limit=1, before_id=entries[0].id)] == ["user.add"]


def test_a_long_detail_is_cut(store: Store) -> None:
    log = AuditLog(store)
    log.record(1.0, "a@example.test", "", "x", "y", "z" * (DETAIL_LIMIT * 3))
    assert len(log.recent()[0].detail) == DETAIL_LIMIT
