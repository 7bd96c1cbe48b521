"""``plantwatch eval nab``: the Numenta Anomaly Benchmark with NAB's own scoring.

Expects the upstream layout: ``DIR/data/<category>/<name>.csv`` (``timestamp,value``) and
``DIR/labels/combined_windows.json``. Every file is streamed through the detector (one sensor
column per file, all files advanced together), the anomaly scores are swept for one
corpus-wide threshold per profile, and the normalised scores are printed beside the published
scoreboard.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from plantwatch.detectors.presets import NAB_DEFAULT
from plantwatch.detectors.scoring import nab as nabscore

from plantwatch.daemon.lab.evaluate.common import (DataFolderError, Timer, console, run_main, stream_columns, table,
                                                   write_series_csv)

#: published normalised scores (standard, reward_low_FP_rate, reward_low_FN_rate), NAB README
PUBLISHED = {
    "ARTime": (74.9, 65.2, 80.4),
    "Numenta HTM": (70.1, 63.1, 74.3),
    "CAD OSE": (69.9, 67.0, 73.2),
    "KNN CAD": (58.0, 43.4, 64.8),
    "Random Cut Forest": (51.7, 38.4, 59.8),
    "Twitter ADVec": (47.1, 33.6, 53.5),
    "Windowed Gaussian": (39.6, 20.9, 47.4),
}


@dataclass
class NabFile:
    name: str  # "<category>/<file>.csv", the key of the label files
    timestamps: np.ndarray  # datetime64[s]
    values: np.ndarray
    windows: np.ndarray  # [[L, R], ...] row indices


def read_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``timestamp,value`` CSV → (datetime64[s] array, float array)."""
    ts, vals = [], []
    with path.open(newline="") as fh:
        r = csv.reader(fh)
        next(r)
        for row in r:
            if row:
                ts.append(row[0])
                vals.append(float(row[1]))
    return np.array(ts, dtype="datetime64[s]"), np.array(vals, dtype=np.float64)


def load(data_dir: Path, labels: Path | None = None) -> list[NabFile]:
    """All labelled files of an upstream-layout NAB folder, sorted by name."""
    data_dir = Path(data_dir)
    labels = labels or data_dir / "labels" / "combined_windows.json"
    if not Path(labels).is_file():
        raise DataFolderError(f"no labels file {labels} (give the NAB folder that holds data/ and labels/)")
    windows = json.loads(Path(labels).read_text())
    files = []
    for name in sorted(windows):
        if not (data_dir / "data" / name).is_file():
            raise DataFolderError(f"{labels} labels {name}, but {data_dir / 'data' / name} is missing")
        ts, vals = read_series(data_dir / "data" / name)
        limits = [(np.datetime64(a[:19]), np.datetime64(b[:19])) for a, b in windows[name]]
        files.append(NabFile(name, ts, vals, nabscore.window_rows(ts, limits)))
    return files


def warmup_groups(files: Sequence[NabFile], config: Mapping[str, Any]) -> dict[int | None, list[NabFile]]:
    """Files by the warm-up they get: ``{None: files}`` unless the config says
    ``"warmup": "nab_probation"``, which sets the detector's ``learn`` to each file's NAB
    probationary period (15 % of its rows, at most 750: the length NAB gives every detector; the
    values are never looked ahead)."""
    mode = config.get("warmup")
    if mode is None:
        return {None: list(files)}
    if mode != "nab_probation":
        raise ValueError(f"NAB config: warmup must be 'nab_probation' or absent, got {mode!r}")
    groups: dict[int | None, list[NabFile]] = {}
    for f in files:
        groups.setdefault(nabscore.probation_length(len(f.values)), []).append(f)
    return groups


