"""Real clamd daemons for the scanner integration tests, on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.clamd import Clamd
from tests.gateway_process import free_port


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    """One clamd for a test module: StreamMaxLength 1M and AlertExceedsMax yes."""
    with Clamd(tmp_path_factory.mktemp("clamd"), free_port(), stream_max_length="1M",
               alert_exceeds_max=True) as daemon:
        yield daemon


@pytest.fixture
def start_clamd(tmp_path: Path) -> Iterator[Callable[..., Clamd]]:
    """Start a clamd with the given options (see :class:`Clamd`); stopped after the test."""
    started: list[Clamd] = []

    def start(**options: object) -> Clamd:
        daemon = Clamd(tmp_path / f"clamd{len(started)}", free_port(), **options)  # type: ignore[arg-type]
        started.append(daemon)
        daemon.start()
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
