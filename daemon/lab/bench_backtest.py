"""``plantwatch bench-backtest``: how fast a backtest replays stored readings.

Fills a throwaway TimescaleDB (started here) with ``--hours`` of 1 Hz readings of ``--sensors``
gas sensors, replays them through a config with the default detector set (limit, stale, robust
z-score), and prints readings per second and what that means for a month of 1 Hz data of 500
sensors. The machine's own limit is measured in the same run: the rate at which the database
hands the same rows out by binary COPY, without any detection.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from plantwatch.connectors import pgcopy
from plantwatch.connectors.rig_db import RigDb
from plantwatch.connectors.services import PostgresInstance
from plantwatch.connectors.store import Store

from plantwatch.daemon.lab.backtest import backtest
from plantwatch.daemon.config.model import load_config_text

T0 = 1_790_000_000.0
DETECTORS = """detectors:
  - {id: lim, type: limit, select: {kind: gas}, params: {high: 5, high_high: 10, deadband: 0.5, on_delay: 2}}
  - {id: st, type: stale, select: {kind: gas}, params: {timeout: 30}}
  - {id: z, type: robust_zscore, select: {kind: gas}, params: {window: 300, refresh: 30}}
"""


def site(n: int) -> str:
    sensors = "\n".join(f"  - {{id: G{i}, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: a}}" for i in range(n))
    return f"site: {{id: bench, areas: [{{id: a, collector: edge1}}]}}\nsensors:\n{sensors}\n{DETECTORS}"


async def run(sensors: int, hours: int) -> dict:
    cfg = load_config_text(site(sensors))
    async with PostgresInstance(fast=False) as pg:
        store = await Store.open(pg.dsn)
        try:
            ids = await store.sync_registry(cfg.site, cfg.sensors)
            sid_of = np.array([ids[f"G{i}"] for i in range(sensors)], dtype=np.int32)
            rng = np.random.default_rng(1)
            async with await RigDb.connect(pg.dsn) as db:
                for h in range(hours):
                    t = T0 + h * 3600 + np.repeat(np.arange(3600.0), sensors)
                    col = np.tile(np.arange(sensors), 3600)
                    v = 1.0 + 0.1 * rng.standard_normal(len(t))
                    data = pgcopy.encode([("timestamptz", t), ("int4", sid_of[col]), ("float8", v),
                                          ("int2", np.zeros(len(t), np.int16))])
                    await db.copy_readings(data)
            n = hours * 3600 * sensors
            t0 = time.perf_counter()
            for h in range(hours):
                await store.read_readings(T0 + h * 3600, T0 + (h + 1) * 3600)
            read_rate = n / (time.perf_counter() - t0)
            res = await backtest(store, {"bench": cfg}, T0 + 600, T0 + hours * 3600, warmup=600)
        finally:
            await store.close()
    month = 500 * 86400 * 30
    return {"sensors": sensors, "hours": hours, "readings": res.readings, "seconds": res.seconds,
            "readings_per_second": res.rate, "copy_out_readings_per_second": read_rate,
            "ratio_to_copy_out": res.rate / read_rate, "month_500_sensors_minutes": month / res.rate / 60}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="plantwatch bench-backtest", description=__doc__.split("\n\n")[0].replace("``", ""))
    ap.add_argument("--sensors", type=int, default=500)
    ap.add_argument("--hours", type=int, default=2)
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)
    r = asyncio.run(run(a.sensors, a.hours))
    t = Table(title=f"backtest replay: {r['sensors']} sensors x {r['hours']} h at 1 Hz, limit + stale + robust z-score")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("readings replayed (incl. warm-up)", f"{r['readings']:,}")
    t.add_row("replay rate", f"{r['readings_per_second']:,.0f} readings/s")
    t.add_row("database COPY-out rate, same rows (machine limit)", f"{r['copy_out_readings_per_second']:,.0f} readings/s")
    t.add_row("replay / COPY-out", f"{r['ratio_to_copy_out']:.2f}")
    t.add_row("a month of 1 Hz data, 500 sensors", f"{r['month_500_sensors_minutes']:.0f} min")
    Console(width=120).print(t)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