def detect(files: Sequence[NabFile], config: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Anomaly scores of every file: the detector's ``Output.score`` of each reading."""
    out: dict[str, np.ndarray] = {}
    for learn, group in warmup_groups(files, config).items():
        params = dict(config.get("params", {}))
        if learn is not None:
            params["learn"] = learn
        times = [(f.timestamps - np.datetime64(0, "s")).astype(np.float64) for f in group]
        scores, _codes = stream_columns(config["detector"], params, [f.values for f in group],
                                        times, [f.name for f in group])
        out.update({f.name: s for f, s in zip(group, scores)})
    return out


def eval_nab(data_dir: str | Path, out: str | Path | None = None, config: Mapping[str, Any] | None = None,
             *, labels: str | Path | None = None, quiet: bool = False) -> dict[str, Any]:
    """Run and score NAB; returns ``{"profiles": {name: {...}}, "seconds": ..., "config": ...}``."""
    config = dict(config or NAB_DEFAULT)
    with Timer() as t_load:
        files = load(Path(data_dir), Path(labels) if labels else None)
    with Timer() as t_run:
        scores = detect(files, config)
    with Timer() as t_score:
        res = nabscore.score_corpus(scores, {f.name: f.windows for f in files})
    result = {
        "config": config,
        "files": len(files),
        "rows": int(sum(len(f.values) for f in files)),
        "windows": int(sum(len(f.windows) for f in files)),
        "seconds": {"load": t_load.seconds, "detect": t_run.seconds, "score": t_score.seconds},
        "profiles": {
            p: {"score": r.normalised, "raw": r.raw, "threshold": r.threshold,
                "tp_windows": sum(v["detected_windows"] for v in r.per_file.values()),
                "fp_rows": sum(v["fp"] for v in r.per_file.values())}
            for p, r in res.items()
        },
        "per_file": {f: res["standard"].per_file[f] for f in scores},
    }
    if out is not None:
        th = res["standard"].threshold
        for f in files:
            s = scores[f.name]
            write_series_csv(Path(out) / "nab" / f.name, "timestamp", (str(x).replace("T", " ") for x in f.timestamps),
                             s, s >= th)
    if not quiet:
        show(result)
    return result


def show(result: Mapping[str, Any]) -> None:
    p = result["profiles"]
    cfg = result["config"]
    rows = [[f"plantwatch {cfg['detector']} (this run)", p["standard"]["score"], p["reward_low_FP_rate"]["score"],
             p["reward_low_FN_rate"]["score"]]]
    rows += [[k, *v] for k, v in PUBLISHED.items()]
    c = console()
    c.print(table(f"NAB v1.1 normalised score ({result['files']} files, {result['rows']} rows, "
                  f"{result['windows']} windows)", ["detector", "standard", "low FP", "low FN"], rows))
    detail = [[k, v["threshold"], v["raw"], v["tp_windows"], v["fp_rows"]] for k, v in p.items()]
    c.print(table("corpus threshold per profile", ["profile", "threshold", "raw score", "windows hit", "FP rows"],
                  [[r[0], f"{r[1]:.6g}", f"{r[2]:.3f}", r[3], r[4]] for r in detail]))
    if cfg["detector"] == "shape_novelty":
        c.print("detector: shape_novelty (adaptive resonance over windows of the scaled signal: a shape that "
                "resonates with no learned category is scored by how far below the learned vigilance it "
                "matched; one detection per excursion; scores ramp up over half a warm-up after it, and a new "
                "shape at a never-seen value scores in full); warm-up = each file's NAB probationary period; "
                "the threshold is NAB's corpus-wide sweep")
    elif cfg["detector"] == "range_novelty":
        c.print("detector: range_novelty (a value region the series never visited, faded by its recent novelty "
                "rate, then a rest period: one excursion, one detection); the threshold is NAB's corpus-wide sweep")
    s = result["seconds"]
    c.print(f"time: load {s['load']:.1f} s, detect {s['detect']:.1f} s, score {s['score']:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(argv, name="nab", doc=__doc__, data="NAB folder (with data/ and labels/)",
                    out="write per-file CSV (timestamp, score, alarm) here",
                    options=[("--labels", "window file (default DATA/labels/combined_windows.json)")],
                    config="JSON file {detector, params} instead of the default preset",
                    evaluate=lambda a, cfg: eval_nab(a.data, a.out, cfg, labels=a.labels))


if __name__ == "__main__":
    raise SystemExit(main())
