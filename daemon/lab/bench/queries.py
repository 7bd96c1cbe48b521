"""Dashboard queries over 7 days, on a readings table of tens of millions of rows generated with
binary COPY, using the rollups plantwatch maintains itself (``Store.refresh_rollups`` for
minutes, ``Store.refresh_hourly`` for hours)."""
from __future__ import annotations

import asyncio
import io
import time
from datetime import datetime, timezone

import asyncpg
import numpy as np

from plantwatch.connectors import pgcopy
from plantwatch.connectors.store import Store
from plantwatch.daemon.config.model import load_config_text

from plantwatch.daemon.lab.bench.env import N_AREAS, CpuMeter, Services, site_yaml

DAY = 86400.0

#: an area's sensors, hourly, over [from, to): closed hours from readings_1h, the current hour
#: from readings_1m (what a Grafana panel over 7 days asks for)
AREA_SQL = """
WITH ids AS (SELECT id FROM sensors WHERE area_id = $1)
SELECT bucket, sensor_id, avg, min, max FROM readings_1h
 WHERE sensor_id IN (SELECT id FROM ids) AND bucket >= $2 AND bucket < date_trunc('hour', $3::timestamptz)
UNION ALL
SELECT date_trunc('hour', bucket), sensor_id, sum(avg * n) / sum(n), min(min), max(max) FROM readings_1m
 WHERE sensor_id IN (SELECT id FROM ids) AND bucket >= greatest($2, date_trunc('hour', $3::timestamptz)) AND bucket < $3
 GROUP BY 1, 2
ORDER BY 1, 2
"""

#: the whole site, one series per area, hourly, over [from, to)
SITE_SQL = """
SELECT b, area_id, sum(s) / sum(n) AS avg, min(mn) AS min, max(mx) AS max FROM (
  SELECT h.bucket AS b, h.sensor_id, h.avg * h.n AS s, h.n, h.min AS mn, h.max AS mx FROM readings_1h h
   WHERE h.bucket >= $1 AND h.bucket < date_trunc('hour', $2::timestamptz)
  UNION ALL
  SELECT date_trunc('hour', m.bucket), m.sensor_id, m.avg * m.n, m.n, m.min, m.max FROM readings_1m m
   WHERE m.bucket >= greatest($1, date_trunc('hour', $2::timestamptz)) AND m.bucket < $2
) x JOIN sensors s ON s.id = x.sensor_id
GROUP BY b, area_id ORDER BY b, area_id
"""

#: one sensor, raw readings, last hour (the drill-down panel)
RAW_SQL = "SELECT time, value FROM readings WHERE sensor_id = $1 AND time >= $2 AND time < $3 ORDER BY time"


def _ts(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


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
            async with store.pool.acquire() as conn:
                while (data := await queue.get()) is not None:
                    await conn.copy_to_table("readings", source=io.BytesIO(data), format="binary",
                                             columns=["time", "sensor_id", "value", "quality"])

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
        async with store.pool.acquire() as conn:
            await conn.execute("ANALYZE readings; ANALYZE readings_1m; ANALYZE readings_1h; ANALYZE sensors")
            n_rows = await conn.fetchval("SELECT count(*) FROM readings")
            n_1m = await conn.fetchval("SELECT count(*) FROM readings_1m")
            n_1h = await conn.fetchval("SELECT count(*) FROM readings_1h")
            out = {"rows": int(n_rows), "sensors": sensors, "days": days, "rollup_1m_rows": int(n_1m),
                   "rollup_1h_rows": int(n_1h), "generate_s": gen_s, "generate_rows_per_s": n_rows / gen_s,
                   "rollup_s": roll_s, "rollup_db_cpu_us_per_row": roll_cpu / max(1, n_rows) * 1e6,
                   "timescaledb": bool(store.timescale.get("available"))}
            # the dashboards' "to" is a little inside the data, so the current-hour branch has rows
            to = _ts(t_end - 600)
            frm = _ts(t_end - 600 - days * DAY)
            for name, sql, args in [
                ("area_7d", AREA_SQL, lambda i: (f"A{i % N_AREAS}", frm, to)),
                ("site_7d", SITE_SQL, lambda i: (frm, to)),
                ("sensor_raw_1h", RAW_SQL, lambda i: (int(sid_all[(i * 97) % sensors]), _ts(t_end - 3600 - i * 60),
                                                      _ts(t_end - i * 60))),
            ]:
                await conn.fetch(sql, *args(0))  # plan and warm once
                lat = []
                nret = 0
                for i in range(runs):
                    a = time.perf_counter()
                    r = await conn.fetch(sql, *args(i))
                    lat.append(time.perf_counter() - a)
                    nret = len(r)
                out[name] = {"p50_ms": float(np.percentile(lat, 50)) * 1e3, "p95_ms": float(np.percentile(lat, 95)) * 1e3,
                             "rows_returned": nret, "runs": runs}
        await store.close()
        return out
    finally:
        await svc.drop_db(dsn)
