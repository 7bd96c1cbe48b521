"""TEP check of the group detectors (not a pytest test: it needs the shared data set).

Usage (from the repository root)::

    .venv/bin/python tests/data_checks/tep_group.py [--data ../shared/datasets/tep/data]
        [--vars 33|52] [--components N | --variance F] [--refit-every N] [--detector pca_monitor|pyod_group]

Streams the Braatz TEP files through a group detector exactly as the daemon would (one call per
sample, 3 min apart): ``d00.dat`` (normal training, stored transposed) is learned, the state is
saved, then every other file is replayed from that saved state through ``update``. Reports per
file the fraction of rows flagged, raw (score over the 99 % limit, per sample, as the literature
counts) and at the decision level (condition in force, with confirm/clear rows).

* ``d00_te.dat``: false-alarm rate (all 960 rows; also rows 161-960 as Yin et al.).
* ``dNN.dat`` (480 rows, all after the fault): detection rate.
* ``dNN_te.dat`` if present (fault from row 161): detection rate on rows 161-960 and
  false-alarm rate on rows 1-160.
"""
from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

from plantwatch.detectors import SensorInfo, create

DT = 180.0  # 3 min per sample


def default_data() -> Path:
    """``../shared/datasets/tep/data`` from the repository root (or from the nearest ancestor)."""
    root = Path(__file__).resolve().parents[2]
    for d in [root, *root.parents]:
        cand = d.parent / "shared/datasets/tep/data"
        if cand.is_dir():
            return cand
    return root.parent / "shared/datasets/tep/data"


def load(path: Path) -> np.ndarray:
    a = np.loadtxt(path)
    if path.name == "d00.dat" and a.shape[0] == 52:
        a = a.T  # stored transposed upstream
    return a


def run(det, X: np.ndarray, t0: float):
    n = X.shape[1]
    idx = np.arange(n)
    raw = np.zeros(len(X), dtype=bool)
    dec = np.zeros(len(X), dtype=bool)
    for i, row in enumerate(X):
        det.update(idx, np.full(n, t0 + i * DT), row)
        raw[i] = det.last_score[0] >= 1.0
        dec[i] = det.decider.code[0] != 0
    return raw, dec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(default_data()))
    ap.add_argument("--detector", default="pca_monitor")
    ap.add_argument("--vars", type=int, choices=(33, 52), default=33)
    ap.add_argument("--components", type=int, default=None)
    ap.add_argument("--variance", type=float, default=0.9)
    ap.add_argument("--refit-every", type=int, default=0)
    ap.add_argument("--confirm-rows", type=int, default=3)
    ap.add_argument("--clear-rows", type=int, default=2)
    ap.add_argument("--model", default="ECOD")
    a = ap.parse_args(argv)
    data = Path(a.data)
    if not (data / "d00.dat").exists():
        print(f"no TEP data at {data}", file=sys.stderr)
        return 2
    cols = list(range(22)) + list(range(41, 52)) if a.vars == 33 else list(range(52))
    sensors = [SensorInfo(id=f"v{c + 1}", kind="flow", unit="", range_min=-1e9, range_max=1e9, area="tep")
               for c in cols]
    params = {"window": 2000, "min_rows": 500, "refit_every": a.refit_every,
              "confirm_rows": a.confirm_rows, "clear_rows": a.clear_rows}
    if a.detector == "pca_monitor":
        params |= {"components": a.components} if a.components else {"variance": a.variance}
    else:
        params |= {"model": a.model, "window": 1000}
    det = create(a.detector, params, sensors)
    train = load(data / "d00.dat")[:, cols]
    n = len(cols)
    for i, row in enumerate(train):
        det.learn_many(np.arange(n), np.full(n, i * DT), row)
    t0 = len(train) * DT + 3600
    snap = pickle.dumps(det.get_state())
    extra = ""
    if a.detector == "pca_monitor":
        extra = f", {int(det.lim[3])} PCs, T2 lim {det.lim[0]:.2f}, SPE lim {det.lim[1]:.2f}"
    print(f"{a.detector} {params} on {n} variables{extra}")
    print(f"{'file':<12}{'rows':>6}{'raw %':>8}{'decided %':>11}")
    files = sorted(p for p in data.glob("d*.dat") if p.name != "d00.dat")
    far = {}
    fdr = {}
    for p in files:
        X = load(p)[:, cols]
        det.set_state(pickle.loads(snap))
        raw, dec = run(det, X, t0)
        name = p.name
        if name == "d00_te.dat":
            far["all"] = (raw.mean(), dec.mean())
            far["161-960"] = (raw[160:].mean(), dec[160:].mean())
            print(f"{name:<12}{len(X):>6}{100 * raw.mean():>8.1f}{100 * dec.mean():>11.1f}   (false alarms; "
                  f"rows 161-960: {100 * raw[160:].mean():.1f} / {100 * dec[160:].mean():.1f})")
        elif name.endswith("_te.dat"):
            fdr[name] = (raw[160:].mean(), dec[160:].mean())
            print(f"{name:<12}{800:>6}{100 * raw[160:].mean():>8.1f}{100 * dec[160:].mean():>11.1f}   "
                  f"(rows 1-160 false alarms {100 * raw[:160].mean():.1f} / {100 * dec[:160].mean():.1f})")
        else:
            fdr[name] = (raw.mean(), dec.mean())
            print(f"{name:<12}{len(X):>6}{100 * raw.mean():>8.1f}{100 * dec.mean():>11.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
