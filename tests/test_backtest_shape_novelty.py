"""shape_novelty's decision stages (``settle``, ``extreme``) are config a safety engineer can
back-test: the same stored readings replayed through the daemon's detector code with the stages
off and on (docs/detectors.md)."""
from __future__ import annotations

import numpy as np

from plantwatch.connectors.store import ReadingRows, Store
from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.lab.backtest import backtest

from .helpers import site_config

T0 = 1_790_000_000.0
SHAPES = ("detectors:\n  - {{id: shapes, type: shape_novelty, select: {{kind: gas}}, "
          "params: {{learn: 200, threshold: 0.4{extra}}}}}\n")


def cfg(extra: str):
    return load_config_text(site_config(n_gas=3, detectors=SHAPES.format(extra=extra)))


async def _fill(dsn: str) -> None:
    c = cfg("")
    store = await Store.open(dsn)
    try:
        ids = await store.sync_registry(c.site, c.sensors)
        t = np.arange(3600.0)
        x = np.tile(10 + 5 * np.sin(t / 5.0), (3, 1))
        x[1, 230:250] = 14.0  # G1: a plateau inside the known range 30 s after the warm-up
        x[2, 2000:2003] = 60.0  # G2: a jump to a value never seen, much later
        sid = np.repeat(np.array([ids[f"G{i}"] for i in range(3)], dtype=np.int32), len(t))
        await store.write(ReadingRows(sid, np.tile(T0 + t, 3), x.ravel(), np.zeros(3 * len(t), np.int16)))
    finally:
        await store.close()


async def test_settle_and_extreme_show_in_a_backtest(db):
    await _fill(db)
    store = await Store.open(db)
    try:
        res = await backtest(store, {"stages off": cfg(", settle: 0, extreme: 0"), "default": cfg("")},
                             T0, T0 + 3600, warmup=0)
    finally:
        await store.close()
    off, on = res.runs
    print({r.name: (r.figures.total, r.figures.top10) for r in res.runs})
    # stages off: the plateau right after the warm-up is five alarms, the jump one
    assert off.figures.total == 6 and dict(off.figures.top10) == {"G1": 5, "G2": 1}
    # settle: the plateau's detections are weighed down while the memory settles (one is left);
    # extreme: the jump to a never-seen value keeps its alarm
    assert on.figures.total == 2 and dict(on.figures.top10) == {"G1": 1, "G2": 1}
