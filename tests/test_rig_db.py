"""The measurement rigs' database side (connectors/rig_db.py) on TimescaleDB and plain PostgreSQL:
what it loads is what it reads back, exactly."""
from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from plantwatch.connectors import pgcopy
from plantwatch.connectors.rig_db import RigDb, create_database, drop_database
from plantwatch.connectors.store import Store
from plantwatch.daemon.config.model import load_config_text

from .helpers import site_config

CFG = load_config_text(site_config(n_gas=5, n_robot=1))


async def test_what_a_rig_loads_it_reads_back(any_db):
    store = await Store.open(any_db)
    try:
        ids = await store.sync_registry(CFG.site, CFG.sensors)
    finally:
        await store.close()
    gas = [s.id for s in CFG.sensors if s.kind == "gas"]
    t0 = float(int(time.time()) - 600)
    t = t0 + np.repeat(np.arange(10.0), len(gas))
    sid = np.tile(np.array([ids[g] for g in gas], dtype=np.int32), 10)
    data = pgcopy.encode([("timestamptz", t), ("int4", sid), ("float8", np.ones(len(t))), ("int2", np.zeros(len(t), np.int16))])
    async with await RigDb.connect(any_db) as db:
        assert await db.sensor_ids() == ids
        assert await db.sensor_ids(gas[:2]) == {g: ids[g] for g in gas[:2]}
        await db.copy_readings(data, transaction=True)
        await db.insert_reading(t0 + 100.0, ids[gas[0]], 2.5)
        await db.insert_reading(t0 + 100.0, ids[gas[0]], 2.5)  # a duplicate is ignored
        assert await db.count("readings") == len(t) + 1
        s, ts = await db.stored_times(t0)
        assert sorted(zip(s.tolist(), ts.tolist())) == sorted([*zip(sid.tolist(), t.tolist()), (ids[gas[0]], t0 + 100.0)])
        assert sorted(await db.times_after([ids[gas[1]]], t0 + 7.5)) == [(ids[gas[1]], t0 + 8.0), (ids[gas[1]], t0 + 9.0)]
        assert await db.newest_of([ids[g] for g in gas]) == t0 + 9.0  # the one furthest behind
        assert await db.delete_newest_readings(t0, 1) == 1
        assert await db.count("readings") == len(t)
        await db.analyze()
        assert await db.dashboard_query("sensor_raw", ids[gas[0]], t0, t0 + 5.5) == 6
        assert await db.partition_leases() == {}
        assert await db.alarm_raises("none") == [] and await db.active_alarm_sensors("none") == set()
        with pytest.raises(ValueError, match="not a counted table"):
            await db.count("sensors; DROP TABLE readings")


async def test_a_rig_makes_and_drops_its_own_database(postgres):
    name = f"rig_{uuid.uuid4().hex[:8]}"
    await create_database(postgres.admin_dsn, name)
    assert postgres.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "1"
    await drop_database(postgres.admin_dsn, postgres.dsn_for(name))
    assert postgres.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "0"
