"""SKAB scoring, re-implemented from waico/SKAB ``core/metrics.py`` (the ``tsad`` package).

* Outlier task (``metric="binary"``): TP/FP/FN/TN pooled over the test rows of all files;
  ``F1 = TP / (TP + (FP + FN) / 2)``, ``FAR = 100 FP / (FP + TN)``, ``MAR = 100 FN / (FN + TP)``.
* Changepoint task (``metric="nab"``, ``window_width="60s"``, ``anomaly_window_destination=
  "righter"``, ``intersection_mode="cut right window"``): each true changepoint t gets the window
  [t, t + 60 s]; when a window's end reaches the next one's start, the next window starts at that
  end. Predictions before the first window, strictly between windows and after the last one are
  FPs (``A_FP`` each, A_FP < 0); a window without prediction is a FN (``A_FN`` < 0); a window with
  predictions scores its first one at relative position r on SKAB's tanh curve, from A_TP at the
  window start down to A_FP at its end. Summed over files, then
  ``100 (S - S_null) / (S_perfect - S_null)`` with ``S_null = n A_FN``, ``S_perfect = n A_TP``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: (A_TP, A_FP, A_TN, A_FN) per profile, SKAB's default ``table_of_coef``
PROFILES: dict[str, tuple[float, float, float, float]] = {
    "Standard": (1.0, -0.11, 1.0, -1.0),
    "LowFP": (1.0, -0.22, 1.0, -1.0),
    "LowFN": (1.0, -0.11, 1.0, -2.0),
}
DETALIZATION = 1000


@dataclass(frozen=True)
class Binary:
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def f1(self) -> float:
        d = self.tp + (self.fn + self.fp) / 2
        return self.tp / d if d else 0.0

    @property
    def far(self) -> float:
        d = self.fp + self.tn
        return 100.0 * self.fp / d if d else 0.0

    @property
    def mar(self) -> float:
        d = self.fn + self.tp
        return 100.0 * self.fn / d if d else 0.0


def binary(true: Sequence[np.ndarray], pred: Sequence[np.ndarray]) -> Binary:
    """Pooled confusion counts of 0/1 label and prediction arrays (one pair per file)."""
    tp = fp = fn = tn = 0
    for y, p in zip(true, pred):
        y = np.asarray(y) == 1
        p = np.asarray(p) == 1
        tp += int((y & p).sum())
        fp += int((~y & p).sum())
        fn += int((y & ~p).sum())
        tn += int((~y & ~p).sum())
    return Binary(tp, fp, fn, tn)


def changepoints_from_prediction(pred: np.ndarray) -> np.ndarray:
    """Predicted changepoints from a 0/1 outlier prediction: |diff|, first row = pred[0]."""
    p = np.asarray(pred, dtype=np.int64)
    if len(p) == 0:
        return p
    return np.abs(np.diff(p, prepend=0))


def cp_windows(t: np.ndarray, cps: np.ndarray, width: float = 60.0) -> list[tuple[float, float]]:
    """Scoring windows [t_cp, t_cp + width] (seconds), the right one cut on overlap."""
    t = np.asarray(t, dtype=np.float64)
    starts = t[np.asarray(cps) == 1]
    wins = [[s, s + width] for s in starts]
    for i in range(len(wins) - 1):
        if wins[i][1] >= wins[i + 1][0]:
            wins[i + 1][0] = wins[i][1]
    return [(a, b) for a, b in wins]


def tanh_curve(a_tp: float, a_fp: float) -> np.ndarray:
    """SKAB's "improved" scoring function sampled on its 1000-point grid."""
    x = np.linspace(-np.pi / 2, np.pi / 2, DETALIZATION)
    half = (a_tp - a_fp) / 2
    return half * -np.tanh(x) / np.tanh(np.pi / 2) + half + a_fp


def nab_file(t: np.ndarray, pred_cp: np.ndarray, windows: list[tuple[float, float]]) -> np.ndarray:
    """Raw (score, null, perfect) per profile for one file: shape (3 profiles, 3)."""
    t = np.asarray(t, dtype=np.float64)
    tp_ = t[np.asarray(pred_cp) == 1]
    n_fp, n_fn, rel = 0, 0, []
    if windows:
        n_fp += int((tp_ < windows[0][0]).sum())
        for i, (a, b) in enumerate(windows):
            inside = tp_[(tp_ >= a) & (tp_ <= b)]
            if len(inside) == 0:
                n_fn += 1
            else:
                rel.append((inside[0] - a) / (b - a))
            if i + 1 < len(windows):
                n_fp += int(((tp_ > b) & (tp_ < windows[i + 1][0])).sum())
        n_fp += int((tp_ > windows[-1][1]).sum())
    else:
        n_fp = len(tp_)
    out = np.zeros((len(PROFILES), 3))
    for k, (a_tp, a_fp, _a_tn, a_fn) in enumerate(PROFILES.values()):
        y = tanh_curve(a_tp, a_fp)
        score = a_fp * n_fp + a_fn * n_fn
        score += sum(float(y[min(int(r * DETALIZATION), DETALIZATION - 1)]) for r in rel)
        out[k] = (score, len(windows) * a_fn, len(windows) * a_tp)
    return out


def nab(ts: Sequence[np.ndarray], true_cp: Sequence[np.ndarray], pred_cp: Sequence[np.ndarray],
        width: float = 60.0) -> dict[str, float]:
    """SKAB's changepoint NAB scores (per profile, rounded to 2 decimals like SKAB) over files."""
    total = np.zeros((len(PROFILES), 3))
    for t, y, p in zip(ts, true_cp, pred_cp):
        total += nab_file(t, p, cp_windows(t, y, width))
    out = {}
    for k, name in enumerate(PROFILES):
        s, null, perfect = total[k]
        out[name] = round(100 * (s - null) / (perfect - null), 2) if perfect != null else float("nan")
    return out


def cp_counts(ts: Sequence[np.ndarray], true_cp: Sequence[np.ndarray], pred_cp: Sequence[np.ndarray],
              width: float = 60.0) -> dict[str, float]:
    """SKAB's ``average_time`` companions: missed changepoints, FPs, mean delay (s), total CPs."""
    missed = fps = total = 0
    delays: list[float] = []
    for t, y, p in zip(ts, true_cp, pred_cp):
        t = np.asarray(t, dtype=np.float64)
        wins = cp_windows(t, y, width)
        pt = t[np.asarray(p) == 1]
        total += len(wins)
        if not wins:
            fps += len(pt)
            continue
        fps += int((pt < wins[0][0]).sum()) + int((pt > wins[-1][1]).sum())
        for i, (a, b) in enumerate(wins):
            inside = pt[(pt >= a) & (pt <= b)]
            if len(inside):
                delays.append(float(inside[0] - a))
            else:
                missed += 1
            if i + 1 < len(wins):
                fps += int(((pt > b) & (pt < wins[i + 1][0])).sum())
    return {"missed": missed, "fp": fps, "delay_s": float(np.mean(delays)) if delays else float("nan"), "total": total}
