"""Fixtures of the store tests: an open store on each backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from spoolgate.store.store import Store, open_store


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A freshly migrated store on SQLite or PostgreSQL (see ``store_url``)."""
    opened = open_store(store_url)
    yield opened
    opened.close()
