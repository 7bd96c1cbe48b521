"""Tests of the throwaway services themselves (real Mosquitto and PostgreSQL, no mocks)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiomqtt
import asyncpg
import pytest

from plantwatch.connectors.services import (
    MosquittoInstance,
    PostgresInstance,
    ServiceUnavailable,
    free_port,
)

from .helpers import superuser_dsn


async def receive(client: aiomqtt.Client, count: int, timeout: float = 10.0) -> list[bytes]:
    """The payloads of the next ``count`` messages, failing after ``timeout`` seconds."""
    payloads: list[bytes] = []
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            payloads.append(message.payload)
            if len(payloads) == count:
                break
    return payloads


async def publish(host: str, port: int, topic: str, payloads: list[bytes]) -> None:
    async with aiomqtt.Client(host, port) as pub:
        for payload in payloads:
            await pub.publish(topic, payload, qos=1)


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 < port < 65536


def test_free_ports_are_outside_the_kernels_ephemeral_range() -> None:
    """A server's port is taken below the range the kernel gives outgoing connections: a port the
    kernel picked could be taken by another process's client socket before the daemon bound it
    (a test failed with "metrics: cannot listen on 127.0.0.1:41189: Address already in use")."""
    import socket

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(50)}
    assert all(p < low for p in ports), sorted(p for p in ports if p >= low)
    assert len(ports) > 40  # spread out, not one port handed to every caller
    with socket.socket() as s:
        p = free_port()
        s.bind(("127.0.0.1", p))  # free indeed


def test_services_do_not_use_system_ports(mosquitto: MosquittoInstance, postgres: PostgresInstance) -> None:
    assert mosquitto.port != 1883
    assert postgres.port != 5432
    assert postgres.dsn == f"postgresql://postgres@127.0.0.1:{postgres.port}/plantwatch"


async def test_mosquitto_round_trip_qos1(mosquitto: MosquittoInstance, topic_prefix: str) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe(topic_prefix + "#", qos=1)
        await client.publish(topic_prefix + "a", b"hello", qos=1)
        async with asyncio.timeout(10):
            message = await anext(client.messages)
    assert message.payload == b"hello"
    assert message.qos == 1
    assert str(message.topic) == topic_prefix + "a"


async def test_mosquitto_persistent_session_across_restart(mosquitto: MosquittoInstance, topic_prefix: str) -> None:
    """Messages published while a clean_session=False subscriber is away, before and after a broker restart, arrive."""
    identifier = f"pw-test-{uuid.uuid4().hex[:12]}"
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=identifier, clean_session=False) as sub:
        await sub.subscribe(topic_prefix + "#", qos=1)

    before = [f"before-{i}".encode() for i in range(5)]
    await publish(mosquitto.host, mosquitto.port, topic_prefix + "r", before)
    port = mosquitto.port
    await asyncio.to_thread(mosquitto.restart)  # SIGTERM: mosquitto writes its persistence file
    assert mosquitto.port == port and mosquitto.running
    after = [f"after-{i}".encode() for i in range(5)]
    await publish(mosquitto.host, mosquitto.port, topic_prefix + "r", after)

    # No new SUBSCRIBE: the broker kept the subscription and queued the messages.
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=identifier, clean_session=False) as sub:
        assert await receive(sub, 10) == before + after
        await sub.unsubscribe(topic_prefix + "#")


async def test_mosquitto_autosave_survives_kill(topic_prefix: str) -> None:
    """With autosave_interval 1, messages queued more than a second before a SIGKILL survive it."""
    async with MosquittoInstance() as broker:
        identifier = f"pw-test-{uuid.uuid4().hex[:12]}"
        async with aiomqtt.Client(broker.host, broker.port, identifier=identifier, clean_session=False) as sub:
            await sub.subscribe(topic_prefix + "#", qos=1)
        payloads = [f"m{i}".encode() for i in range(3)]
        await publish(broker.host, broker.port, topic_prefix + "k", payloads)
        await asyncio.sleep(2.5)
        await asyncio.to_thread(broker.restart, hard=True)
        async with aiomqtt.Client(broker.host, broker.port, identifier=identifier, clean_session=False) as sub:
            assert await receive(sub, 3) == payloads


def test_mosquitto_missing_binary_is_a_clear_error() -> None:
    with pytest.raises(ServiceUnavailable, match="install-services.sh"):
        MosquittoInstance(binary="/nonexistent/mosquitto")


def test_postgres_missing_binaries_is_a_clear_error() -> None:
    with pytest.raises(ServiceUnavailable, match="install-services.sh"):
        PostgresInstance(pg_bin="/nonexistent/bin")


async def test_postgres_database_and_fast_settings(postgres: PostgresInstance) -> None:
    conn = await asyncpg.connect(postgres.dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") == "plantwatch"
        assert await conn.fetchval("SHOW fsync") == "off"
        assert await conn.fetchval("SHOW synchronous_commit") == "off"
        assert await conn.fetchval("SHOW full_page_writes") == "off"
        assert await conn.fetchval("SHOW max_connections") == "100"
        assert int(await conn.fetchval("SHOW server_version_num")) // 10000 == postgres.major
    finally:
        await conn.close()
    conn = await asyncpg.connect(postgres.socket_dsn)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_timescaledb_extension_and_hypertable(postgres: PostgresInstance, db: str) -> None:
    if not postgres.timescaledb:
        pytest.skip("TimescaleDB not installed and PLANTWATCH_TEST_ALLOW_NO_TIMESCALEDB=1 set (never under CI)")
    conn = await asyncpg.connect(superuser_dsn(db))  # shared_preload_libraries is for superusers to read
    try:
        assert await conn.fetchval("SHOW shared_preload_libraries") == "timescaledb"
        assert await conn.fetchval("SHOW timescaledb.telemetry_level") == "off"
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        version = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        assert version.startswith("2."), version
        await conn.execute(
            "CREATE TABLE readings (time timestamptz NOT NULL, sensor_id int NOT NULL, value double precision,"
            " UNIQUE (sensor_id, time))"
        )
        await conn.execute("SELECT create_hypertable('readings', by_range('time', INTERVAL '1 day'))")
        await conn.executemany(
            "INSERT INTO readings VALUES (now() - make_interval(days => $1), 1, $1)", [(i,) for i in range(5)]
        )
        assert await conn.fetchval("SELECT count(*) FROM readings") == 5
        assert await conn.fetchval(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'readings'"
        ) >= 5
    finally:
        await conn.close()


async def test_plain_postgres_has_no_timescaledb(plain_postgres: PostgresInstance, plain_db: str) -> None:
    assert plain_postgres.timescaledb is False
    conn = await asyncpg.connect(superuser_dsn(plain_db))
    try:
        assert "timescaledb" not in await conn.fetchval("SHOW shared_preload_libraries")
        assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == 0
    finally:
        await conn.close()


async def test_db_fixture_gives_fresh_empty_databases(any_db: str) -> None:
    conn = await asyncpg.connect(any_db)
    try:
        assert await conn.fetchval("SELECT current_database()") != "plantwatch"
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables == 0
        await conn.execute("CREATE TABLE t (x int)")
    finally:
        await conn.close()


def test_postgres_restart_keeps_data_and_port() -> None:
    """restart(hard=True) is an immediate shutdown: committed rows survive through WAL recovery."""
    with PostgresInstance(timescaledb=False) as pg:
        pg.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (42)", pg.database)
        port = pg.port
        pg.restart(hard=True)
        assert pg.port == port
        assert pg.psql("SELECT x FROM t", pg.database) == "42"
        pg.restart()
        assert pg.psql("SELECT count(*) FROM t", pg.database) == "1"
        data_dir = pg.data_dir
    assert not data_dir.exists()
    assert not pg.running
