"""The webmail's test fixtures (a real SQLite store with users, a clock, settings)."""

from tests.unit.webmail.conftest import clock, settings, store  # noqa: F401
