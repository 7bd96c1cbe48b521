"""EWMA control chart on the deviation from a slow baseline (Roberts 1959; Lucas & Saccucci 1990).

Catches *small sustained shifts* -- a fraction of a sigma that persists -- that a per-reading
threshold never sees: a creeping leak, a slowly fouling filter, a heater element half failing.
Each reading's deviation from a slow baseline, ``e = x - baseline``, feeds the chart statistic
``z = lam * e + (1 - lam) * z``; with ``sigma`` the standard deviation of ``e``, the statistic's
own standard deviation is ``sigma * sqrt(lam / (2 - lam))`` (asymptotic), and the chart signals
beyond ``L`` of those. Smaller ``lam`` detects smaller shifts, later; ``lam = 0.1, L = 2.7`` is a
textbook pairing with an in-control run length of about 500 readings for independent noise
(autocorrelated process data alarm more often: raise ``L``).

The baseline (an EWMA with rate ``baseline_alpha`` per reading, a running mean during warm-up)
and sigma (a Huber-clipped EWMA of squared deviations) are learned from normal readings only;
the chart statistic sees every reading. After ``warmup`` readings the chart starts from 0.

Score: ``|z|`` in sigmas of the statistic. Conditions ``shift_up`` / ``shift_down``, clearing
below ``clear_ratio * L``.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from .base import Detector, debounce
from .decide import Decider, LevelsDecider
from .registry import register


class EwmaParams(debounce(clear_ratio=0.8, longest=86400)):
    lam: float = Field(0.1, gt=0, le=1, description="weight of the newest deviation in the chart statistic (lambda)")
    L: float = Field(3.0, gt=0, le=50, description="control limit, in sigmas of the chart statistic")
    baseline_alpha: float = Field(0.001, gt=0, le=0.5, description="EWMA rate of the slow baseline, per reading")
    warmup: int = Field(100, ge=10, le=1_000_000, description="readings to learn baseline and sigma before charting")
    min_scale: float = Field(1e-9, gt=0, description="floor of sigma, in sensor units")


@register
class EwmaChart(Detector):
    name = "ewma"
    Params = EwmaParams
    CONDITIONS = ("normal", "shift_up", "shift_down")
    SEVERITY = {"shift_up": "medium", "shift_down": "medium"}

    def __init__(self, params: EwmaParams, sensors):
        super().__init__(params, sensors)
        n = self.n
        self.base = np.zeros(n)
        self.var = np.zeros(n)
        self.nl = np.zeros(n, dtype=np.int64)  # readings learned
        self.z = np.zeros(n)  # chart statistic
        self.zfac = np.sqrt(params.lam / (2.0 - params.lam))

    @classmethod
    def example_params(cls):
        return {"lam": 0.2, "L": 3.0, "baseline_alpha": 0.01, "warmup": 20}

    def make_decider(self) -> Decider:
        p: EwmaParams = self.params
        return LevelsDecider(self.n, 2, ordered=False, clear_ratio=p.clear_ratio, on_delay=p.on_delay,
                             off_delay=p.off_delay)

    def _state_arrays(self):
        return {"base": self.base, "var": self.var, "nl": self.nl, "z": self.z}

    def _next_z(self, idx, x):
        with np.errstate(invalid="ignore", over="ignore"):
            z = self.z[idx] + self.params.lam * ((x - self.base[idx]) - self.z[idx])
        return np.where(np.isfinite(z) & (self.nl[idx] >= self.params.warmup), z, np.nan)

    def evaluate_many(self, idx, t, x):
        p: EwmaParams = self.params
        z = self._next_z(idx, x)
        sz = np.maximum(np.sqrt(self.var[idx]), p.min_scale) * self.zfac
        zs = z / sz
        ratios = np.stack([zs, -zs]) / p.L
        return np.abs(zs), ratios

    def score_many(self, idx, t, x):
        return self.evaluate_many(idx, t, x)[0]

    def observe_many(self, idx, t, x, learn):
        p: EwmaParams = self.params
        z = self._next_z(idx, x)
        ok = np.isfinite(z)
        self.z[idx[ok]] = z[ok]
        lr = np.flatnonzero(learn & np.isfinite(x))
        if len(lr):
            i, xx, nl = idx[lr], x[lr], self.nl[idx[lr]]
            a = np.maximum(p.baseline_alpha, 1.0 / (nl + 1))
            b, v = self.base[i], self.var[i]
            lim = 4.0 * np.sqrt(v) + p.min_scale
            with np.errstate(over="ignore", invalid="ignore"):
                e = np.where(nl == 0, 0.0, xx - b)
                e = np.where(nl >= 10, np.clip(e, -lim, lim), e)
                sq = e * e
                fin = np.isfinite(sq)  # an absurd reading must not turn sigma into inf, then NaN
                self.base[i] = np.where(fin, np.where(nl == 0, xx, b + a * e), b)
                self.var[i] = np.where(fin, np.where(nl == 0, 0.0, v + a * (sq - v)), v)
            self.nl[i] = nl + fin
