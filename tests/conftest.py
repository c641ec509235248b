"""Fixtures shared by every test: store URLs for both backends, a gateway factory, the corpus."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from spoolgate.store.store import Store, open_store
from tests.browser import browser, page  # noqa: F401 - fixtures for the webmail tests
from tests.dns_server import loopback_dns  # noqa: F401 - a fixture for every test
from tests.gateway_process import ROOT, GatewayProcess

PG_ADMIN_URL = os.environ.get("SPOOLGATE_TEST_PG",
                              "postgresql+psycopg://root@/postgres?host=/var/run/postgresql")
CORPUS = Path(os.environ.get("SPOOLGATE_CORPUS", ROOT.parent / "shared" / "corpus"))


def open_to_daemons(path: Path) -> Path:
    """Let daemons that run as other users (spamd as nobody, Dovecot, Postfix) enter *path*
    and the two folders above it, pytest's own (mode 0700); never a shared temp folder
    (with ``--basetemp=/tmp/x`` the second parent is /tmp itself, which must stay 1777)."""
    for each in (path, path.parent, path.parent.parent):
        if each.stat().st_mode & 0o1002:  # sticky or world-writable: shared, leave it
            break
        each.chmod(0o755)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A work folder that daemons running as other users can also enter."""
    return open_to_daemons(tmp_path)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sa.Engine]:
    """An engine on the PostgreSQL server that scripts/setup-test-env.sh starts."""
    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.OperationalError as error:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} "
                    f"(run scripts/setup-test-env.sh): {error}")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin: sa.Engine) -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    name = f"sg_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield f"postgresql://root@/{name}?host=/var/run/postgresql"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, folder: Path) -> str:
    """The same test against the SQLite and the PostgreSQL store."""
    if request.param == "sqlite":
        return f"sqlite:///{folder / 'spoolgate.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An open store, on SQLite and on PostgreSQL (the webmail's tests have their own)."""
    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture
def sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'spoolgate.db'}"


@pytest.fixture
def gateway_factory(folder: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start real gateways: ``gateway_factory(store_url, smtp={...}, domains=[...])``."""
    started: list[GatewayProcess] = []

    def make(store_url: str | None = None, start: bool = True, **kwargs) -> GatewayProcess:
        sub = folder / f"gw{len(started)}"
        sub.mkdir()
        sub.chmod(0o755)
        gateway = GatewayProcess(sub, store_url or f"sqlite:///{sub / 'spoolgate.db'}", **kwargs)
        started.append(gateway)
        return gateway.start() if start else gateway

    yield make
    for gateway in started:
        gateway.kill()


@pytest.fixture
def gateway(gateway_factory: Callable[..., GatewayProcess]) -> GatewayProcess:
    """A running gateway for example.test on SQLite with default limits."""
    return gateway_factory()


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The shared mail corpus (../shared/corpus, or $SPOOLGATE_CORPUS)."""
    if not CORPUS.is_dir():
        pytest.skip(f"mail corpus not found at {CORPUS} (set SPOOLGATE_CORPUS)")
    return CORPUS


def have(tool: str) -> bool:
    return subprocess.run(["which", tool], capture_output=True).returncode == 0
