"""Shared fixtures: private Mosquitto and PostgreSQL/TimescaleDB instances on free ports.

The services come from ``plantwatch.connectors.services``; nothing here uses
the system's 1883/5432.  A missing binary makes the fixture raise
``ServiceUnavailable`` with the install command, so the tests that need it
*error* (and the run fails) instead of being skipped.

TimescaleDB is required too, except that a developer may run locally without
it by setting ``PLANTWATCH_TEST_ALLOW_NO_TIMESCALEDB=1``; under ``CI`` that
opt-out is ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

import asyncpg
import pytest

from plantwatch.connectors.db_setup import provision
from plantwatch.connectors.services import MosquittoInstance, PostgresInstance, ServiceError
from plantwatch.connectors.tls_services import SiteCA, TlsPostgres, tls_mosquitto

#: the ordinary role tests (and the daemons they start) connect as: NOSUPERUSER, NOCREATEROLE,
#: no pg_read_all_settings; it owns each test database (as in deploy/README.md)
APP_ROLE = "plantwatch_app"


S = TypeVar("S", MosquittoInstance, PostgresInstance, SiteCA)


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _timescaledb_required() -> bool:
    return _ci() or os.environ.get("PLANTWATCH_TEST_ALLOW_NO_TIMESCALEDB", "") in ("", "0")


def _started(make: Callable[[], S]) -> S:
    """Create and start a service; a missing one becomes a test error with just its message (how to install it)."""
    try:
        service = make()
        service.start()
        return service
    except ServiceError as exc:
        message = f"{type(exc).__name__}: {exc}"
    pytest.fail(message, pytrace=False)  # outside the except block: no chained traceback


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[MosquittoInstance]:
    """A Mosquitto broker for the whole session (persistence on, big offline queues)."""
    broker = _started(MosquittoInstance)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresInstance]:
    """PostgreSQL 15 with TimescaleDB preloaded, fsync off, for the whole session."""
    required = _timescaledb_required()
    pg = _started(lambda: PostgresInstance(timescaledb=True if required else None, fast=True))
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="session")
def plain_postgres() -> Iterator[PostgresInstance]:
    """PostgreSQL 15 without TimescaleDB preloaded: plantwatch must also run on plain PostgreSQL."""
    pg = _started(lambda: PostgresInstance(timescaledb=False, fast=True))
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="session")
def site_ca(tmp_path_factory: pytest.TempPathFactory) -> SiteCA:
    """A site CA made with the shipped deploy/tls/make-site-ca.sh (certificates: ``site_ca.client(name)``)."""
    return _started_ca(tmp_path_factory.mktemp("site-ca"))


def _started_ca(path: Path) -> SiteCA:
    try:
        return SiteCA(path)
    except ServiceError as exc:
        message = f"{type(exc).__name__}: {exc}"
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def tls_mosquitto_broker(site_ca: SiteCA) -> Iterator[MosquittoInstance]:
    """Mosquitto whose only listener is TLS 1.2+ and requires a client certificate of ``site_ca``,
    whose common name is the MQTT user name (use_identity_as_username). The broker's certificate
    names 127.0.0.1 only: connecting as ``localhost`` fails hostname verification."""
    site_ca.server("tls-broker", "127.0.0.1")
    broker = _started(lambda: tls_mosquitto(site_ca, server="tls-broker", require_certificate=True,
                                            use_identity_as_username=True))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def tls_postgres(site_ca: SiteCA) -> Iterator[PostgresInstance]:
    """PostgreSQL 15 (TimescaleDB when installed) with ssl = on and the certificate of ``site_ca``
    for 127.0.0.1; TCP connections without TLS are rejected (hostnossl reject)."""
    pg = _started(lambda: TlsPostgres(site_ca, fast=True))
    try:
        yield pg
    finally:
        pg.stop()


async def _fresh_database(instance: PostgresInstance) -> AsyncIterator[str]:
    """A new database set up the way an administrator does it once (connectors/db_setup.py);
    yields the DSN of the ordinary role that owns it. ``tests.helpers.superuser_dsn`` gives the
    administrator's DSN of the same database."""
    name = f"test_{uuid.uuid4().hex}"
    await provision(instance.admin_dsn, instance.dsn_for(name), role=APP_ROLE, database=name,
                    timescaledb=instance.timescaledb)
    try:
        yield instance.dsn_for(name).replace("postgresql://postgres@", f"postgresql://{APP_ROLE}@", 1)
    finally:
        conn = await asyncpg.connect(instance.admin_dsn)
        try:
            # FORCE: TimescaleDB's per-database scheduler (or a leaked test connection) would block the drop.
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture
async def db(postgres: PostgresInstance) -> AsyncIterator[str]:
    """DSN of a new, empty database on the TimescaleDB cluster, dropped after the test."""
    async for dsn in _fresh_database(postgres):
        yield dsn


@pytest.fixture
async def plain_db(plain_postgres: PostgresInstance) -> AsyncIterator[str]:
    """DSN of a new, empty database on the plain PostgreSQL cluster, dropped after the test."""
    async for dsn in _fresh_database(plain_postgres):
        yield dsn


@pytest.fixture(params=["timescaledb", "plain"])
async def any_db(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """Runs the test twice: on a fresh TimescaleDB database and on a fresh plain PostgreSQL one."""
    name = "postgres" if request.param == "timescaledb" else "plain_postgres"
    instance: PostgresInstance = request.getfixturevalue(name)
    async for dsn in _fresh_database(instance):
        yield dsn


@pytest.fixture
def topic_prefix() -> str:
    """A unique MQTT topic prefix (ending in '/') so tests sharing the broker never see each other's messages."""
    return f"plantwatch-tests/{uuid.uuid4().hex}/"


def _datasets() -> Path | None:
    env = os.environ.get("PLANTWATCH_DATASETS")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        cand = parent / "shared" / "datasets"
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The shared benchmark folder (``shared/datasets`` beside or above the repository).

    CI always has it beside the clone, so there a missing folder fails the run; a developer
    without the data sets sees those tests skipped."""
    d = _datasets()
    if d is None:
        if _ci():
            pytest.fail("shared/datasets not found beside the repository (set PLANTWATCH_DATASETS)", pytrace=False)
        pytest.skip("shared/datasets not found (set PLANTWATCH_DATASETS)")
    return d
