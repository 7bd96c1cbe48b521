"""Two-sided tabular CUSUM (Page 1954; Montgomery, *Statistical Quality Control*, ch. 9).

Like the EWMA chart, CUSUM catches small sustained shifts of the mean; it is the optimal
sequential test for a shift of a known size. With ``z = (x - mu) / sigma`` the upper and lower
sums are ``S+ = max(0, S+ + z - k)`` and ``S- = max(0, S- - z - k)``; a sum beyond ``h`` signals
a shift up or down. ``k`` (in sigmas) is half the shift to detect fastest; ``k = 0.5, h = 5``
gives an in-control average run length of about 465 readings and detects a one-sigma shift in
about 10 (for independent normal noise; autocorrelated data needs a larger ``h``).

``mu`` and ``sigma`` are estimated *robustly* from the first ``warmup`` normal readings (median
and 1.4826 x MAD of a per-sensor warm-up buffer, so a spike during warm-up does not widen the
chart), then frozen, or updated slowly at rate ``adapt`` from normal readings (Huber-clipped).
After a signal the sums restart from 0 (``reset``), as in the textbook scheme: a shift that
persists signals again after a few readings, and ``off_delay`` (default 300 s) holds the
condition across those re-signals so a persistent shift is one alarm, not a chattering one.

Score: ``max(S+, S-)`` in sigmas. Conditions ``shift_up`` / ``shift_down``.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from .base import Detector, debounce
from .decide import Decider, LevelsDecider
from .registry import register

MAD_TO_SIGMA = 1.4826


class CusumParams(debounce(off_delay=300.0, longest=86400)):
    k: float = Field(0.5, ge=0, le=10, description="allowance in sigmas (half the shift to detect)")
    h: float = Field(5.0, gt=0, le=100, description="decision interval in sigmas")
    warmup: int = Field(100, ge=10, le=500, description="normal readings for the robust mu and sigma")
    adapt: float = Field(0.0, ge=0, le=0.1, description="rate at which mu and sigma follow normal readings after warm-up (0 = frozen)")
    reset: bool = Field(True, description="restart the sums at 0 after each signal")
    min_scale: float = Field(1e-9, gt=0, description="floor of sigma, in sensor units")


@register
class Cusum(Detector):
    name = "cusum"
    Params = CusumParams
    CONDITIONS = ("normal", "shift_up", "shift_down")
    SEVERITY = {"shift_up": "medium", "shift_down": "medium"}

    def __init__(self, params: CusumParams, sensors):
        super().__init__(params, sensors)
        n = self.n
        self.buf = np.full((n, params.warmup), np.nan)  # warm-up readings
        self.nb = np.zeros(n, dtype=np.int64)
        self.mu = np.full(n, np.nan)
        self.sigma = np.full(n, np.nan)
        self.sp = np.zeros(n)
        self.sm = np.zeros(n)

    @classmethod
    def example_params(cls):
        return {"k": 0.5, "h": 4.0, "warmup": 20, "adapt": 0.01, "off_delay": 30.0}

    def make_decider(self) -> Decider:
        p: CusumParams = self.params
        return LevelsDecider(self.n, 2, ordered=False, on_delay=p.on_delay, off_delay=p.off_delay)

    def _state_arrays(self):
        return {"buf": self.buf, "nb": self.nb, "mu": self.mu, "sigma": self.sigma, "sp": self.sp, "sm": self.sm}

    def _sums(self, idx, x):
        k = self.params.k
        with np.errstate(invalid="ignore", over="ignore"):
            z = (x - self.mu[idx]) / self.sigma[idx]
            ok = np.isfinite(z)
            sp = np.where(ok, np.maximum(0.0, self.sp[idx] + z - k), np.nan)
            sm = np.where(ok, np.maximum(0.0, self.sm[idx] - z - k), np.nan)
        return sp, sm

    def evaluate_many(self, idx, t, x):
        sp, sm = self._sums(idx, x)
        return np.fmax(sp, sm), np.stack([sp, sm]) / self.params.h

    def score_many(self, idx, t, x):
        return self.evaluate_many(idx, t, x)[0]

    def observe_many(self, idx, t, x, learn):
        p: CusumParams = self.params
        sp, sm = self._sums(idx, x)
        ok = np.isfinite(sp)
        if p.reset:
            fired = (sp >= p.h) | (sm >= p.h)
            sp, sm = np.where(fired, 0.0, sp), np.where(fired, 0.0, sm)
        self.sp[idx[ok]], self.sm[idx[ok]] = sp[ok], sm[ok]
        lr = learn & np.isfinite(x)
        adapting = np.flatnonzero(lr & np.isfinite(self.mu[idx])) if p.adapt > 0 else np.empty(0, np.int64)
        warming = np.flatnonzero(lr & (self.nb[idx] < p.warmup))
        if len(warming):
            i = idx[warming]
            self.buf[i, self.nb[i]] = x[warming]
            self.nb[i] += 1
            done = i[self.nb[i] == p.warmup]
            if len(done):
                rows = self.buf[done]
                med = np.median(rows, axis=1)
                mad = np.median(np.abs(rows - med[:, None]), axis=1)
                self.mu[done] = med
                self.sigma[done] = np.maximum(MAD_TO_SIGMA * mad, p.min_scale)
        if len(adapting):
            i, a = idx[adapting], p.adapt
            mu, sg = self.mu[i], self.sigma[i]
            with np.errstate(over="ignore", invalid="ignore"):
                e = np.clip(x[adapting] - mu, -4.0 * sg, 4.0 * sg)
                self.mu[i] = mu + a * e
                self.sigma[i] = np.maximum(sg + a * (1.2533 * np.abs(e) - sg), p.min_scale)
