"""Two units written at once by the daemon's parallel writers: the newer carries alarm changes and
must wait for the older one's commit (alarm order). It must not wait while holding a row the older
unit needs: found by ``plantwatch faults`` (a kill -9 and restart, a backlog of units in flight,
a crossing injected meanwhile: ingestion and alarms stopped for good)."""
from __future__ import annotations

import asyncio
import time

import numpy as np

from plantwatch.connectors.store import AlarmWrite, CollectorSeen, ReadingRows, Store
from plantwatch.daemon.config.model import load_config_text

from .helpers import site_config


async def test_a_unit_waiting_for_its_alarm_turn_holds_no_row_the_previous_unit_needs(db):
    cfg = load_config_text(site_config(n_gas=2, dsn=db))
    store = await Store.open(db, connections=4)
    pending: set = set()
    try:
        ids = await store.sync_registry(cfg.site, cfg.sensors)
        sid = ids["G0"]
        now = time.time()
        older_committed = asyncio.get_running_loop().create_future()
        raise_ = AlarmWrite("h2s-limit", sid, "normal", "unack", True, "high", "high", now, {"by": "detector"}, raised=True)
        # the newer unit (readings, its collector's row, an alarm raise) reaches the database first ...
        newer = asyncio.create_task(store.write(
            ReadingRows(np.array([sid], np.int32), np.array([now]), np.array([7.0]), np.zeros(1, np.int16)),
            collectors=[CollectorSeen("edge1", 2, now, 0)], alarm_ops=[raise_],
            before_alarms=lambda: asyncio.shield(older_committed)))
        await asyncio.sleep(0.5)
        # ... then the older unit of the same collector, whose commit the newer one waits for
        older = asyncio.create_task(store.write(
            ReadingRows(np.array([sid], np.int32), np.array([now - 1]), np.array([1.0]), np.zeros(1, np.int16)),
            collectors=[CollectorSeen("edge1", 1, now - 1, 0)]))
        older.add_done_callback(lambda f: older_committed.set_result(None))
        done, pending = await asyncio.wait({newer, older}, timeout=15)
        for t in pending:
            t.cancel()
        assert not pending, "the two units deadlocked: the newer waited for the older while holding its row"
        async with store.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM readings") == 2
            assert await conn.fetchval("SELECT last_seq FROM collectors WHERE id = 'edge1'") == 2
            assert await conn.fetchval("SELECT count(*) FROM alarm_changes") == 1
    finally:
        if pending:
            store.pool.terminate()  # the deadlocked connections would never be released
        else:
            await store.close()
