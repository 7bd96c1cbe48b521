"""``plantwatch eval skab``: Skoltech Anomaly Benchmark, outlier and changepoint tasks.

Any folder laid out like upstream's ``data/`` works (``valve1/``, ``valve2/``, ``other/``, ...):
every ``;``-separated CSV with ``anomaly`` and ``changepoint`` columns is a labelled experiment
(``anomaly-free/`` has no labels and is skipped). The monitor is the registered ``pca_monitor``
group detector with the params of the ``pca_monitor`` entry of a site config (default: the
shipped ``daemon/lab/sites/skab.yaml``), one fresh detector per file fed row by row as the daemon
feeds it: it learns the first ``min_rows`` rows (400, SKAB's leaderboard protocol) and the
remaining rows are scored; a row is in alarm when the detector's condition is raised. The
outlier task is scored with pooled F1 / FAR / MAR, the changepoint task (changepoints = |diff|
of the outlier prediction) with SKAB's NAB variant.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from plantwatch.detectors import create
from plantwatch.detectors.scoring import skab as skabscore

from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.lab.evaluate.common import DataFolderError, Timer, console, run_main, sensors, table, write_series_csv

#: the site config whose ``pca_monitor`` entry is the default monitor (package data)
SITE = "sites/skab.yaml"

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


def site_params(path: str | Path | None = None) -> dict[str, Any]:
    """Params of the ``pca_monitor`` entry of a site config (validated as the daemon validates
    it); default: the shipped SKAB site."""
    if path is None:
        text, source = resources.files("plantwatch.daemon.lab").joinpath(SITE).read_text(encoding="utf-8"), \
            "plantwatch/daemon/lab/" + SITE
    else:
        text, source = Path(path).read_text(encoding="utf-8"), str(path)
    entries = [d for d in load_config_text(text, source=source).detectors if d.type == "pca_monitor"]
    if len(entries) != 1:
        raise ValueError(f"{source}: need exactly one pca_monitor detector, found {len(entries)}")
    return dict(entries[0].params)


def run_file(f: SkabFile, params: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(score, alarm) of the test rows (after the first ``min_rows``): one fresh ``pca_monitor``
    over the file's channels, one ``update`` per row with every channel (the daemon's round)."""
    det = create("pca_monitor", params, sensors([f"c{i}" for i in range(f.X.shape[1])]))
    idx = np.arange(f.X.shape[1], dtype=np.int64)
    score, alarm = np.zeros(len(f.X)), np.zeros(len(f.X), dtype=bool)
    for i, row in enumerate(f.X):
        out = det.update(idx, np.full(len(idx), f.t[i]), row)
        score[i], alarm[i] = out.score[0], bool(np.any(out.code != 0))
    n_train = int(det.params.min_rows)
    return score[n_train:], alarm[n_train:]


def eval_skab(data_dir: str | Path, out: str | Path | None = None, config: Mapping[str, Any] | None = None,
              *, site: str | Path | None = None, quiet: bool = False) -> dict[str, Any]:
    """Outlier (F1/FAR/MAR) and changepoint (NAB variant) scores pooled over every labelled file.

    ``config``: ``pca_monitor`` params; default: those of the site config ``site`` (default: the
    shipped SKAB site)."""
    config = dict(config) if config is not None else site_params(site)
    n_train = int(config.get("min_rows", 200))
    with Timer() as tm:
        files = load(Path(data_dir))
        if not files:
            raise DataFolderError("no labelled SKAB experiment (a ;-separated CSV with anomaly and changepoint "
                                  "columns) in this folder or below it")
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
    seg_alarm = [run_file(g, config)[1] for f in free for g in segments(f, FREE_SEGMENT)]
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


#: rows of the experiment-sized pieces the anomaly-free run is cut into (valve1's typical length)
FREE_SEGMENT = 1150


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
                  f"{result['config'].get('min_rows', 200)})", ["detector", "F1", "FAR %", "MAR %"], rows))
    n, cc = result["changepoint_nab"], result["changepoint_counts"]
    c.print(table("SKAB changepoint task (NAB variant, 60 s windows right of each changepoint)",
                  ["profile", "NAB score", "missed CPs", "FPs", "true CPs", "mean delay s"],
                  [[k, v, cc["missed"], cc["fp"], cc["total"], cc["delay_s"]] for k, v in n.items()]))
    cfg = result["config"]
    stages = [f"members drifting over the training rows (t > {cfg['detrend_t']}: the loop's temperatures) "
              f"high-passed" if cfg.get("detrend_t") else "",
              f"rows EWMA-smoothed ({cfg['smooth']})" if cfg.get("smooth") else "",
              f"limits calibrated on the training rows (quantile {cfg['calibrate']})" if cfg.get("calibrate") else "",
              f"raised at {cfg.get('limit_scale', 1.0)} x the limit, cleared below "
              f"{cfg.get('clear_ratio', 0.8) * cfg.get('limit_scale', 1.0):.2g} x"]
    c.print("detectors: pca_monitor (T²/SPE) from the site config; " + "; ".join(x for x in stages if x))
    c.print(f"time: {result['seconds']:.2f} s")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(argv, name="skab", doc=__doc__, data="SKAB data folder (valve1/, valve2/, other/, ...)",
                    out="write per-file CSV (datetime, score, alarm) of the test rows here",
                    config="JSON file of pca_monitor params (instead of a site config's)",
                    options=[("--site", "site config whose pca_monitor entry is the monitor (default: the shipped"
                                        " daemon/lab/sites/skab.yaml)")],
                    evaluate=lambda a, cfg: eval_skab(a.data, a.out, cfg, site=a.site))


if __name__ == "__main__":
    raise SystemExit(main())
