"""Storage on TimescaleDB and on plain PostgreSQL: migrations, idempotent writes, exact values."""
from __future__ import annotations

import asyncpg
import numpy as np

from plantwatch.connectors.migrations import available, migrate
from plantwatch.connectors.store import DeadLetter, ReadingRows, RobotRows, Store
from plantwatch.daemon.config.model import load_config_text

from .helpers import site_config, superuser_dsn

CFG = load_config_text(site_config(n_gas=5, n_robot=1))


async def test_migrations_apply_once_and_pick_the_right_tables(any_db):
    admin = await asyncpg.connect(superuser_dsn(any_db))
    try:
        preloaded = "timescaledb" in (await admin.fetchval("SHOW shared_preload_libraries"))
    finally:
        await admin.close()
    conn = await asyncpg.connect(any_db)
    try:
        assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert await migrate(conn) == [v for v, _, _ in available()]
        assert await migrate(conn) == []
        hyper = await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
        assert bool(hyper) == preloaded
        if preloaded:
            names = {r[0] for r in await conn.fetch("SELECT hypertable_name FROM timescaledb_information.hypertables")}
            assert {"readings", "robot_readings", "readings_1m"} <= names
    finally:
        await conn.close()


async def test_writes_are_idempotent_and_exact(any_db):
    store = await Store.open(any_db)
    try:
        ids = await store.sync_registry(CFG.site, CFG.sensors)
        assert await store.sync_registry(CFG.site, CFG.sensors) == ids  # ids are stable
        n = 10_000
        sid = np.array([ids[f"G{i % 5}"] for i in range(n)], dtype=np.int32)
        t = 1_790_000_000.123456 + np.arange(n) // 5 * 0.25
        val = np.random.default_rng(1).normal(size=n)
        q = (np.arange(n) % 3).astype(np.int16)
        rows = ReadingRows(sid, t, val, q)
        r1 = await store.write(rows)
        assert (r1.inserted, r1.duplicates) == (n, 0)
        r2 = await store.write(rows)  # a redelivery
        assert (r2.inserted, r2.duplicates) == (0, n)
        async with store.pool.acquire() as c:
            got = await c.fetch("SELECT extract(epoch FROM time)::float8 AS t, sensor_id, value, quality FROM readings"
                                " ORDER BY time, sensor_id")
        assert len(got) == n
        order = np.lexsort((sid, t))
        assert np.allclose([g["t"] for g in got], t[order], atol=1e-6, rtol=0)
        assert [g["value"] for g in got] == val[order].tolist()
        assert [g["quality"] for g in got] == q[order].tolist()

        robot = RobotRows(np.array([ids["R0"]] * 2, dtype=np.int32), np.array([1.79e9, 1.79e9 + 1]), np.array([1.0, 2.0]),
                          np.zeros(2, np.int16), np.array([3.0, 4.0]), np.array([5.0, 6.0]), ["area1", None])
        dead = [DeadLetter("t/x", "c1", 4, "out_of_range", "too big", b'{"x":1}', "k1")]
        r = await store.write(None, robot, dead)
        assert (r.robot_inserted, r.dead_lettered) == (2, 1)
        r = await store.write(None, robot, dead)
        assert (r.robot_inserted, r.dead_lettered, r.duplicates) == (0, 0, 2)
    finally:
        await store.close()


async def test_rollups(any_db):
    store = await Store.open(any_db)
    try:
        ids = await store.sync_registry(CFG.site, CFG.sensors)
        t0 = 1_790_000_080.0  # 40 s into a minute (1_790_000_040 is a whole minute)
        t = t0 + np.arange(60.0)  # spans two minutes
        await store.write(ReadingRows(np.full(60, ids["G0"], np.int32), t, np.arange(60.0), np.zeros(60, np.int16)))
        assert await store.refresh_rollups(t0 - 100, t0 + 100) == 2
        async with store.pool.acquire() as c:
            rows = await c.fetch("SELECT n, avg, min, max, last FROM readings_1m ORDER BY bucket")
        assert [tuple(r) for r in rows] == [(20, 9.5, 0.0, 19.0, 19.0), (40, 39.5, 20.0, 59.0, 59.0)]
    finally:
        await store.close()


