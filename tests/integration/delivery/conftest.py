"""Fixtures of the delivery tests: the company's mail server, run for real on free ports.

Each fixture starts its server in the test's own folder and stops it afterwards, also when
the test failed; the classes behind them live in :mod:`tests.downstream`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.downstream import (
    ConnectionCounter,
    DovecotLmtp,
    PostfixDownstream,
    Smarthost,
    SmtpSink,
)
from tests.gateway_process import free_port


@pytest.fixture
def postfix_downstream_factory(folder: Path) -> Iterator[Callable[..., PostfixDownstream]]:
    """Start Postfix downstreams: ``factory(domains=..., recipients=..., tls=True)``."""
    numbers = itertools.count()
    with ExitStack() as stack:
        def make(**kwargs: Any) -> PostfixDownstream:
            sub = folder / f"postfix{next(numbers)}"
            return stack.enter_context(PostfixDownstream(sub, free_port(), **kwargs))

        yield make


@pytest.fixture
def postfix_downstream(postfix_downstream_factory: Callable[..., PostfixDownstream]
                       ) -> PostfixDownstream:
    """A running Postfix for example.test (any local part) delivering into a Maildir."""
    return postfix_downstream_factory()


@pytest.fixture
def dovecot_lmtp_factory(folder: Path) -> Iterator[Callable[..., DovecotLmtp]]:
    """Start Dovecots: ``factory(users=..., imap_port=free_port(), over_quota=(...))``."""
    numbers = itertools.count()
    with ExitStack() as stack:
        def make(**kwargs: Any) -> DovecotLmtp:
            sub = folder / f"dovecot{next(numbers)}"
            return stack.enter_context(DovecotLmtp(sub, free_port(), **kwargs))

        yield make


@pytest.fixture
def dovecot_lmtp(dovecot_lmtp_factory: Callable[..., DovecotLmtp]) -> DovecotLmtp:
    """A running Dovecot LMTP for alice, bob and carol @example.test."""
    return dovecot_lmtp_factory()


@pytest.fixture
def smtp_sink_factory(folder: Path) -> Iterator[Callable[[Sequence[str]], SmtpSink]]:
    """Start smtp-sinks: ``smtp_sink_factory(SmtpSink.SOFT_REJECT_RCPT)``."""
    with ExitStack() as stack:
        def make(options: Sequence[str] = ()) -> SmtpSink:
            return stack.enter_context(SmtpSink(free_port(), folder, options))

        yield make


@pytest.fixture
def connection_counter() -> Iterator[ConnectionCounter]:
    """A server that is down: counts connections, answers 421 and closes."""
    with ConnectionCounter(free_port()) as counter:
        yield counter


@pytest.fixture
def smarthost_factory(folder: Path) -> Iterator[Callable[..., Smarthost]]:
    """Start smarthosts that want AUTH (Postfix + Dovecot SASL), for remote.test by default:
    ``factory(tls=True, users={"relayuser": "secret"})``."""
    numbers = itertools.count()
    with ExitStack() as stack:
        def make(**kwargs: Any) -> Smarthost:
            sub = folder / f"smarthost{next(numbers)}"
            return stack.enter_context(Smarthost(sub, free_port(), free_port(), **kwargs))

        yield make
