"""Backtesting replays stored readings through two configs with the daemon's own detector code."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from plantwatch.connectors.store import ReadingRows, Store
from plantwatch.daemon.alarms.stats import Activation, figures
from plantwatch.daemon.lab.backtest import backtest
from plantwatch.daemon.config.model import load_config_text

from .helpers import site_config

T0 = 1_790_000_000.0  # a whole hour
LIMIT = "detectors:\n  - {{id: lim, type: limit, select: {{kind: gas}}, params: {{high: {high}, on_delay: 5}}}}\n"


def cfg(high: float, dsn: str | None = None):
    return load_config_text(site_config(n_gas=20, dsn=dsn, detectors=LIMIT.format(high=high)))


async def _fill(dsn: str) -> None:
    c = cfg(5)
    store = await Store.open(dsn)
    try:
        ids = await store.sync_registry(c.site, c.sensors)
        hours = 3
        t = T0 + np.repeat(np.arange(hours * 3600.0), 20)
        col = np.tile(np.arange(20), hours * 3600)
        v = 1.0 + 0.1 * np.sin(t / 60.0 + col)
        # labelled incident: G3 at 8 ppm for two minutes, 2 h in; G7 spikes to 6 ppm every 5 minutes for 10 s
        v[(col == 3) & (t >= T0 + 7200) & (t < T0 + 7320)] = 8.0
        v[(col == 7) & ((t - T0) % 300 < 10)] = 6.0
        sid = np.array([ids[f"G{i}"] for i in range(20)], dtype=np.int32)[col]
        await store.write(ReadingRows(sid, t, v, np.zeros(len(t), np.int16)))
        await store.record_config("active", site_config(n_gas=20, detectors=LIMIT.format(high=7)))
    finally:
        await store.close()


LABELS = [{"id": "leak-G3", "kind": "leak", "start": T0 + 7200, "end": T0 + 7320, "settle": 30, "sensors": ["G3"]}]


async def test_backtest_compares_configs(db):
    await _fill(db)
    store = await Store.open(db)
    try:
        res = await backtest(store, {"tight": cfg(5), "loose": cfg(7)}, T0 + 3600, T0 + 3 * 3600, labels=LABELS,
                             warmup=3600)
    finally:
        await store.close()
    assert res.readings == 3 * 3600 * 20  # warm-up hour included
    tight, loose = res.runs
    # tight: G7 alarms on each 10-s spike (on-delay 5 s) every 5 minutes over 2 h = 24, plus G3
    assert tight.figures.total == 25 and tight.figures.top10[0] == ("G7", 24)
    assert loose.figures.total == 1
    assert tight.labels[0].detected and loose.labels[0].detected
    assert tight.labels[0].delay == 5.0  # on-delay
    assert tight.figures.by_area == {"area1": 25}
    assert loose.figures.within_eemua and tight.figures.per_10min_max == 3


async def test_backtest_cli_uses_active_config_from_database(db, tmp_path):
    await _fill(db)
    cand = tmp_path / "candidate.yaml"
    cand.write_text(site_config(n_gas=20, dsn=db, detectors=LIMIT.format(high=9)))
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(LABELS))
    out = tmp_path / "bt.json"
    p = subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", "backtest", "--config", str(cand),
                        "--from", "2026-09-21T14:13:20Z", "--to", str(T0 + 3 * 3600), "--labels", str(labels),
                        "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    data = json.loads(out.read_text())
    assert data["configs"]["candidate"]["alarms"] == 0  # 9 ppm: G3's 8 ppm leak is missed
    assert data["configs"]["candidate"]["labels"][0]["detected"] is False
    assert data["configs"]["active"]["alarms"] == 1 and data["configs"]["active"]["labels"][0]["detected"]
    assert "readings/s" in p.stdout and "missed" in p.stdout


def test_figures_flood_and_chatter():
    acts = [Activation(T0 + i, "S1", "a", "d", "high") for i in range(12)]  # 12 in one minute
    acts += [Activation(T0 + 3000 + 100 * i, f"S{i}", "b", "d", "low") for i in range(3)]
    f = figures(acts, T0, T0 + 3600)
    assert f.total == 15 and f.per_10min_max == 12 and f.flood_percent == pytest.approx(100 / 6)
    assert f.chattering == [("S1", "d", 12)]
    assert not f.within_eemua and f.by_area == {"a": 12, "b": 3}


async def test_backtest_benchmark_runs_and_accounts_for_every_reading():
    from plantwatch.daemon.lab.bench_backtest import run

    r = await run(sensors=20, hours=1)
    assert r["readings"] == 20 * 3600
    assert r["readings_per_second"] > 0 and r["copy_out_readings_per_second"] > 0
