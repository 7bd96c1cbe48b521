"""``plantwatch eval skab``: Skoltech Anomaly Benchmark, outlier and changepoint tasks.

Any folder laid out like upstream's ``data/`` works (``valve1/``, ``valve2/``, ``other/``, ...):
every ``;``-separated CSV with ``anomaly`` and ``changepoint`` columns is a labelled experiment
(``anomaly-free/`` has no labels and is skipped). Per file, as in SKAB's leaderboard protocol,
the first 400 rows fit the monitor and the remaining rows are scored, row by row. The outlier
task is scored with pooled F1 / FAR / MAR, the changepoint task (changepoints = |diff| of the
outlier prediction) with SKAB's NAB variant.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from plantwatch.detectors.pca_control import PCAMonitor
from plantwatch.detectors.presets import SKAB_DEFAULT
from plantwatch.detectors.scoring import skab as skabscore

from .common import Timer, console, table, write_series_csv

#: SKAB leaderboard, outlier task: F1, FAR %, MAR % (datasets README)
PUBLISHED = {
    "Conv-AE": (0.78, 13.6, 28.0),
    "MSET": (0.78, 39.7, 14.1),
    "PCA T²+Q": (0.76, 26.6, 24.9),
    "LSTM-AE": (0.74, None, None),
    "Isolation forest": (0.29, None, None),
}


@dataclass
class SkabFile:
    name: str
    t: np.ndarray  # seconds
    stamps: list[str]
    X: np.ndarray  # (rows, channels)
    anomaly: np.ndarray
    changepoint: np.ndarray


def read_file(path: Path, root: Path) -> SkabFile | None:
    """One experiment, or None when the file has no label columns (anomaly-free)."""
    with path.open() as fh:
        header = fh.readline().strip().split(";")
    if "anomaly" not in header or "changepoint" not in header:
        return None
    raw = np.genfromtxt(path, delimiter=";", skip_header=1, dtype=str)
    raw = np.atleast_2d(raw)
    stamps = list(raw[:, 0])
    t = (np.array(stamps, dtype="datetime64[s]") - np.datetime64(0, "s")).astype(np.float64)
    chan = [i for i, h in enumerate(header) if h not in ("datetime", "anomaly", "changepoint")]
    num = lambda i: raw[:, i].astype(np.float64)  # noqa: E731
    return SkabFile(str(path.relative_to(root)), t, stamps, np.column_stack([num(i) for i in chan]),
                    num(header.index("anomaly")), num(header.index("changepoint")))


def load(data_dir: Path) -> list[SkabFile]:
    """Labelled experiments under ``data_dir`` (recursively), in a stable order."""
    files = []
    for p in sorted(Path(data_dir).rglob("*.csv"), key=lambda p: (str(p.parent), _num(p.stem))):
        f = read_file(p, Path(data_dir))
        if f is not None:
            files.append(f)
    return files


def _num(stem: str) -> tuple[int, str]:
    return (int(stem), "") if stem.isdigit() else (1 << 30, stem)


def monitor(config: Mapping[str, Any]) -> PCAMonitor:
    return PCAMonitor(n_components=config.get("n_components", 0.95), alpha=config.get("alpha", 0.99),
                      limit_scale=config.get("limit_scale", 1.0), smooth=config.get("smooth", 0.0),
                      calibrate=config.get("calibrate"))


def run_file(f: SkabFile, config: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(score, alarm) of the test rows: fit on the first rows, warm the smoothing on them, stream."""
    n_train = int(config.get("train_rows", 400))
    mon = monitor(config).fit(f.X[:n_train])
    mon.reset()
    mon.score_rows(f.X[:n_train])
    t2, spe = mon.score_rows(f.X[n_train:])
    return mon.score(t2, spe), mon.alarm(t2, spe)


def eval_skab(data_dir: str | Path, out: str | Path | None = None, config: Mapping[str, Any] | None = None,
              *, quiet: bool = False) -> dict[str, Any]:
    """Outlier (F1/FAR/MAR) and changepoint (NAB variant) scores pooled over every labelled file."""
    config = dict(config or SKAB_DEFAULT)
    n_train = int(config.get("train_rows", 400))
    with Timer() as tm:
        files = load(Path(data_dir))
        preds = {f.name: run_file(f, config) for f in files}
    y = [f.anomaly[n_train:] for f in files]
    p = [preds[f.name][1].astype(int) for f in files]
    b = skabscore.binary(y, p)
    ts = [f.t[n_train:] for f in files]
    cps = [f.changepoint[n_train:] for f in files]
    pcp = [skabscore.changepoints_from_prediction(x) for x in p]
    groups: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        groups.setdefault(str(Path(f.name).parent), []).append(i)
    per_group = {g: _binary_dict(skabscore.binary([y[i] for i in ix], [p[i] for i in ix])) for g, ix in groups.items()}
    result = {
        "config": config,
        "files": len(files),
        "outlier": _binary_dict(b),
        "per_folder": per_group,
        "changepoint_nab": skabscore.nab(ts, cps, pcp),
        "changepoint_counts": skabscore.cp_counts(ts, cps, pcp),
        "seconds": tm.seconds,
    }
    if out is not None:
        for f in files:
            s, a = preds[f.name]
            write_series_csv(Path(out) / "skab" / f.name, "datetime", f.stamps[n_train:], s, a)
    if not quiet:
        show(result)
    return result


def _binary_dict(b: skabscore.Binary) -> dict[str, float]:
    return {"f1": b.f1, "far": b.far, "mar": b.mar, "tp": b.tp, "fp": b.fp, "fn": b.fn, "tn": b.tn}


def show(result: Mapping[str, Any]) -> None:
    o = result["outlier"]
    rows = [["plantwatch PCA T²/SPE (this run)", f"{o['f1']:.2f}", o["far"], o["mar"]]]
    rows += [[f"  {g}", f"{v['f1']:.2f}", v["far"], v["mar"]] for g, v in result["per_folder"].items()]
    rows += [[k, f"{v[0]:.2f}", v[1], v[2]] for k, v in PUBLISHED.items()]
    c = console()
    c.print(table(f"SKAB outlier task, pooled over {result['files']} files (test rows after the first "
                  f"{result['config'].get('train_rows', 400)})", ["detector", "F1", "FAR %", "MAR %"], rows))
    n, cc = result["changepoint_nab"], result["changepoint_counts"]
    c.print(table("SKAB changepoint task (NAB variant, 60 s windows right of each changepoint)",
                  ["profile", "NAB score", "missed CPs", "FPs", "true CPs", "mean delay s"],
                  [[k, v, cc["missed"], cc["fp"], cc["total"], cc["delay_s"]] for k, v in n.items()]))
    c.print(f"time: {result['seconds']:.2f} s")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="plantwatch eval skab", description=__doc__)
    ap.add_argument("--data", required=True, help="SKAB data folder (valve1/, valve2/, other/, ...)")
    ap.add_argument("--out", help="write per-file CSV (datetime, score, alarm) of the test rows here")
    ap.add_argument("--config", help="JSON file overriding the default monitor settings")
    a = ap.parse_args(argv)
    cfg = json.loads(Path(a.config).read_text()) if a.config else None
    eval_skab(a.data, a.out, cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
