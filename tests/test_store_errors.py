"""The store speaks plantwatch's own errors (connectors/errors.py): a refusal of the data is
``StoreRefused``, a database that is not there ``StoreUnavailable``; the driver's error is kept
as the cause and named in the message. The daemon catches these, never a class of the driver."""
from __future__ import annotations

import time

import asyncpg
import numpy as np
import pytest

from plantwatch.connectors import broker_sessions
from plantwatch.connectors.errors import StoreRefused, StoreUnavailable
from plantwatch.connectors.store import ReadingRows, Store
from plantwatch.daemon.config.model import load_config_text

from .helpers import site_config

CFG = load_config_text(site_config(n_gas=2))


async def test_a_write_the_database_refuses_is_store_refused_with_the_drivers_reason(db):
    store = await Store.open(db, connections=2)
    try:
        ids = await store.sync_registry(CFG.site, CFG.sensors)
        async with store.pool.acquire() as conn:
            await conn.execute("ALTER TABLE readings ADD CONSTRAINT no_4_4 CHECK (value <> 4.4)")
        rows = ReadingRows(np.array([ids["G0"]], dtype=np.int32), np.array([time.time()]), np.array([4.4]),
                           np.array([0], dtype=np.int16))
        with pytest.raises(StoreRefused) as got:
            await store.write(rows)
        assert isinstance(got.value.__cause__, asyncpg.CheckViolationError)
        assert got.value.kind == "CheckViolationError" and "no_4_4" in str(got.value)
        assert str(got.value).startswith("CheckViolationError: ")
        ok = ReadingRows(np.array([ids["G0"]], dtype=np.int32), np.array([time.time()]), np.array([1.0]),
                         np.array([0], dtype=np.int16))
        assert (await store.write(ok)).inserted == 1  # the refusal left the store usable
    finally:
        await store.close()


async def test_reads_of_a_database_that_is_gone_are_store_unavailable(db):
    store = await Store.open(db, connections=2)
    await store.close()  # the pool is closed: every read meets the driver's InterfaceError
    with pytest.raises(StoreUnavailable) as got:
        await store.active_alarms()
    assert got.value.kind == "InterfaceError" and isinstance(got.value.__cause__, asyncpg.InterfaceError)
    with pytest.raises(StoreUnavailable):
        await store.alarm_records.list_alarms()
    with pytest.raises(StoreUnavailable):
        await broker_sessions.known(store.pool, "site", "client")


async def test_reads_of_a_database_that_refuses_connections_are_store_unavailable(db):
    with pytest.raises(StoreUnavailable) as got:  # nothing listens on port 1
        from plantwatch.connectors import incident_facts
        await incident_facts.latest("postgresql://plantwatch@127.0.0.1:1/none")
    assert isinstance(got.value.__cause__, OSError)
