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

from plantwatch.detectors.decide import ThresholdDecider
from plantwatch.detectors.pca_control import PCAMonitor
from plantwatch.detectors.trend_highpass import TrendHighPass, TrendHighPassParams
from plantwatch.detectors.presets import SKAB_DEFAULT
from plantwatch.detectors.scoring import skab as skabscore

from plantwatch.daemon.lab.evaluate.common import Timer, console, table, write_series_csv

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


def read_file(path: Path, root: Path, *, unlabelled: bool = False) -> SkabFile | None:
    """One experiment, or None when the file has no label columns (anomaly-free); with
    ``unlabelled`` the other way round: only files without labels, every row normal."""
    with path.open() as fh:
        header = fh.readline().strip().split(";")
    labelled = "anomaly" in header and "changepoint" in header
    if labelled == unlabelled:
        return None
    raw = np.genfromtxt(path, delimiter=";", skip_header=1, dtype=str)
    raw = np.atleast_2d(raw)
    stamps = list(raw[:, 0])
    t = (np.array(stamps, dtype="datetime64[s]") - np.datetime64(0, "s")).astype(np.float64)
    chan = [i for i, h in enumerate(header) if h not in ("datetime", "anomaly", "changepoint")]
    num = lambda i: raw[:, i].astype(np.float64)  # noqa: E731
    zeros = np.zeros(len(raw))
    return SkabFile(str(path.relative_to(root)), t, stamps, np.column_stack([num(i) for i in chan]),
                    zeros if unlabelled else num(header.index("anomaly")),
                    zeros if unlabelled else num(header.index("changepoint")))


def load(data_dir: Path, *, unlabelled: bool = False) -> list[SkabFile]:
    """Labelled experiments under ``data_dir`` (recursively), in a stable order; with
    ``unlabelled`` the anomaly-free runs instead."""
    files = []
    for p in sorted(Path(data_dir).rglob("*.csv"), key=lambda p: (str(p.parent), _num(p.stem))):
        f = read_file(p, Path(data_dir), unlabelled=unlabelled)
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
    """(score, alarm) of the test rows: fit on the first rows, warm the smoothing on them, stream.

    With ``detrend``, channels that drift over the first rows are high-passed first (see
    :mod:`plantwatch.detectors.trend_highpass`) and the model is fitted on the rows after its
    settling. The alarm is the decision stage's: on at ``alarm_on`` times the limit, off below
    ``alarm_off`` times it (default: on and off at the limit, no hysteresis).
    """
    n_train = int(config.get("train_rows", 400))
    X, start = f.X, 0
    if config.get("detrend"):
        hp = TrendHighPass(TrendHighPassParams.model_validate(config["detrend"])).fit(f.X[:n_train])
        X, start = hp.transform_rows(f.X), min(hp.params.settle, n_train - 2)
    mon = monitor(config).fit(X[start:n_train])
    mon.reset()
    mon.score_rows(X[start:n_train])
    t2, spe = mon.score_rows(X[n_train:])
    score = mon.score(t2, spe)
    return score, decide(score, float(config.get("alarm_on", 1.0)), float(config.get("alarm_off", 0.0)))


