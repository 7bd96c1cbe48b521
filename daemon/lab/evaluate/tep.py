"""``plantwatch eval tep``: Tennessee Eastman Process (Braatz files), PCA T²/SPE fault detection.

Folder layout as upstream: ``d00.dat`` (normal training, stored transposed 52 x 500),
``d00_te.dat`` (normal test, 960 x 52), fault training sets ``dXX.dat`` (480 x 52, all rows
after the fault) and fault test sets ``dXX_te.dat`` (960 x 52, faulty from row 161). Whatever of
these is present is used: FDR per fault on ``dXX_te.dat`` rows 161-960 when present, and on all
rows of ``dXX.dat``; FAR on ``d00_te.dat`` (all rows and rows 161-960, Yin's convention) and on
rows 1-160 of the fault test sets.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from plantwatch.detectors import create
from plantwatch.detectors.increment_variance import IncrementVariance
from plantwatch.detectors.pca_control import PCAMonitor
from plantwatch.detectors.presets import TEP_DEFAULT
from plantwatch.detectors.scoring import tep as tepscore

from plantwatch.daemon.lab.evaluate.common import DataFolderError, Timer, console, run_main, sensors, table, write_series_csv

#: Yin et al. (2012) PCA FDR % (9 PCs, 17 PCs), faults 1-15, and FAR %
PUBLISHED_FDR = {1: (99.9, 100), 2: (98.8, 99.4), 3: (12.9, 10.3), 4: (100, 100), 5: (33.6, 34.8), 6: (100, 100),
                 7: (100, 100), 8: (98.0, 98.6), 9: (8.4, 9.9), 10: (60.5, 71.0), 11: (78.9, 83.0),
                 12: (99.1, 99.0), 13: (95.4, 95.8), 14: (100, 100), 15: (14.1, 17.3)}
PUBLISHED_FAR = (6.13, 6.38)


def read_dat(path: Path) -> np.ndarray:
    """A Braatz file as (samples, 52); ``d00.dat`` is stored transposed and is turned back."""
    X = np.loadtxt(path)
    return X.T if X.shape[0] < X.shape[1] else X


def monitor(config: Mapping[str, Any]) -> PCAMonitor:
    return PCAMonitor(n_components=config.get("n_components", 17), alpha=config.get("alpha", 0.99),
                      limit_scale=config.get("limit_scale", 1.0), smooth=config.get("smooth", 0.0),
                      calibrate=config.get("calibrate"))


class Variability:
    """The ``increment_variance`` detector over the monitored columns, one sensor per column:
    learns on the normal training run, then every other run starts from that learned state."""

    def __init__(self, params: Mapping[str, Any], cols: list[int]):
        self.det = create("increment_variance", params, sensors([f"v{c + 1}" for c in cols]))
        assert isinstance(self.det, IncrementVariance)
        self.idx = np.arange(len(cols), dtype=np.int64)
        self.learned: dict[str, Any] = {}

    def stream(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(score, alarm) per row: the largest column score, any column out of its band."""
        score, alarm = np.zeros(len(X)), np.zeros(len(X), dtype=bool)
        t0 = 0.0
        for r, row in enumerate(X):
            out = self.det.update(self.idx, np.full(len(self.idx), t0 + 180.0 * r), row)
            score[r], alarm[r] = out.score.max(initial=0.0), bool((out.code != 0).any())
        return score, alarm

    def fit(self, X: np.ndarray) -> "Variability":
        self.stream(X)
        self.learned = self.det.get_state()
        return self

    def run(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.det.set_state(self.learned)
        self.det.restart(self.idx)
        return self.stream(X)


def run_file(mon: PCAMonitor, X: np.ndarray, cols: list[int],
             var: Variability | None = None) -> dict[str, np.ndarray]:
    """Stream one run through the fitted monitors, row by row (their state is reset first)."""
    mon.reset()
    t2, spe = mon.score_rows(X[:, cols])
    score, alarm = mon.score(t2, spe), mon.alarm(t2, spe)
    out = {"t2": t2, "spe": spe, "pca_alarm": alarm}
    if var is not None:
        vscore, valarm = var.run(X[:, cols])
        out["variability"], out["variability_alarm"] = vscore, valarm
        score, alarm = np.maximum(score, vscore), alarm | valarm
    out["score"], out["alarm"] = score, alarm
    return out


def eval_tep(data_dir: str | Path, out: str | Path | None = None, config: Mapping[str, Any] | None = None,
             *, quiet: bool = False) -> dict[str, Any]:
    """Fit on ``d00.dat``, score every other file; returns FAR and per-fault FDR (percent)."""
    config = dict(config or TEP_DEFAULT)
    d = Path(data_dir)
    cols = list(config.get("columns", TEP_DEFAULT["columns"]))
    if not (d / "d00.dat").is_file():
        raise DataFolderError("no d00.dat (the normal training run of the Braatz files) in this folder")
    with Timer() as tm:
        train = read_dat(d / "d00.dat")[:, cols]
        mon = monitor(config).fit(train)
        var = Variability(config["variability"], cols).fit(train) if config.get("variability") else None
        runs: dict[str, dict[str, np.ndarray]] = {}
        for p in sorted(d.glob("d[0-9][0-9]*.dat")):
            if p.name != "d00.dat" and re.fullmatch(r"d\d\d(_te)?\.dat", p.name):
                runs[p.stem] = run_file(mon, read_dat(p), cols, var)
    faults: dict[int, dict[str, float]] = {}
    for name, r in runs.items():
        k = int(name[1:3])
        if k == 0:
            continue
        row = faults.setdefault(k, {})
        if name.endswith("_te"):
            row["fdr_test"] = 100 * tepscore.fdr(r["alarm"])
            row["far_test_first160"] = 100 * tepscore.far(r["alarm"][: tepscore.TEST_FAULT_START])
            row["delay_rows"] = tepscore.detection_delay(r["alarm"])
        else:
            row["fdr_train"] = 100 * tepscore.rate(r["alarm"])
    normal = runs.get("d00_te")
    result = {
        "summary": summary(faults),
        "config": config,
        "t2_limit": mon.t2_lim, "spe_limit": mon.spe_lim, "components": int(mon.P_.shape[1]),
        "far_d00_te_all": None if normal is None else 100 * tepscore.far(normal["alarm"]),
        "far_d00_te_161_960": None if normal is None else 100 * tepscore.far(normal["alarm"], 160),
        "faults": dict(sorted(faults.items())),
        "seconds": tm.seconds,
    }
    if out is not None:
        for name, r in runs.items():
            write_series_csv(Path(out) / "tep" / f"{name}.csv", "row", range(len(r["score"])), r["score"],
                             r["alarm"], {"t2": np.round(r["t2"], 4), "spe": np.round(r["spe"], 4)})
    if not quiet:
        show(result)
    return result


#: faults 1-15 except the near-undetectable 3, 9, 15 (the literature's "easy" set)
EASY = (1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14)
#: every fault of the Braatz set except 3, 9, 15
ALL_BUT_3_9_15 = tuple(k for k in range(1, 22) if k not in (3, 9, 15))


def summary(faults: Mapping[int, Mapping[str, float]]) -> dict[str, dict[str, float | None]]:
    """Mean FDR over the easy 12 and over the 18 faults, per file kind (None when files are missing)."""
    out: dict[str, dict[str, float | None]] = {}
    for key in ("fdr_test", "fdr_train"):
        row: dict[str, float | None] = {}
        for name, ks in (("easy12", EASY), ("all18", ALL_BUT_3_9_15)):
            vals = [faults[k][key] for k in ks if k in faults and key in faults[k]]
            row[name] = float(np.mean(vals)) if len(vals) == len(ks) else None
            row[name + "_min"] = float(np.min(vals)) if len(vals) == len(ks) else None
        out[key] = row
    return out


def show(result: Mapping[str, Any]) -> None:
    rows = []
    for k, v in result["faults"].items():
        pub = PUBLISHED_FDR.get(k, (None, None))
        rows.append([f"IDV({k})", v.get("fdr_test"), v.get("fdr_train"), v.get("delay_rows"), pub[0], pub[1]])
    sm = result["summary"]
    for label, key in (("mean 12", "easy12"), ("mean 18", "all18")):
        rows.append([label, sm["fdr_test"][key], sm["fdr_train"][key], None, None, None])
    c = console()
    c.print(table(f"TEP fault detection rate % (PCA {result['components']} PCs, alpha {result['config'].get('alpha')})",
                  ["fault", "FDR dXX_te 161-960", "FDR dXX.dat (480 rows)", "delay (rows)", "Yin 9 PCs",
                   "Yin 17 PCs"], rows))
    c.print(table("TEP false-alarm rate % on d00_te.dat", ["rows", "this run", "Yin 9 PCs", "Yin 17 PCs"],
                  [["1-960", result["far_d00_te_all"], None, None],
                   ["161-960", result["far_d00_te_161_960"], *PUBLISHED_FAR]]))
    if result["config"].get("variability"):
        c.print("detectors: PCA T²/SPE on EWMA-smoothed rows (mean shifts, broken correlations; faults 1-14, 17, "
                "18) or increment_variance per column (how much each signal moves: sticking/stuck valves 19, 21, "
                "random variation 10, 16, 20)")
    c.print(f"time: {result['seconds']:.2f} s")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(argv, name="tep", doc=__doc__, data="folder with d00.dat, d00_te.dat, dXX.dat, dXX_te.dat",
                    out="write per-file CSV (row, score, alarm, t2, spe) here",
                    config="JSON file overriding the default PCA settings",
                    evaluate=lambda a, cfg: eval_tep(a.data, a.out, cfg))


if __name__ == "__main__":
    raise SystemExit(main())
