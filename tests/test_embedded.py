"""The no-config services: in-process amqtt broker and the bundled PostgreSQL 18, with real connections."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import asyncpg
import pytest

from plantwatch.connectors.embedded import EmbeddedBroker, EmbeddedPostgres, _reachable_pg_bin, embedded_pg_bin
from plantwatch.connectors.services import PostgresInstance, ServiceStartError, free_port, service_user


@pytest.fixture
def data_parent() -> Iterator[Path]:
    """A directory the PostgreSQL OS user can traverse (pytest's tmp_path is mode 700 when run as root)."""
    path = Path(tempfile.mkdtemp(prefix="plantwatch-embedded-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_embedded_broker_qos1_round_trip(topic_prefix: str) -> None:
    async with EmbeddedBroker() as broker:
        assert broker.host == "127.0.0.1" and broker.port > 0
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.subscribe(topic_prefix + "#", qos=1)
            await client.publish(topic_prefix + "t", b"reading", qos=1)
            async with asyncio.timeout(10):
                message = await anext(client.messages)
        assert message.payload == b"reading"
        assert message.qos == 1


async def test_embedded_broker_given_port(topic_prefix: str) -> None:
    port = free_port()
    async with EmbeddedBroker(port=port) as broker:
        assert broker.port == port
        async with aiomqtt.Client("127.0.0.1", port) as client:
            await client.publish(topic_prefix + "t", b"x", qos=1)


async def test_embedded_broker_persistent_session_in_memory(topic_prefix: str) -> None:
    """amqtt queues QoS 1 messages for an offline clean_session=False client (in memory, not across restarts).

    Quirk: amqtt delivers such queued messages with the RETAIN flag set.
    """
    async with EmbeddedBroker() as broker:
        identifier = f"pw-test-{uuid.uuid4().hex[:12]}"
        async with aiomqtt.Client(broker.host, broker.port, identifier=identifier, clean_session=False) as sub:
            await sub.subscribe(topic_prefix + "#", qos=1)
        async with aiomqtt.Client(broker.host, broker.port) as pub:
            for i in range(3):
                await pub.publish(topic_prefix + "q", f"m{i}".encode(), qos=1)
        got: list[bytes] = []
        async with aiomqtt.Client(broker.host, broker.port, identifier=identifier, clean_session=False) as sub:
            async with asyncio.timeout(10):
                async for message in sub.messages:
                    assert isinstance(message.payload, bytes)
                    got.append(message.payload)
                    if len(got) == 3:
                        break
        assert got == [b"m0", b"m1", b"m2"]


async def test_embedded_postgres_start_query_and_persist(data_parent: Path) -> None:
    data_dir = data_parent / ".plantwatch" / "pgdata"
    started = time.monotonic()
    async with EmbeddedPostgres(data_dir) as pg:
        assert time.monotonic() - started < 30
        conn = await asyncpg.connect(pg.dsn)
        try:
            assert await conn.fetchval("SELECT 1") == 1
            assert int(await conn.fetchval("SHOW server_version_num")) // 10000 == 18
            assert await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'") == 0
            await conn.execute("CREATE TABLE readings (sensor text, value double precision)")
            await conn.executemany("INSERT INTO readings VALUES ($1, $2)", [("ph", 7.1), ("temp", 351.5)])
            rows = await conn.fetch("SELECT sensor, value FROM readings ORDER BY sensor")
            assert [tuple(r) for r in rows] == [("ph", 7.1), ("temp", 351.5)]
        finally:
            await conn.close()
        conn = await asyncpg.connect(pg.socket_dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM readings") == 2
        finally:
            await conn.close()
    assert (data_dir / "PG_VERSION").read_text().strip() == "18"

    # Second run: same cluster, data still there, quick start.
    started = time.monotonic()
    async with EmbeddedPostgres(data_dir) as pg:
        assert time.monotonic() - started < 15
        conn = await asyncpg.connect(pg.dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM readings") == 2
        finally:
            await conn.close()


async def test_embedded_postgres_adopts_running_server(data_parent: Path) -> None:
    """A server left running on the data directory (e.g. by a killed process) is reused, not fought over."""
    data_dir = data_parent / "pgdata"
    first = EmbeddedPostgres(data_dir)
    await asyncio.to_thread(first.start)
    try:
        async with EmbeddedPostgres(data_dir) as second:
            assert second.port == first.port
            conn = await asyncpg.connect(second.dsn)
            try:
                assert await conn.fetchval("SELECT 1") == 1
            finally:
                await conn.close()
        # The adopter leaves the server running for its owner.
        assert first.instance.running
    finally:
        await asyncio.to_thread(first.stop)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another OS user")
def test_embedded_postgres_unreachable_data_dir_moves_to_var_lib() -> None:
    """Run as root from a private home (mode 700), the cluster lives under /var/lib instead, the
    same folder on every run from that path, so the newcomer's demo works without chmod."""
    hidden = Path(tempfile.mkdtemp(prefix="plantwatch-private-"))  # mode 700, owned by root
    pg = EmbeddedPostgres(hidden / "pgdata")
    try:
        pg.start()
        used = pg.data_dir
        assert str(used).startswith("/var/lib/plantwatch/embedded/") and (used / "PG_VERSION").exists()
        assert pg.instance.psql("SELECT 41 + 1").strip() == "42"
        pg.stop()
        again = EmbeddedPostgres(hidden / "pgdata")
        again.start()
        assert again.data_dir == used
        again.stop()
    finally:
        with contextlib.suppress(Exception):
            pg.stop()
        shutil.rmtree(hidden, ignore_errors=True)
        shutil.rmtree(pg.data_dir.parent, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another OS user")
def test_bundled_postgres_copied_when_service_user_cannot_reach_it(data_parent: Path) -> None:
    """As root with the venv in e.g. /root (mode 700), the bundled PostgreSQL is copied where its user can run it."""
    package = embedded_pg_bin().parent.parent
    private = Path(tempfile.mkdtemp(prefix="plantwatch-private-"))  # mode 700, owned by root
    try:
        shutil.copytree(package / "pginstall", private / package.name / "pginstall", symlinks=True)
        shutil.copytree(package.parent / f"{package.name}.libs", private / f"{package.name}.libs", symlinks=True)
        user = service_user()
        cache = data_parent / "cache"
        pg_bin = _reachable_pg_bin(private / package.name / "pginstall" / "bin", user, cache_dir=cache)
        assert pg_bin.is_relative_to(cache)
        with PostgresInstance(pg_bin=pg_bin, timescaledb=False, fast=True, run_as=user) as pg:
            assert pg.psql("SELECT current_setting('server_version_num')::int / 10000") == "18"
    finally:
        shutil.rmtree(private, ignore_errors=True)
