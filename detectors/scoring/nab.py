"""NAB v1.1 scoring, re-implemented from numenta/NAB ``nab/sweeper.py`` + ``nab/optimizer.py``.

Per file of ``n`` rows (``timestamp`` order), with labelled anomaly windows ``[L, R]`` (row indices,
both inclusive):

* the first ``min(floor(0.15 n), 750)`` rows are *probationary*: never scored;
* a detection is a row whose anomaly score is ``>= threshold``;
* a detection inside a window is worth ``A_TP * sigma(-(R - i + 1) / W) / sigma(-1)`` (W = R-L+1),
  only the best (= earliest) one per window counts; a window without detection costs ``-A_FN``;
* a detection outside windows costs ``A_FP * sigma(|i - R_prev| / (W_prev - 1))`` (negative), or
  ``-A_FP`` before the file's first window; ``sigma(x) = 2 / (1 + exp(5x)) - 1`` and -1 for x > 3;
* the threshold is ONE value for the whole corpus and profile, the one that maximises the summed
  raw score over all files (NAB sweeps every distinct anomaly score, ties go to the higher one);
* normalised score ``100 * (S - S_null) / (S_perfect - S_null)``, ``S_perfect = n_windows * A_TP``
  and ``S_null = -n_windows * A_FN`` (the null detector detects nothing).

The sweep is vectorised (one sort of all scorable rows of the corpus), so it scores a 365k-row
corpus for all thresholds in well under a second.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

PROBATION_PERCENT = 0.15


@dataclass(frozen=True)
class Profile:
    """Weights of one NAB application profile (``config/profiles.json``); A_TN is unused."""

    name: str
    tp: float
    fp: float
    fn: float
    tn: float = 1.0


PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", tp=1.0, fp=0.11, fn=2.0),
}


def scaled_sigmoid(x: np.ndarray | float) -> np.ndarray:
    """NAB's ``scaledSigmoid``: 2/(1+exp(5x)) - 1, and exactly -1 for x > 3."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        val = 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0
    return np.where(x > 3.0, -1.0, val)


def probation_length(n: int, percent: float = PROBATION_PERCENT) -> int:
    """Rows at the start of a file that are never scored (NAB caps it at 15 % of 5000 rows)."""
    return int(min(math.floor(percent * n), percent * 5000))


def window_rows(timestamps: np.ndarray, windows: Sequence[tuple[np.datetime64, np.datetime64]]) -> np.ndarray:
    """Row index ranges ``[[L, R], ...]`` (inclusive) of labelled windows given as timestamps.

    NAB requires window limits to be timestamps of the file; we take the first row at or after the
    start and the last row at or before the end, which is the same when they match exactly.
    """
    ts = np.asarray(timestamps)
    out = []
    for start, end in windows:
        lo = int(np.searchsorted(ts, np.datetime64(start), side="left"))
        hi = int(np.searchsorted(ts, np.datetime64(end), side="right")) - 1
        if hi >= lo:
            out.append((lo, hi))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


@dataclass
class FileRows:
    """Per-row scoring information of one file under one profile (from ``calcSweepScore``).

    ``weight[i]`` is the value of a detection at row i; ``window[i]`` is the window id (within the
    file) of row i or -1 outside windows; ``scorable`` is False in the probationary period.
    """

    weight: np.ndarray
    window: np.ndarray
    scorable: np.ndarray
    n_windows: int


def file_rows(n: int, windows: np.ndarray, profile: Profile) -> FileRows:
    """Weights of every row of an ``n``-row file with windows ``[[L, R], ...]`` (row indices)."""
    i = np.arange(n, dtype=np.float64)
    weight = np.full(n, -profile.fp)  # before the first window: sigma = -1
    window = np.full(n, -1, dtype=np.int64)
    max_tp = float(scaled_sigmoid(-1.0))
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 2)
    for k, (lo, hi) in enumerate(windows):
        width = float(hi - lo + 1)
        inside = slice(lo, hi + 1)
        weight[inside] = scaled_sigmoid(-(hi - i[inside] + 1) / width) * profile.tp / max_tp
        window[inside] = k
        nxt = windows[k + 1][0] if k + 1 < len(windows) else n
        after = slice(hi + 1, nxt)
        if width > 1:
            weight[after] = scaled_sigmoid(np.abs(hi - i[after]) / (width - 1)) * profile.fp
        else:  # NAB would divide by zero here; a 1-row window never occurs in the corpus
            weight[after] = -profile.fp
    scorable = np.arange(n) >= probation_length(n)
    return FileRows(weight, window, scorable, len(windows))


@dataclass
class Sweep:
    """Corpus raw score at every candidate threshold (descending thresholds)."""

    thresholds: np.ndarray
    scores: np.ndarray
    tp: np.ndarray = field(repr=False)
    fp: np.ndarray = field(repr=False)

    def best(self) -> tuple[float, float]:
        """(threshold, raw score) maximising the score; ties go to the highest threshold."""
        k = int(np.argmax(self.scores))  # first maximum = highest threshold, like NAB's stable sort
        return float(self.thresholds[k]), float(self.scores[k])

    def at(self, threshold: float) -> float:
        """Raw score when detections are the rows with anomaly score >= threshold."""
        k = int(np.searchsorted(-self.thresholds, -threshold, side="right")) - 1
        return float(self.scores[max(k, 0)])


