"""The SKAB figures of ``plantwatch eval skab`` come from the code the daemon runs: a SKAB experiment
stored in PostgreSQL and replayed by the backtest through the daemon's detector and alarm code
with the shipped site config (daemon/lab/sites/skab.yaml) raises its alarms exactly on the rows
where the runner's alarm goes on."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from plantwatch.connectors.store import ReadingRows, Store
from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.lab.backtest import backtest
from plantwatch.daemon.lab.evaluate.skab import SITE, read_file, run_file, site_params

FILE = "valve1/13.csv"  # three separate alarms in the runner


def site_text() -> str:
    return resources.files("plantwatch.daemon.lab").joinpath(SITE).read_text(encoding="utf-8")


async def test_skab_site_config_backtest_matches_the_runner(db, datasets: Path) -> None:
    path = datasets / "skab" / "data" / FILE
    if not path.is_file():
        pytest.skip(f"{path} not present")
    f = read_file(path, path.parents[1])
    cfg = load_config_text(site_text(), source=SITE)
    params = site_params()
    n_train = int(params["min_rows"])
    score, alarm = run_file(f, params)
    onsets = np.flatnonzero(alarm & ~np.concatenate([[False], alarm[:-1]]))
    assert len(onsets) == 3  # the runner's alarms on this experiment (the check below is not empty)

    store = await Store.open(db)
    try:
        ids = await store.sync_registry(cfg.site, cfg.sensors)
        cols = [ids[s.id] for s in cfg.sensors]  # the site's sensors are the file's channels, in order
        k = len(f.t)
        sid = np.repeat(np.array(cols, dtype=np.int32), k)
        await store.write(ReadingRows(sid, np.tile(f.t, len(cols)), f.X.T.ravel(), np.zeros(len(sid), np.int16)))
        res = await backtest(store, {"skab": cfg}, float(f.t[0]), float(f.t[-1]) + 1.0, warmup=0)
    finally:
        await store.close()
    acts = sorted(a.t for a in res.runs[0].activations)
    print(f"runner onsets {len(onsets)}, backtest alarms {len(acts)}, readings {res.readings}",
          sorted({a.sensor for a in res.runs[0].activations}))
    # the same alarms, raised on the same rows
    assert acts == pytest.approx(list(f.t[n_train:][onsets]))
    assert res.runs[0].figures.total == len(onsets)
