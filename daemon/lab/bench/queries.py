"""Dashboard queries over 7 days, on a readings table of tens of millions of rows generated with
binary COPY, using the rollups plantwatch maintains itself (``Store.refresh_rollups`` for
minutes, ``Store.refresh_hourly`` for hours). The queries are the dashboards' own
(``connectors/rig_db.py``, ``DASHBOARD_SQL``)."""
from __future__ import annotations

import asyncio
import time

import numpy as np

from plantwatch.connectors import pgcopy
from plantwatch.connectors.rig_db import RigDb
from plantwatch.connectors.store import Store
from plantwatch.daemon.config.model import load_config_text

from plantwatch.daemon.lab.bench.env import N_AREAS, CpuMeter, Services, site_yaml

DAY = 86400.0


async def dashboards(svc: Services, *, rows: int, sensors: int = 2000, days: float = 7.0, runs: int = 20) -> dict:
    dsn = await svc.fresh_db()
    try:
        store = await Store.open(dsn, connections=2)
        cfg = load_config_text(site_yaml(sensors, host="h", port=1, prefix="q", dsn=dsn, client_id="x", metrics_port=0))
        ids = await store.sync_registry(cfg.site, cfg.sensors)
        sid_all = np.array([ids[s.id] for s in cfg.sensors], dtype=np.int32)
        now = time.time()
        now -= now % 60
        t_end = now
        t_start = now - days * DAY
        per_sensor = rows // sensors
        step = (t_end - t_start) / per_sensor
        # generate: 2 connections, batches of 1M rows, time-major (as it arrives)
        t_gen = time.perf_counter()
        chunk = 1_000_000
        k_total = per_sensor * sensors
        rng = np.random.default_rng(7)

        def batch(k0: int, k1: int) -> bytes:
            k = np.arange(k0, k1)
            s = k % sensors
            t = t_start + (k // sensors) * step + (s * 0.37) % step
            v = 1.0 + rng.normal(0, 0.1, len(k)) + (s % 5 == 3) * 11.0
            return pgcopy.encode([("timestamptz", t), ("int4", sid_all[s]), ("float8", v),
                                  ("int2", np.zeros(len(k), np.int16))])

        queue: asyncio.Queue = asyncio.Queue(maxsize=2)

        async def producer() -> None:
            for k0 in range(0, k_total, chunk):
                await queue.put(await asyncio.to_thread(batch, k0, min(k_total, k0 + chunk)))
            for _ in range(2):
                await queue.put(None)

        async def loader() -> None:
            async with await RigDb.connect(dsn) as db:
                while (data := await queue.get()) is not None:
                    await db.copy_readings(data)

        await asyncio.gather(producer(), loader(), loader())
        gen_s = time.perf_counter() - t_gen
        # rollups, by plantwatch's own functions, one day at a time (as the daemon would have)
        t_roll = time.perf_counter()
        meter = CpuMeter(svc)
        day0 = t_start - t_start % DAY
        d = day0
        while d < t_end:
            await store.refresh_rollups(max(d, t_start), min(d + DAY, t_end))
            await store.refresh_hourly(d, min(d + DAY, t_end - t_end % 3600))
            d += DAY
        roll_s = time.perf_counter() - t_roll
        roll_cpu = meter.done()["db"]
        async with await RigDb.connect(dsn) as db:
            await db.analyze()
            n_rows = await db.count("readings")
            n_1m = await db.count("readings_1m")
            n_1h = await db.count("readings_1h")
            out = {"rows": int(n_rows), "sensors": sensors, "days": days, "rollup_1m_rows": int(n_1m),
                   "rollup_1h_rows": int(n_1h), "generate_s": gen_s, "generate_rows_per_s": n_rows / gen_s,
                   "rollup_s": roll_s, "rollup_db_cpu_us_per_row": roll_cpu / max(1, n_rows) * 1e6,
                   "timescaledb": bool(store.timescale.get("available"))}
            # the dashboards' "to" is a little inside the data, so the current-hour branch has rows
            to = float(t_end - 600)
            frm = float(t_end - 600 - days * DAY)
            for name, query, args in [
                ("area_7d", "area", lambda i: (f"A{i % N_AREAS}", frm, to)),
                ("site_7d", "site", lambda i: (frm, to)),
                ("sensor_raw_1h", "sensor_raw", lambda i: (int(sid_all[(i * 97) % sensors]), float(t_end - 3600 - i * 60),
                                                           float(t_end - i * 60))),
            ]:
                await db.dashboard_query(query, *args(0))  # plan and warm once
                lat = []
                nret = 0
                for i in range(runs):
                    a = time.perf_counter()
                    nret = await db.dashboard_query(query, *args(i))
                    lat.append(time.perf_counter() - a)
                out[name] = {"p50_ms": float(np.percentile(lat, 50)) * 1e3, "p95_ms": float(np.percentile(lat, 95)) * 1e3,
                             "rows_returned": nret, "runs": runs}
        await store.close()
        return out
    finally:
        await svc.drop_db(dsn)