def sweep(anomaly_scores: Sequence[np.ndarray], rows: Sequence[FileRows], profile: Profile) -> Sweep:
    """NAB's ``calcScoreByThreshold`` over a corpus: the raw score for every distinct threshold.

    Processing scorable rows in descending anomaly score, an FP row adds its (negative) weight and a
    window row raises its window's value from -A_FN to the best weight detected so far in it.
    """
    s_all, w_all, win_all = [], [], []
    offset = 0
    n_windows = 0
    for s, r in zip(anomaly_scores, rows):
        s = np.asarray(s, dtype=np.float64)
        m = r.scorable
        s_all.append(s[m])
        w_all.append(r.weight[m])
        win_all.append(np.where(r.window[m] >= 0, r.window[m] + offset, -1))
        # windows with no scorable row are not scored by NAB (none exist in the corpus)
        offset += r.n_windows
        n_windows += int(len(np.unique(r.window[m][r.window[m] >= 0])))
    s = np.concatenate(s_all) if s_all else np.zeros(0)
    w = np.concatenate(w_all) if w_all else np.zeros(0)
    win = np.concatenate(win_all) if win_all else np.zeros(0, dtype=np.int64)
    s = np.nan_to_num(s, nan=-np.inf)
    order = np.argsort(-s, kind="stable")
    s, w, win = s[order], w[order], win[order]
    is_fp = win < 0
    delta = np.where(is_fp, w, 0.0)
    # per-window running maximum in processing order; delta = improvement of the window's value
    inw = np.flatnonzero(~is_fp)
    if len(inw):
        g = win[inw]
        by_group = np.lexsort((inw, g))
        gi, pos = g[by_group], inw[by_group]
        vals = w[pos] + 4.0 * gi  # weights lie in (-1, 1]: an offset of 4 per group separates groups
        run = np.maximum.accumulate(vals) - 4.0 * gi
        first = np.r_[True, gi[1:] != gi[:-1]]
        prev = np.where(first, -profile.fn, np.r_[0.0, run[:-1]])
        run = np.maximum(run, -profile.fn)
        delta[pos] = run - prev
    total = -n_windows * profile.fn + np.cumsum(delta)
    tp_count = np.cumsum(~is_fp)
    fp_count = np.cumsum(is_fp)
    # one entry per distinct threshold: the state after the last row with that score
    last = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, dtype=bool)
    keep = np.flatnonzero(last)
    thresholds = np.r_[np.inf, s[keep]]
    scores = np.r_[-n_windows * profile.fn, total[keep]]
    return Sweep(thresholds, scores, np.r_[0, tp_count[keep]], np.r_[0, fp_count[keep]])


def score_file(anomaly_score: np.ndarray, rows: FileRows, threshold: float, profile: Profile) -> dict[str, float]:
    """Raw score and row counts of one file at a fixed threshold (NAB ``scoreDataSet``)."""
    s = np.nan_to_num(np.asarray(anomaly_score, dtype=np.float64), nan=-np.inf)
    m = rows.scorable
    det = (s >= threshold) & m
    inside = rows.window >= 0
    fp_rows = det & ~inside
    score = float(rows.weight[fp_rows].sum())
    windows_scored = np.unique(rows.window[m & inside])
    for k in windows_scored:
        hit = np.flatnonzero(det & (rows.window == k))
        score += float(rows.weight[hit[0]]) if len(hit) else -profile.fn
    return {
        "score": score,
        "tp": int((det & inside).sum()),
        "fp": int(fp_rows.sum()),
        "fn": int((~det & inside & m).sum()),
        "tn": int((~det & ~inside & m).sum()),
        "windows": int(len(windows_scored)),
        "detected_windows": int(sum(bool((det & (rows.window == k)).any()) for k in windows_scored)),
    }


def normalise(raw: float, n_windows: int, profile: Profile) -> float:
    """``100 * (raw - null) / (perfect - null)`` with the null and perfect detectors' raw scores."""
    null = -n_windows * profile.fn
    perfect = n_windows * profile.tp
    return 100.0 * (raw - null) / (perfect - null)


@dataclass
class CorpusResult:
    profile: str
    threshold: float
    raw: float
    normalised: float
    per_file: dict[str, dict[str, float]]


def score_corpus(
    anomaly_scores: Mapping[str, np.ndarray],
    windows: Mapping[str, np.ndarray],
    profiles: Iterable[str] = tuple(PROFILES),
    threshold: float | None = None,
) -> dict[str, CorpusResult]:
    """Score a corpus ``{file: anomaly scores}`` with ``{file: [[L, R], ...]}`` row windows.

    ``threshold=None`` optimises it per profile over the whole corpus, as NAB does.
    """
    names = sorted(anomaly_scores)
    out: dict[str, CorpusResult] = {}
    for pname in profiles:
        prof = PROFILES[pname]
        rows = [file_rows(len(anomaly_scores[f]), windows.get(f, np.zeros((0, 2), np.int64)), prof) for f in names]
        scores = [np.asarray(anomaly_scores[f], dtype=np.float64) for f in names]
        sw = sweep(scores, rows, prof)
        th, _ = sw.best() if threshold is None else (threshold, None)
        per_file = {f: score_file(s, r, th, prof) for f, s, r in zip(names, scores, rows)}
        raw = sum(v["score"] for v in per_file.values())
        n_win = sum(v["windows"] for v in per_file.values())
        out[pname] = CorpusResult(pname, th, raw, normalise(raw, n_win, prof), per_file)
    return out
