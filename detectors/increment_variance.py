"""Increment variance: a sensor's reading-to-reading variability leaves its learned band.

Many faults change *how much a signal moves*, not where it sits: a sticking control valve makes
its flow move in steps, a valve stuck at one opening stops moving at all, a failing loop or a
loose coupling makes a signal noisier. A level or mean-shift chart (EWMA, CUSUM, PCA T²) misses
these for a long time, because the mean hardly changes. This detector watches the mean squared
increment ``d = x - x_prev`` of each sensor:

* **learn**: the first ``learn`` increments of a sensor are kept; their mean square is the
  sensor's baseline ``b``. The ratio ``r = d² / b`` is then replayed through the chart over those
  same increments, and the largest ``|log z|`` seen there, times ``limit_scale`` (at least
  ``min_limit``), is the sensor's own limit: a sensor whose normal variability wanders gets a
  wider band than a steady one, from its normal readings only.
* **chart**: ``z = z + lam * (r - z)`` (an EWMA of the ratio, starting at 1), and the signal
  ``log(max(z, floor))``. Above ``+limit``: ``variability_up``; below ``-limit``:
  ``variability_down`` (a valve or transmitter that stopped moving). A sensor that did not move
  at all while learning never raises ``variability_down`` (that is the flatline detector's job).

Score: ``|log z| / limit`` (1 = on the limit). The baseline is fixed once learned (like a range
grid): a fault that lasts must not become the new normal. Every reading moves the chart.

Tuning: ``lam`` sets the memory (about ``1 / lam`` readings): smaller is more sensitive to small,
lasting changes and slower. ``limit_scale`` trades false alarms against detection; 2 keeps the
Tennessee Eastman normal test run under 1 % false alarms with ``lam = 0.07``. ``learn`` should
cover a few hundred readings of normal operation, including its usual disturbances. ``max_gap``
(a few sampling intervals) keeps a step across a data gap or a restart from counting as one
increment: the reading after the gap only sets where the next increment starts.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from .base import Detector, debounce
from .decide import Decider, LevelsDecider
from .registry import register


class IncrementVarianceParams(debounce(clear_ratio=0.8, longest=86400)):
    learn: int = Field(500, ge=10, le=100_000, description="increments that fix the baseline and the limit")
    lam: float = Field(0.07, gt=0, le=1, description="weight of the newest squared increment in the chart (EWMA)")
    limit_scale: float = Field(2.0, gt=0, le=100, description="limit = this x the largest abs(log ratio) while learning")
    min_limit: float = Field(0.5, gt=0, le=20, description="smallest limit, in abs(log ratio)")
    floor: float = Field(1e-3, gt=0, lt=1, description="smallest ratio the chart takes a log of (a stuck signal)")
    min_step: float = Field(1e-9, gt=0, description="increments below this (sensor units) count as no movement")
    max_gap: float | None = Field(None, gt=0, le=7 * 86400,
                                  description="seconds: a reading more than this after the sensor's previous one has "
                                              "no increment (a data gap, a restart); null: every reading has one")


@register
class IncrementVariance(Detector):
    name = "increment_variance"
    Params = IncrementVarianceParams
    CONDITIONS = ("normal", "variability_up", "variability_down")
    SEVERITY = {"variability_up": "medium", "variability_down": "medium"}

    def __init__(self, params: IncrementVarianceParams, sensors):
        super().__init__(params, sensors)
        n, p = self.n, params
        self.warmup = p.learn + 1
        self.prev = np.full(n, np.nan)  # previous finite reading
        self.tprev = np.full(n, np.nan)  # its time
        self.buf = np.zeros((n, p.learn), dtype=np.float32)  # squared increments while learning
        self.ninc = np.zeros(n, dtype=np.int64)  # increments learned
        self.base = np.full(n, np.nan)  # baseline mean squared increment (NaN: still learning)
        self.limit = np.full(n, np.nan)  # |log ratio| limit
        self.moved = np.zeros(n, dtype=bool)  # the sensor moved while learning
        self.z = np.ones(n)  # chart: EWMA of d² / base

    @classmethod
    def example_params(cls):
        return {"learn": 20, "lam": 0.2, "limit_scale": 1.5}

    def make_decider(self) -> Decider:
        p: IncrementVarianceParams = self.params
        return LevelsDecider(self.n, 2, ordered=False, clear_ratio=p.clear_ratio, on_delay=p.on_delay,
                             off_delay=p.off_delay)

    def _state_arrays(self):
        return {"prev": self.prev, "tprev": self.tprev, "buf": self.buf, "ninc": self.ninc, "base": self.base, "limit": self.limit,
                "moved": self.moved, "z": self.z}

    def warm(self, idx: np.ndarray) -> np.ndarray:
        return np.isfinite(self.base[idx])

    # --- chart ---------------------------------------------------------------------------------
    def _increment(self, idx, t, x):
        """(d², has an increment) of each reading: none for a first reading, a NaN, or (with
        ``max_gap``) a reading that comes after a gap."""
        with np.errstate(invalid="ignore", over="ignore"):
            d = x - self.prev[idx]
            d2 = d * d
        has = np.isfinite(d2)
        if self.params.max_gap is not None:
            has &= ~(t - self.tprev[idx] > self.params.max_gap)
        return np.where(has, d2, 0.0), has

    def _next_z(self, idx, d2, has):
        ready = has & np.isfinite(self.base[idx])
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            r = d2 / self.base[idx]
            z = self.z[idx] + self.params.lam * (r - self.z[idx])
        return np.where(ready & np.isfinite(z), z, np.nan)

    def _signal(self, idx, z):
        p: IncrementVarianceParams = self.params
        with np.errstate(invalid="ignore", divide="ignore"):
            lr = np.log(np.maximum(z, p.floor)) / self.limit[idx]
        lr = np.where(np.isfinite(lr), lr, 0.0)
        down = np.where(self.moved[idx], -lr, 0.0)
        return lr, down

    def evaluate_many(self, idx, t, x):
        d2, has = self._increment(idx, t, x)
        z = self._next_z(idx, d2, has)
        # a reading without an increment (first one, NaN) leaves the chart where it is
        z = np.where(np.isnan(z) & np.isfinite(self.base[idx]), self.z[idx], z)
        up, down = self._signal(idx, z)
        return np.maximum(up, down), np.stack([up, down])

    def score_many(self, idx, t, x):
        return self.evaluate_many(idx, t, x)[0]

    def observe_many(self, idx, t, x, learn):
        p: IncrementVarianceParams = self.params
        d2, has = self._increment(idx, t, x)
        z = self._next_z(idx, d2, has)
        ok = np.isfinite(z)
        self.z[idx[ok]] = z[ok]
        learning = has & ~np.isfinite(self.base[idx])
        if learning.any():
            i = idx[learning]
            self.buf[i, self.ninc[i]] = d2[learning]
            self.ninc[i] += 1
            done = i[self.ninc[i] >= p.learn]
            if len(done):
                self._fix(done)
        fin = np.isfinite(x)
        self.prev[idx[fin]] = x[fin]
        self.tprev[idx[fin]] = t[fin]

    def _fix(self, cols: np.ndarray) -> None:
        """Baseline and limit from the learned increments (replayed through the chart)."""
        p: IncrementVarianceParams = self.params
        buf = self.buf[cols].astype(np.float64)
        ms = buf.mean(axis=1)
        self.moved[cols] = ms > p.min_step ** 2
        base = np.maximum(ms, p.min_step ** 2)
        z = np.ones(len(cols))
        worst = np.zeros(len(cols))
        for k in range(buf.shape[1]):
            z = z + p.lam * (buf[:, k] / base - z)
            lz = np.abs(np.log(np.maximum(z, p.floor)))
            worst = np.maximum(worst, np.where(self.moved[cols], lz, np.maximum(np.log(np.maximum(z, 1.0)), 0.0)))
        self.base[cols] = base
        self.limit[cols] = np.maximum(p.min_limit, p.limit_scale * worst)
        self.z[cols] = z
        self.buf[cols] = 0.0