async def test_detector_state_round_trip(any_db):
    store = await Store.open(any_db)
    try:
        st = {"a": np.arange(5.0), "b": {"c": np.zeros(3, np.int8)}}
        await store.save_detector_states([("d1", "fp", st)])
        got = await store.load_detector_states()
        assert got["d1"][0] == "fp" and np.array_equal(got["d1"][1]["a"], st["a"])
    finally:
        await store.close()


async def test_direct_copy_falls_back_on_partial_duplicates_and_rollups_follow_writes(any_db):
    """A unit that mixes new readings with already-stored ones (a redelivery) stores only the new
    ones; closed minutes and hours that received readings are rolled up by ``refresh_dirty``."""
    store = await Store.open(any_db)
    try:
        ids = await store.sync_registry(CFG.site, CFG.sensors)
        t0 = 1_789_999_980.0  # a minute boundary (divisible by 60)
        sid = np.array([ids["G0"], ids["G1"]] * 60, dtype=np.int32)
        t = t0 + np.repeat(np.arange(60), 2) * 1.0
        val = np.arange(120, dtype=np.float64)
        q = np.zeros(120, np.int16)
        first = ReadingRows(sid[:80], t[:80], val[:80], q[:80])
        assert (await store.write(first)).inserted == 80
        mixed = ReadingRows(sid, t, val, q)  # 80 stored already, 40 new
        r = await store.write(mixed)
        assert (r.inserted, r.duplicates) == (40, 80)
        # the next units take the staging path (no error), then direct COPY again
        later = ReadingRows(sid[:2], t[:2] + 3600, val[:2], q[:2])
        assert (await store.write(later)).inserted == 2
        assert await store.refresh_dirty(t0 + 30) == 0  # minute not closed yet
        assert await store.refresh_dirty(t0 + 7200 + 120) > 0
        async with store.pool.acquire() as c:
            assert await c.fetchval("SELECT count(*) FROM readings") == 122
            m = await c.fetch("SELECT sensor_id, n, avg, last FROM readings_1m WHERE bucket = to_timestamp($1)"
                              " ORDER BY sensor_id", t0)
            assert [(x["n"], x["last"]) for x in m] == [(60, 118.0), (60, 119.0)]
            h = await c.fetch("SELECT n, avg FROM readings_1h WHERE bucket = to_timestamp($1) ORDER BY sensor_id", t0 - t0 % 3600)
            assert [x["n"] for x in h] == [60, 60] and h[0]["avg"] == float(np.mean(val[0::2]))
        assert not store.dirty_minutes and not store.dirty_hours
    finally:
        await store.close()


async def test_dead_letter_details_quoting_hostile_input_are_stored(db):
    # decoder messages quote the input (an unknown field named "a\u0000b"): text columns refuse NUL
    from tests.test_validate import run
    v = run(b'{"v":1,"collector":"edge1","seq":1,"readings":[{"sensor":"G0","time":1,"value":1,"a\\u0000b":1}]}')
    assert [d.reason for d in v.rejected] == ["wrong_type"] and "\x00" in v.rejected[0].detail
    store = await Store.open(db)
    try:
        r = await store.write(None, None, v.rejected)
        assert r.dead_lettered == 1
        async with store.pool.acquire() as c:
            detail = await c.fetchval("SELECT detail FROM dead_letters")
        assert "unknown field" in detail and "a\\x00b" in detail
    finally:
        await store.close()


