"""Robust rolling z-score: distance from the median of recent readings in MADs.

``z = |x - median(window)| / (1.4826 * MAD(window))``, with the window holding the last
``window`` readings *before* the scored one (causal). The median and MAD are recomputed every
``refresh`` readings per sensor rather than at every reading: the baseline moves slowly, and this
keeps the cost per reading at a few array operations (vectorised across sensors).

``min_scale`` floors the MAD so that a sensor that is perfectly flat does not turn its first
small wiggle into an enormous score (it is in the sensor's units).
"""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from .base import Detector, debounce
from .decide import Decider, ThresholdDecider
from .registry import register

MAD_TO_SIGMA = 1.4826
_BLOCK = 2048  # sensors per block when refreshing baselines


class RobustZParams(debounce(clear_ratio=0.7)):
    window: int = Field(300, ge=10, le=100_000, description="readings in the rolling baseline")
    refresh: int = Field(30, ge=1, le=10_000, description="recompute median/MAD every this many readings")
    threshold: float = Field(6.0, gt=0, description="|z| at which the anomaly condition starts")
    high_threshold: float | None = Field(None, gt=0, description="|z| for the severe condition (optional)")
    min_scale: float = Field(1e-6, gt=0, description="floor of the robust sigma, in sensor units")

    @model_validator(mode="after")
    def _check(self):
        if self.refresh > self.window:
            raise ValueError(f"refresh ({self.refresh}) must not exceed window ({self.window})")
        if self.high_threshold is not None and self.high_threshold <= self.threshold:
            raise ValueError("high_threshold must be above threshold")
        return self


@register
class RobustZScore(Detector):
    name = "robust_zscore"
    Params = RobustZParams
    CONDITIONS = ("normal", "anomaly", "severe_anomaly")
    SEVERITY = {"anomaly": "medium", "severe_anomaly": "high"}

    def __init__(self, params: RobustZParams, sensors):
        super().__init__(params, sensors)
        self.warmup = max(10, params.window // 3)
        self.buf = np.full((self.n, params.window), np.nan)
        self.pos = np.zeros(self.n, dtype=np.int64)
        self.med = np.full(self.n, np.nan)
        self.scale = np.full(self.n, np.nan)

    @classmethod
    def example_params(cls):
        return {"window": 30, "refresh": 5, "threshold": 4.0, "high_threshold": 8.0}

    def make_decider(self) -> Decider:
        p: RobustZParams = self.params
        th = [p.threshold] + ([p.high_threshold] if p.high_threshold else [])
        return ThresholdDecider(self.n, th, clear_ratio=p.clear_ratio, on_delay=p.on_delay, off_delay=p.off_delay)

    def _state_arrays(self):
        return {"buf": self.buf, "pos": self.pos, "med": self.med, "scale": self.scale}

    def score_many(self, idx, t, x):
        return np.abs(x - self.med[idx]) / self.scale[idx]

    def learn_many(self, idx, t, x):
        super().learn_many(idx, t, x)
        w = self.params.window
        self.buf[idx, self.pos[idx] % w] = x
        self.pos[idx] += 1
        # Scores count only once a sensor is warm (``seen >= warmup``), so during warm-up the
        # baseline is needed only at the last warm-up reading, not at every one of them.
        pos = self.pos[idx]
        due = idx[((pos % self.params.refresh == 0) & (pos >= self.warmup)) | (pos == self.warmup)]
        # Sensors reporting at the same rate all come due in the same round: work through them in
        # blocks so the temporary copies stay small (50,000 sensors x 300 readings would be
        # ~120 MB per copy, three copies at once).
        for i in range(0, len(due), _BLOCK):
            d = due[i:i + _BLOCK]
            rows = self.buf[d]
            med = _row_nanmedian(rows)
            mad = _row_nanmedian(np.abs(rows - med[:, None]))
            self.med[d] = med
            self.scale[d] = np.maximum(MAD_TO_SIGMA * mad, self.params.min_scale)


def _row_nanmedian(rows: np.ndarray) -> np.ndarray:
    """``np.nanmedian(rows, axis=1)`` without its masked-array slow path (same values)."""
    nan = np.isnan(rows)
    if not nan.any():
        return np.median(rows, axis=1)
    cnt = rows.shape[1] - nan.sum(axis=1)
    med = np.full(len(rows), np.nan)
    # Rows refreshed together have mostly the same fill (sensors report at the same rate): one
    # partition per distinct count instead of a full sort (NaNs partition to the end).
    for c in np.unique(cnt):
        if c == 0:
            continue
        g = np.flatnonzero(cnt == c)
        lo, hi = (c - 1) // 2, c // 2
        part = np.partition(rows[g], [lo, hi] if lo != hi else lo, axis=1)
        med[g] = (part[:, lo] + part[:, hi]) / 2
    return med