def decide(score: np.ndarray, on: float, off: float) -> np.ndarray:
    """Alarm per row from the project's threshold decider (hysteresis: on at ``on``, held down to ``off``)."""
    off = on if off <= 0 else off
    if not 0 < off <= on:
        raise ValueError(f"SKAB config: need 0 < alarm_off <= alarm_on, got on={on}, off={off}")
    d = ThresholdDecider(1, [on], clear_ratio=off / on)
    idx, out = np.zeros(1, dtype=np.int64), np.zeros(len(score), dtype=bool)
    for i, s in enumerate(score):
        out[i] = d.step(idx, np.array([float(i)]), np.array([s]), np.zeros(1))[0] != 0
    return out


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
    halves = {h: _binary_dict(skabscore.binary([y[i] for i in range(k, len(files), 2)],
                                               [p[i] for i in range(k, len(files), 2)]))
              for k, h in enumerate(("even files", "odd files")) if len(files) > 1}
    free = [f for f in load(Path(data_dir), unlabelled=True) if len(f.t) > n_train + 1]  # too short to fit: skipped
    free_alarm = [run_file(f, config)[1] for f in free]
    free_rows = sum(len(a) for a in free_alarm)
    seg_alarm = [run_file(g, config)[1] for f in free for g in segments(f, int(config.get("free_segment", 1150)))]
    seg_rows = sum(len(a) for a in seg_alarm)
    result = {
        "halves": halves,
        "anomaly_free": {"files": len(free), "rows": free_rows,
                         "far": 100 * sum(int(a.sum()) for a in free_alarm) / free_rows if free_rows else None,
                         "segments": len(seg_alarm), "segment_rows": seg_rows,
                         "segment_far": 100 * sum(int(a.sum()) for a in seg_alarm) / seg_rows if seg_rows else None},
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


def segments(f: SkabFile, length: int) -> list[SkabFile]:
    """A long normal run cut into experiment-sized pieces (each fitted on its own first rows, as
    a labelled experiment is); a last piece shorter than ``length`` is dropped."""
    return [SkabFile(f"{f.name}[{a}:{a + length}]", f.t[a:a + length], f.stamps[a:a + length], f.X[a:a + length],
                     f.anomaly[a:a + length], f.changepoint[a:a + length])
            for a in range(0, len(f.t) - length + 1, length)]


def _binary_dict(b: skabscore.Binary) -> dict[str, float]:
    return {"f1": b.f1, "far": b.far, "mar": b.mar, "tp": b.tp, "fp": b.fp, "fn": b.fn, "tn": b.tn}


def show(result: Mapping[str, Any]) -> None:
    o = result["outlier"]
    rows = [["plantwatch PCA T²/SPE (this run)", f"{o['f1']:.2f}", o["far"], o["mar"]]]
    rows += [[f"  {g}", f"{v['f1']:.2f}", v["far"], v["mar"]] for g, v in result["per_folder"].items()]
    rows += [[f"  {g}", f"{v['f1']:.2f}", v["far"], v["mar"]] for g, v in result["halves"].items()]
    af = result["anomaly_free"]
    if af["files"]:
        rows.append([f"  anomaly-free, one run ({af['rows']} rows)", "", af["far"], ""])
        rows.append([f"  anomaly-free, {af['segments']} experiment-sized runs", "", af["segment_far"], ""])
    rows += [[k, f"{v[0]:.2f}", v[1], v[2]] for k, v in PUBLISHED.items()]
    c = console()
    c.print(table(f"SKAB outlier task, pooled over {result['files']} files (test rows after the first "
                  f"{result['config'].get('train_rows', 400)})", ["detector", "F1", "FAR %", "MAR %"], rows))
    n, cc = result["changepoint_nab"], result["changepoint_counts"]
    c.print(table("SKAB changepoint task (NAB variant, 60 s windows right of each changepoint)",
                  ["profile", "NAB score", "missed CPs", "FPs", "true CPs", "mean delay s"],
                  [[k, v, cc["missed"], cc["fp"], cc["total"], cc["delay_s"]] for k, v in n.items()]))
    cfg = result["config"]
    if cfg.get("detrend"):
        c.print(f"detectors: PCA T²/SPE on EWMA-smoothed rows; channels drifting over the first rows (the loop's "
                f"temperatures) high-passed by trend_highpass; alarm on at {cfg.get('alarm_on', 1.0)} x the limit, "
                f"held down to {cfg.get('alarm_off', cfg.get('alarm_on', 1.0))} x (hysteresis)")
    c.print(f"time: {result['seconds']:.2f} s")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="plantwatch eval skab", description=__doc__.replace("``", ""))
    ap.add_argument("--data", required=True, help="SKAB data folder (valve1/, valve2/, other/, ...)")
    ap.add_argument("--out", help="write per-file CSV (datetime, score, alarm) of the test rows here")
    ap.add_argument("--config", help="JSON file overriding the default monitor settings")
    a = ap.parse_args(argv)
    cfg = json.loads(Path(a.config).read_text()) if a.config else None
    eval_skab(a.data, a.out, cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
