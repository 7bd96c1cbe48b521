"""Rolling z-score with HTM-style anomaly likelihood and a rest period (a NAB-style scorer).

Three stages per reading, vectorised across sensors:

1. **Surprise**: ``z = |x - median| / (1.4826 MAD)`` against the last ``window`` readings that were
   not flagged (the baseline is protected from incidents, as in the other detectors); ``z`` is
   capped at ``z_cap`` and scaled to a raw score ``a`` in [0, 1].
2. **Likelihood** (Numenta's ``AnomalyLikelihood``, Ahmad et al. 2017): the mean of the last
   ``short`` raw scores is compared with the mean and standard deviation of the raw scores of the
   last ``history`` readings; the Gaussian tail probability ``q`` of that short mean becomes the
   score ``log(q + 1e-10) / log(1e-10)`` in [0, 1] (1 = a one-in-10^10 excursion). This turns
   "large for this sensor" into "unusual for this sensor": a noisy sensor needs a larger jump.
3. **Rest period** (as in CAD OSE): after a score reaches ``rest_threshold``, the sensor's next
   ``rest`` scores are reported as 0, so one incident gives one alarm instead of a burst.

Stages 2-3 track every reading, flagged or not (they describe the score stream, not the
process), so :meth:`update` is overridden to keep their state current; only the baseline of
stage 1 skips flagged readings.
"""
from __future__ import annotations

import math

import numpy as np
from pydantic import Field
from scipy.special import log_ndtr  # scipy ships with scikit-learn, a pyod dependency

from .base import Detector, DetectorParams, Output
from .decide import Decider, ThresholdDecider
from .registry import register

MAD_TO_SIGMA = 1.4826
LOG_EPS = math.log(1e-10)


class LikelihoodZParams(DetectorParams):
    window: int = Field(300, ge=10, le=100_000, description="readings in the median/MAD baseline")
    refresh: int = Field(5, ge=1, le=10_000, description="recompute median/MAD every this many readings")
    z_cap: float = Field(10.0, gt=0, description="z-scores above this count as this (raw score 1)")
    min_scale: float = Field(1e-3, gt=0, description="floor of the robust sigma, as a fraction of |median| (+1e-9)")
    history: int = Field(1000, ge=20, le=100_000, description="raw scores in the likelihood's reference distribution")
    short: int = Field(5, ge=1, le=1000, description="raw scores averaged for the likelihood")
    rest: int = Field(60, ge=0, le=100_000, description="readings muted after a score reaches rest_threshold")
    rest_threshold: float = Field(0.5, gt=0, le=1, description="score that starts a rest period")
    threshold: float = Field(0.5, gt=0, le=1, description="score at which the anomaly condition starts")
    clear_ratio: float = Field(1.0, gt=0, le=1, description="condition clears below threshold * clear_ratio")
    on_delay: float = Field(0.0, ge=0, le=3600)
    off_delay: float = Field(0.0, ge=0, le=3600)


