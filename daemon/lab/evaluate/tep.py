"""``plantwatch eval tep``: Tennessee Eastman Process (Braatz files) through the registered
detectors of a site config.

Folder layout as upstream: ``d00.dat`` (normal training, stored transposed 52 x 500),
``d00_te.dat`` (normal test, 960 x 52), fault training sets ``dXX.dat`` (480 x 52, all rows
after the fault) and fault test sets ``dXX_te.dat`` (960 x 52, faulty from row 161). Whatever of
these is present is used: FDR per fault on ``dXX_te.dat`` rows 161-960 when present, and on all
rows of ``dXX.dat``; FAR on ``d00_te.dat`` (all rows and rows 161-960, Yin's convention) and on
rows 1-160 of the fault test sets.

The detectors are the ``pca_monitor`` and ``increment_variance`` entries of a site config
(default: the shipped ``daemon/lab/sites/tep.yaml``; its sensors are named ``XMEAS<k>`` and
``XMV<k>``, which gives each its Braatz column), created and fed as the daemon feeds them: one
reading of every member per row, 3 minutes apart, ``d00.dat`` first (their learning period),
then every other run from the state they reached at the end of ``d00.dat``, fed a day after it
ended: a later run of the same plant (one pass, causal; the smoothing and the variability chart
carry on, and ``increment_variance``'s ``max_gap`` takes no increment across the day). A row
is in alarm when any detector's condition is raised on it. ``--config JSON`` gives the detectors'
params as a preset instead (the form of ``plantwatch.detectors.presets.TEP_LITERATURE``,
the textbook monitor: its settings become the params of the same two registered detectors).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from plantwatch.detectors import SensorInfo, create
from plantwatch.detectors.base import Detector
from plantwatch.detectors.pca_monitor import PCAMonitor
from plantwatch.detectors.presets import TEP_COLUMNS
from plantwatch.detectors.scoring import tep as tepscore

from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.lab.evaluate.common import DataFolderError, Timer, console, run_main, sensors, table, write_series_csv

#: the site config whose detectors are the default ones (package data)
SITE = "sites/tep.yaml"
#: the detector types the runner feeds (row-scored; the others need the daemon's clock or inventory)
TYPES = ("pca_monitor", "increment_variance")
#: seconds between two samples of the Braatz runs
SAMPLE_S = 180.0
#: every other run is fed a day after d00.dat ended (another run of the plant, not its continuation)
RUN_GAP_S = 86400.0

#: Yin et al. (2012) PCA FDR % (9 PCs, 17 PCs), faults 1-15, and FAR %
PUBLISHED_FDR = {1: (99.9, 100), 2: (98.8, 99.4), 3: (12.9, 10.3), 4: (100, 100), 5: (33.6, 34.8), 6: (100, 100),
                 7: (100, 100), 8: (98.0, 98.6), 9: (8.4, 9.9), 10: (60.5, 71.0), 11: (78.9, 83.0),
                 12: (99.1, 99.0), 13: (95.4, 95.8), 14: (100, 100), 15: (14.1, 17.3)}
PUBLISHED_FAR = (6.13, 6.38)


def read_dat(path: Path) -> np.ndarray:
    """A Braatz file as (samples, 52); ``d00.dat`` is stored transposed and is turned back."""
    X = np.loadtxt(path)
    return X.T if X.shape[0] < X.shape[1] else X


def braatz_column(tag: str) -> int:
    """0-based Braatz column of a TEP tag: ``XMEAS<k>`` (k 1-41) is column k-1, ``XMV<k>`` (k 1-11)
    column 40+k."""
    m = re.fullmatch(r"(XMEAS|XMV)(\d+)", tag)
    k = int(m.group(2)) if m else 0
    if not m or not (1 <= k <= (41 if m.group(1) == "XMEAS" else 11)):
        raise ValueError(f"sensor {tag!r} is no TEP variable (XMEAS1-XMEAS41, XMV1-XMV11)")
    return k - 1 if m.group(1) == "XMEAS" else 40 + k


@dataclass(frozen=True)
class Entry:
    """One detector of the evaluation: its id, type, params, member sensors and their columns."""

    id: str
    type: str
    params: dict[str, Any]
    members: list[SensorInfo]
    cols: list[int]


def site_entries(path: str | Path | None = None) -> list[Entry]:
    """The ``pca_monitor`` and ``increment_variance`` entries of a site config (validated as the
    daemon validates it), each with the sensors it selects in config order; default: the shipped
    TEP site."""
    if path is None:
        text, source = resources.files("plantwatch.daemon.lab").joinpath(SITE).read_text(encoding="utf-8"), \
            "plantwatch/daemon/lab/" + SITE
    else:
        text, source = Path(path).read_text(encoding="utf-8"), str(path)
    cfg = load_config_text(text, source=source)
    infos = cfg.sensor_infos()
    other = sorted({d.type for d in cfg.detectors if d.enabled and d.type not in TYPES})
    if other:
        raise ValueError(f"{source}: the TEP runner feeds {' and '.join(TYPES)} only, not {', '.join(other)}")
    out = [Entry(d.id, d.type, dict(d.params), [infos[i] for i in cfg.watched(d)],
                 [braatz_column(cfg.sensors[i].id) for i in cfg.watched(d)])
           for d in cfg.detectors if d.enabled]
    if not any(e.type == "pca_monitor" for e in out):
        raise ValueError(f"{source}: need a pca_monitor detector")
    return out


#: keys of a ``--config`` preset (see ``TEP_LITERATURE``) and the ``pca_monitor`` params they set
PRESET_PCA = {"alpha": "alpha", "smooth": "smooth", "calibrate": "calibrate", "limit_scale": "limit_scale"}


def config_entries(config: Mapping[str, Any], n_train: int) -> list[Entry]:
    """Entries from a ``--config`` preset (:data:`plantwatch.detectors.presets.TEP_LITERATURE`'s
    form): ``pca_monitor`` fitted on the ``n_train`` rows of d00.dat, never refitted, a row in
    alarm while its score is at or over the limit; ``increment_variance`` with the ``variability``
    params, if given."""
    unknown = sorted(set(config) - {"monitor", "columns", "n_components", "variability", *PRESET_PCA})
    if unknown or config.get("monitor", "pca") != "pca":
        raise ValueError(f"a TEP preset has the keys monitor (pca), columns, n_components, "
                         f"{', '.join(PRESET_PCA)} and variability; not {', '.join(unknown) or config['monitor']}")
    k = float(config.get("n_components", 17))
    pca: dict[str, Any] = {"window": n_train, "min_rows": n_train, "refit_every": 0, "confirm_rows": 1,
                           "clear_rows": 1, "clear_ratio": 1.0,
                           **({"components": int(k)} if k >= 1 else {"variance": k}),
                           **{v: config[key] for key, v in PRESET_PCA.items() if config.get(key) is not None}}
    cols = [int(c) for c in config.get("columns", TEP_COLUMNS)]
    members = sensors([f"v{c + 1}" for c in cols])
    out = [Entry("pca", "pca_monitor", pca, members, cols)]
    if config.get("variability"):
        out.append(Entry("variability", "increment_variance", dict(config["variability"]), members, cols))
    return out


class Plant:
    """The detectors of one evaluation, learned on the normal run and restored before every other."""

    def __init__(self, entries: Sequence[Entry]):
        self.entries = list(entries)
        self.dets: list[Detector] = [create(e.type, e.params, e.members) for e in self.entries]
        self.learned: list[dict[str, Any]] = []
        self.t_next = self.t_learned = 0.0

    @property
    def pca(self) -> PCAMonitor:
        return next(d for d in self.dets if isinstance(d, PCAMonitor))

    def stream(self, X: np.ndarray) -> dict[str, Any]:
        """Feed the rows of a run (full 52-column Braatz rows) in order, one ``update`` per
        detector per row with every member (the daemon's round); per row: each detector's score
        and member codes, the row alarm and the PCA statistics."""
        n = len(X)
        scores = np.zeros((len(self.dets), n))
        codes = [np.zeros((n, len(e.cols)), dtype=np.int8) for e in self.entries]
        t2, spe = np.zeros(n), np.zeros(n)
        pca = self.pca
        members = [np.arange(len(e.cols), dtype=np.int64) for e in self.entries]
        for r in range(n):
            t = self.t_next + SAMPLE_S * r
            for k, (e, det, idx) in enumerate(zip(self.entries, self.dets, members)):
                out = det.update(idx, np.full(len(idx), t), X[r, e.cols])
                scores[k, r], codes[k][r] = out.score.max(initial=0.0), out.code
            t2[r], spe[r] = pca.stat[0], pca.stat[2]
        self.t_next += SAMPLE_S * n
        alarm = np.zeros(n, dtype=bool)
        for c in codes:
            alarm |= (c != 0).any(axis=1)
        return {"score": scores.max(axis=0), "alarm": alarm, "t2": t2, "spe": spe,
                "scores": {e.id: s for e, s in zip(self.entries, scores)},
                "codes": {e.id: c for e, c in zip(self.entries, codes)}}

    def learn(self, X: np.ndarray) -> "Plant":
        """The normal run: every detector learns on it; their state at its end is kept."""
        self.stream(X)
        learning = [e.id for e, d in zip(self.entries, self.dets)
                    if not (d.fitted if isinstance(d, PCAMonitor) else d.warm(np.arange(d.n)).all())]
        if learning:
            raise DataFolderError(f"d00.dat's {len(X)} rows are too few for {', '.join(learning)} to learn "
                                  f"(min_rows, learn)")
        self.learned = [d.get_state() for d in self.dets]
        self.t_learned = self.t_next
        return self

    def run(self, X: np.ndarray) -> dict[str, Any]:
        """One run from the learned state, fed ``RUN_GAP_S`` after ``d00.dat`` ended (a later run of
        the same plant; the time gap is what a daemon would see)."""
        for d, s in zip(self.dets, self.learned):
            d.set_state(s)
        self.t_next = self.t_learned + RUN_GAP_S
        return self.stream(X)


def eval_tep(data_dir: str | Path, out: str | Path | None = None, config: Mapping[str, Any] | None = None,
             *, site: str | Path | None = None, quiet: bool = False) -> dict[str, Any]:
    """Learn on ``d00.dat``, score every other file; returns FAR and per-fault FDR (percent).

    ``config``: detector params (see the module); default: the detectors of the site config
    ``site`` (default: the shipped TEP site)."""
    d = Path(data_dir)
    if not (d / "d00.dat").is_file():
        raise DataFolderError("no d00.dat (the normal training run of the Braatz files) in this folder")
    train = read_dat(d / "d00.dat")
    entries = config_entries(config, len(train)) if config is not None else site_entries(site)
    with Timer() as tm:
        plant = Plant(entries).learn(train)
        runs: dict[str, dict[str, Any]] = {}
        for p in sorted(d.glob("d[0-9][0-9]*.dat")):
            if p.name != "d00.dat" and re.fullmatch(r"d\d\d(_te)?\.dat", p.name):
                runs[p.stem] = plant.run(read_dat(p))
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
    lim = plant.pca.lim
    result = {
        "summary": summary(faults),
        "detectors": [{"id": e.id, "type": e.type, "params": e.params, "members": len(e.cols)} for e in entries],
        "t2_limit": float(lim[0]), "spe_limit": float(lim[1]), "components": int(lim[3]),
        "far_d00_te_all": None if normal is None else 100 * tepscore.far(normal["alarm"]),
        "far_d00_te_161_960": None if normal is None else 100 * tepscore.far(normal["alarm"], 160),
        "faults": dict(sorted(faults.items())),
        "runs": runs,
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
    pca = next(e for e in result["detectors"] if e["type"] == "pca_monitor")
    c = console()
    c.print(table(f"TEP fault detection rate % (PCA {result['components']} PCs, alpha {pca['params'].get('alpha', 0.99)})",
                  ["fault", "FDR dXX_te 161-960", "FDR dXX.dat (480 rows)", "delay (rows)", "Yin 9 PCs",
                   "Yin 17 PCs"], rows))
    c.print(table("TEP false-alarm rate % on d00_te.dat", ["rows", "this run", "Yin 9 PCs", "Yin 17 PCs"],
                  [["1-960", result["far_d00_te_all"], None, None],
                   ["161-960", result["far_d00_te_161_960"], *PUBLISHED_FAR]]))
    what = {"pca_monitor": "T²/SPE over the rows (mean shifts, broken correlations; faults 1-14, 17, 18)",
            "increment_variance": "per variable, how much it moves from sample to sample (sticking/stuck "
                                  "valves 19, 21, random variation 10, 16, 20)"}
    c.print("detectors (learned on d00.dat, a row alarm is either's): "
            + "; ".join(f"{e['id']} ({e['type']}, {e['members']} variables): {what[e['type']]}"
                        for e in result["detectors"]))
    c.print(f"time: {result['seconds']:.2f} s")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(argv, name="tep", doc=__doc__, data="folder with d00.dat, d00_te.dat, dXX.dat, dXX_te.dat",
                    out="write per-file CSV (row, score, alarm, t2, spe) here",
                    config="JSON preset (the form of TEP_LITERATURE: n_components, alpha, smooth, calibrate, "
                           "limit_scale, variability) instead of a site config's detectors",
                    options=[("--site", "site config whose pca_monitor and increment_variance entries are the "
                                        "detectors (default: the shipped daemon/lab/sites/tep.yaml)")],
                    evaluate=lambda a, cfg: eval_tep(a.data, a.out, cfg, site=a.site))


if __name__ == "__main__":
    raise SystemExit(main())
