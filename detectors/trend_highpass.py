"""Trend high-pass: take the slow drift out of channels that drift while the model learns.

A test bed or a plant warms up, an ambient temperature follows the day: some channels wander
through values the short normal window never showed, while nothing is wrong. A model fitted on
that window (PCA T²/SPE, a range) then calls the whole rest of the run abnormal: on SKAB the
loop's two temperature channels fall for the whole experiment, and were the main source of
false alarms before and after each fault.

Which channels drift is decided from the normal window only: the least-squares slope of each
channel over the window, divided by its standard error, is the trend's t statistic; channels
beyond ``min_trend_t`` are *drifting*. Those channels are replaced, reading by reading, by their
deviation from a slow EWMA baseline ``b = beta * b + (1 - beta) * x`` (started at the first
reading; ``1 / (1 - beta)`` readings of memory), i.e. a causal high-pass filter; the others pass
unchanged. A fault that shifts a drifting channel quickly still shows for about the baseline's
memory; a slow, steady drift does not.

Tuning: ``min_trend_t`` (8 on SKAB) decides which channels count as drifting -- lower treats
more channels as drifting (fewer false alarms from drift, less sensitivity on those channels);
``beta`` (0.997, ~330 readings) should be slower than the faults to catch and faster than the
drift; ``settle`` readings at the start of the window are left out of the model's fit while the
baseline settles.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from .base import DetectorParams


class TrendHighPassParams(DetectorParams):
    min_trend_t: float = Field(8.0, gt=0, le=1e6, description="trend t statistic above which a channel drifts")
    beta: float = Field(0.997, gt=0, lt=1, description="EWMA factor of the drifting channels' slow baseline")
    settle: int = Field(50, ge=0, le=100_000, description="readings at the start left out of the fit")


class TrendHighPass:
    """Row-at-a-time transform (every channel of a row arrives together); causal and streaming."""

    def __init__(self, params: TrendHighPassParams):
        self.params = params
        self.drifting = np.zeros(0, dtype=bool)
        self.trend_t = np.zeros(0)
        self._base: np.ndarray | None = None

    def fit(self, X: np.ndarray) -> "TrendHighPass":
        """Choose the drifting channels from normal rows ``X`` (n_rows, n_channels)."""
        X = np.asarray(X, dtype=np.float64)
        n = len(X)
        if n < 3:
            raise ValueError(f"trend high-pass needs at least 3 normal rows, got {n}")
        t = np.arange(n, dtype=np.float64)
        t -= t.mean()
        sxx = float((t * t).sum())
        slope = (t @ (X - X.mean(axis=0))) / sxx
        resid = X - X.mean(axis=0) - np.outer(t, slope)
        se = np.sqrt((resid * resid).sum(axis=0) / (n - 2) / sxx)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.trend_t = np.where(se > 0, np.abs(slope) / se, 0.0)
        self.drifting = self.trend_t > self.params.min_trend_t
        self._base = None
        return self

    def reset(self) -> None:
        """Forget the baseline (start of a new, unrelated run)."""
        self._base = None

    def transform_rows(self, X: np.ndarray) -> np.ndarray:
        """The rows with drifting channels replaced by their deviation from the slow baseline."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        out = X.copy()
        d = self.drifting
        if not d.any():
            return out
        beta = self.params.beta
        base = X[0, d].copy() if self._base is None else self._base
        for i in range(len(X)):
            x = X[i, d]
            out[i, d] = x - base
            base = beta * base + (1 - beta) * x
        self._base = base
        return out