@register
class LikelihoodZScore(Detector):
    name = "likelihood_zscore"
    Params = LikelihoodZParams
    CONDITIONS = ("normal", "anomaly")
    SEVERITY = {"anomaly": "medium"}

    def __init__(self, params: LikelihoodZParams, sensors):
        super().__init__(params, sensors)
        p = params
        self.warmup = max(10, p.window // 3)
        self.buf = np.full((self.n, p.window), np.nan)
        self.pos = np.zeros(self.n, dtype=np.int64)
        self.med = np.full(self.n, np.nan)
        self.scale = np.full(self.n, np.nan)
        self.abuf = np.zeros((self.n, p.history))  # raw-score history (ring)
        self.apos = np.zeros(self.n, dtype=np.int64)  # raw scores recorded
        self.asum = np.zeros(self.n)
        self.asq = np.zeros(self.n)
        self.last_fire = np.full(self.n, -(10**12), dtype=np.int64)  # reading number of the last alarm-level score
        self.count = np.zeros(self.n, dtype=np.int64)  # readings seen (flagged or not)

    def make_decider(self) -> Decider:
        p: LikelihoodZParams = self.params
        return ThresholdDecider(self.n, [p.threshold], clear_ratio=p.clear_ratio, on_delay=p.on_delay,
                                off_delay=p.off_delay)

    def _state_arrays(self):
        return {"buf": self.buf, "pos": self.pos, "med": self.med, "scale": self.scale, "abuf": self.abuf,
                "apos": self.apos, "asum": self.asum, "asq": self.asq, "last_fire": self.last_fire,
                "count": self.count}

    # --- stages --------------------------------------------------------------------------------
    def _raw(self, idx: np.ndarray, x: np.ndarray) -> np.ndarray:
        p: LikelihoodZParams = self.params
        z = np.abs(x - self.med[idx]) / self.scale[idx]
        z = np.where(np.isfinite(z), z, 0.0)
        return np.minimum(z, p.z_cap) / p.z_cap

    def _likelihood(self, idx: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Unmuted score in [0, 1] of raw scores ``a`` given each sensor's raw-score history."""
        p: LikelihoodZParams = self.params
        h = p.history
        m = np.minimum(self.apos[idx], h).astype(np.float64)
        mean = np.where(m > 0, self.asum[idx] / np.maximum(m, 1), 0.0)
        var = np.where(m > 1, self.asq[idx] / np.maximum(m, 1) - mean * mean, 0.0)
        std = np.sqrt(np.maximum(var, 0.0)) + 1e-4  # keeps a flat history from dividing by zero
        k = p.short - 1
        recent = np.zeros(len(idx))
        if k:
            cols = (self.apos[idx, None] - 1 - np.arange(k)[None, :]) % h
            recent = self.abuf[idx[:, None], cols].sum(axis=1)
        short = (recent + a) / p.short
        log_q = log_ndtr(-(short - mean) / std)  # log of the Gaussian upper tail, accurate far out
        score = np.logaddexp(log_q, LOG_EPS) / LOG_EPS
        return np.where(m >= min(h, 20), np.clip(score, 0.0, 1.0), 0.0)

    def _muted(self, idx: np.ndarray) -> np.ndarray:
        return (self.count[idx] - self.last_fire[idx]) <= self.params.rest

    # --- protocol ------------------------------------------------------------------------------
    def score_many(self, idx, t, x):
        a = self._raw(idx, x)
        s = self._likelihood(idx, a)
        return np.where(self._muted(idx), 0.0, s)

    def update(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> Output:
        """Score and decide as :meth:`Detector.update`; the score stream's state sees every reading."""
        a = self._raw(idx, x)
        a = np.where(self.warm(idx), a, 0.0)
        s = self._likelihood(idx, a)
        score = np.where(self._muted(idx) | ~self.warm(idx), 0.0, s)
        code = self.decider.step(idx, t, score, x)
        self._observe(idx, a, score)
        calm = code == 0
        if calm.any():
            self.learn_many(idx[calm], t[calm], x[calm])
        return Output(idx, t, score, code)

    def _observe(self, idx: np.ndarray, a: np.ndarray, score: np.ndarray) -> None:
        p: LikelihoodZParams = self.params
        self.count[idx] += 1
        fire = score >= p.rest_threshold
        if fire.any():
            self.last_fire[idx[fire]] = self.count[idx[fire]]
        col = self.apos[idx] % p.history
        old = np.where(self.apos[idx] >= p.history, self.abuf[idx, col], 0.0)
        self.abuf[idx, col] = a
        self.asum[idx] += a - old
        self.asq[idx] += a * a - old * old
        self.apos[idx] += 1

    def learn_many(self, idx, t, x):
        super().learn_many(idx, t, x)
        p: LikelihoodZParams = self.params
        w = p.window
        self.buf[idx, self.pos[idx] % w] = x
        self.pos[idx] += 1
        due = idx[(self.pos[idx] % p.refresh == 0) | (self.pos[idx] <= self.warmup)]
        if len(due):
            rows = self.buf[due]
            med = _nanmedian_rows(rows)
            mad = _nanmedian_rows(np.abs(rows - med[:, None]))
            self.med[due] = med
            floor = p.min_scale * (np.abs(med) + 1e-9)
            self.scale[due] = np.maximum(MAD_TO_SIGMA * mad, floor)


def _nanmedian_rows(rows: np.ndarray) -> np.ndarray:
    """Median of each row ignoring NaN (np.nanmedian is slow on many small rows)."""
    srt = np.sort(rows, axis=1)  # NaN sort last
    n = np.maximum((~np.isnan(rows)).sum(axis=1), 1)
    r = np.arange(len(rows))
    return 0.5 * (srt[r, (n - 1) // 2] + srt[r, n // 2])
