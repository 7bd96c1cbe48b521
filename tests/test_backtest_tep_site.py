"""The TEP figures of ``plantwatch eval tep`` come from the code the daemon runs: d00.dat followed by
a fault run, stored in PostgreSQL and replayed by the backtest through the daemon's detector and
alarm code with the shipped site config (daemon/lab/sites/tep.yaml), raise their alarms on exactly
the rows, sensors and detectors where the runner's conditions come on."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from plantwatch.connectors.store import ReadingRows, Store
from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.lab.backtest import backtest
from plantwatch.daemon.lab.evaluate.tep import RUN_GAP_S, SAMPLE_S, SITE, Plant, braatz_column, read_dat, site_entries

RUN = "d20.dat"  # random variation: alarms of both detectors on many sensors
T0 = 1_700_000_000.0  # time of d00.dat's first sample


def runner_onsets(codes: dict[str, np.ndarray], entries) -> list[tuple[int, str, str]]:
    """(row, sensor, detector) of every condition that comes on (the state after d00.dat is normal)."""
    out = []
    for e in entries:
        c = codes[e.id] != 0
        on = c & ~np.vstack([np.zeros((1, c.shape[1]), dtype=bool), c[:-1]])
        out += [(int(r), e.members[m].id, e.id) for r, m in zip(*np.nonzero(on))]
    return sorted(out)


async def test_tep_site_config_backtest_matches_the_runner(db, datasets: Path) -> None:
    data = datasets / "tep" / "data"
    if not (data / RUN).is_file():
        pytest.skip(f"{data / RUN} not present")
    train, X = read_dat(data / "d00.dat"), read_dat(data / RUN)
    cfg = load_config_text(resources.files("plantwatch.daemon.lab").joinpath(SITE).read_text(encoding="utf-8"),
                           source=SITE)
    entries = site_entries()
    run = Plant(entries).learn(train).run(X)
    want = runner_onsets(run["codes"], entries)
    assert {d for _, _, d in want} == {"tep-pca", "tep-variability"} and len(want) > 20  # not an empty check

    store = await Store.open(db)
    try:
        ids = await store.sync_registry(cfg.site, cfg.sensors)
        both = np.vstack([train, X])
        t = T0 + SAMPLE_S * np.arange(len(both))
        t[len(train):] += RUN_GAP_S  # the run is fed a day after d00.dat, as the runner feeds it
        cols = [braatz_column(s.id) for s in cfg.sensors]
        sid = np.repeat(np.array([ids[s.id] for s in cfg.sensors], dtype=np.int32), len(both))
        await store.write(ReadingRows(sid, np.tile(t, len(cols)), both[:, cols].T.ravel(),
                                      np.zeros(len(sid), np.int16)))
        start = float(t[len(train)])  # d00.dat is the warm-up: the detectors learn on it, no alarm counts
        res = await backtest(store, {"tep": cfg}, start, float(t[-1]) + 1.0, warmup=start - T0,
                             tick_every=SAMPLE_S)
    finally:
        await store.close()
    got = sorted((int(round((a.t - start) / SAMPLE_S)), a.sensor, a.detector) for a in res.runs[0].activations)
    print(f"runner {len(want)} onsets, backtest {len(got)} alarms, readings {res.readings}")
    assert got == want
    # the runner's row alarm is on from the first of these rows in every case
    assert all(run["alarm"][r] for r, _, _ in want)