async def test_owner_role_enables_timescaledb_itself_on_a_new_database(postgres):
    """An administrator who created the role and database but not the extension: the ordinary
    owner role enables it (a trusted extension) before the first migration, and the tables become
    hypertables; nothing it does needs a superuser setting."""
    import uuid

    from plantwatch.connectors.db_setup import provision

    from .conftest import APP_ROLE

    name = f"test_{uuid.uuid4().hex}"
    await provision(postgres.admin_dsn, postgres.dsn_for(name), role=APP_ROLE, database=name, timescaledb=False)
    conn = await asyncpg.connect(postgres.dsn_for(name).replace("//postgres@", f"//{APP_ROLE}@", 1))
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == 0
        await migrate(conn)
        assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == 1
        names = {r[0] for r in await conn.fetch("SELECT hypertable_name FROM timescaledb_information.hypertables")}
        assert {"readings", "robot_readings", "readings_1m", "readings_1h"} <= names
    finally:
        await conn.close()
        admin = await asyncpg.connect(postgres.admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# Unix times whose µs PostgreSQL (to_timestamp, binary COPY) and datetime.fromtimestamp round
# apart: the first was a robot reading of the site stack's test stored 1 µs after the fixed
# readings sent with it.
AWKWARD = [1796561804.1564865] + (1.79e9 + np.random.default_rng(7).random(400) * 1e7).tolist()


async def test_every_time_is_stored_as_postgresql_rounds_it(any_db):
    """A fixed and a robot reading sent at one time are stored at one time, the one
    ``to_timestamp`` gives; so are the times of alarms and query bounds (``pg_datetime``)."""
    store = await Store.open(any_db)
    try:
        ids = await store.sync_registry(CFG.site, CFG.sensors)
        t = np.array(AWKWARD)
        n = len(t)
        await store.write(ReadingRows(np.full(n, ids["G0"], np.int32), t, np.ones(n), np.zeros(n, np.int16)),
                          RobotRows(np.full(n, ids["R0"], np.int32), t, np.ones(n), np.zeros(n, np.int16),
                                    np.zeros(n), np.zeros(n), [None] * n))
        async with store.pool.acquire() as c:
            want = [r[0] for r in await c.fetch("SELECT to_timestamp(x) FROM unnest($1::float8[]) WITH ORDINALITY"
                                                " AS u(x, i) ORDER BY i", AWKWARD)]
            fixed = [r[0] for r in await c.fetch("SELECT time FROM readings ORDER BY time")]
            robot = [r[0] for r in await c.fetch("SELECT time FROM robot_readings ORDER BY time")]
        assert fixed == sorted(want)
        assert robot == sorted(want), [(a, b) for a, b in zip(robot, sorted(want)) if a != b][:3]
        from plantwatch.connectors.pgcopy import pg_datetime
        assert [pg_datetime(x) for x in AWKWARD] == want
    finally:
        await store.close()


async def test_instances_starting_together_sync_the_limits_without_refusing_each_other(any_db):
    """Two instances of a cluster starting at the same moment both write the limits table; a
    delete-then-insert refused the later one's insert as a duplicate key and stopped it (a red
    failover test: "stopped by UniqueViolationError ... sensor_limits_pkey")."""
    import asyncio

    stores = [await Store.open(any_db) for _ in range(3)]
    try:
        ids = await stores[0].sync_registry(CFG.site, CFG.sensors)
        limits = [(f"G{i}", det, None, None, 10.0 + i, 20.0 + i) for i in range(5) for det in ("a", "b")]
        for _ in range(15):
            async with stores[0].pool.acquire() as c:
                await c.execute("DELETE FROM sensor_limits")
            await asyncio.gather(*(s.sync_limits(limits, ids) for s in stores))
        # a changed config: changed limits updated, removed ones gone, the rest kept
        await stores[1].sync_limits([(f"G{i}", "a", None, 1.0, 30.0, None) for i in range(3)], ids)
        async with stores[0].pool.acquire() as c:
            got = sorted(tuple(r) for r in await c.fetch("SELECT sensor_id, detector_id, low, high FROM sensor_limits"))
        assert got == sorted((ids[f"G{i}"], "a", 1.0, 30.0) for i in range(3))
    finally:
        for s in stores:
            await s.close()
