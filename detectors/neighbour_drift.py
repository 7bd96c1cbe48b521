"""Neighbour drift: a sensor slowly moving away from the sensors around it.

Calibration drift (an electrochemical cell ageing, a fouled thermowell, a pressure transmitter's
zero shifting) is invisible to a detector that looks at one sensor alone, because the drift is
slower than the process. Sensors that measure the same thing close together (the registry's
``neighbours``) share the process but not the drift: the residual ``x - median(neighbours)``
stays put while all are healthy and moves when one drifts.

Per reading, the residual uses each neighbour's latest reading (no older than ``max_age``
seconds; at least ``min_neighbours`` of them). The drift statistic is a slow EWMA of the residual
(rate ``alpha`` per reading, so noise averages out). During ``warmup`` readings the detector
learns the sensor's normal offset from its neighbours (sensors at different heights or
positions legitimately differ) and the residual's noise (Huber-clipped mean absolute deviation);
after that both are frozen, or follow normal readings at rate ``adapt``. The score is the drift
of the smoothed residual from the normal offset *in sigmas of the residual's noise*; the
``drift`` condition starts at ``threshold``, or when the drift reaches ``abs_limit`` in sensor
units.

Only neighbours watched by the same detector entry count (select them together). Neighbour
medians use an index matrix built once (padded with a column that always holds NaN), so a round
of readings costs a few array operations regardless of how the neighbours are laid out. This
detector compares sensors, so it is not ``univariate``: a sensor's score depends on the latest
readings of its neighbours before the current call.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from .base import Detector, DetectorParams
from .decide import Decider, LevelsDecider
from .registry import register

MAD_TO_SIGMA = 1.2533  # mean absolute deviation -> sigma (normal distribution)


def row_median(vals: np.ndarray) -> np.ndarray:
    """Median of each row ignoring NaN (NaN for a row without values), without warnings."""
    if vals.shape[1] == 0:
        return np.full(vals.shape[0], np.nan)
    c = np.sum(~np.isnan(vals), axis=1)
    s = np.sort(np.where(np.isnan(vals), np.inf, vals), axis=1)
    lo = np.take_along_axis(s, np.maximum((c - 1) // 2, 0)[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(s, np.maximum(c // 2, 0)[:, None], axis=1)[:, 0]
    hi = np.where(c % 2 == 1, lo, hi)
    with np.errstate(invalid="ignore"):
        return np.where(c > 0, 0.5 * (lo + hi), np.nan)


class NeighbourDriftParams(DetectorParams):
    alpha: float = Field(0.01, gt=0, le=0.5, description="EWMA rate of the drift statistic, per reading")
    threshold: float = Field(3.0, gt=0, le=1000, description="drift, in sigmas of the residual noise, that alarms")
    abs_limit: float | None = Field(None, gt=0, description="drift in sensor units that alarms regardless of noise")
    warmup: int = Field(200, ge=10, le=1_000_000, description="readings to learn the normal offset and noise")
    adapt: float = Field(0.0, ge=0, le=0.01, description="rate at which offset and noise keep following normal readings (0 = frozen)")
    max_age: float = Field(900.0, gt=0, le=86400, description="seconds after which a neighbour's latest reading is too old to use")
    min_neighbours: int = Field(1, ge=1, le=64, description="usable neighbours needed for a residual")
    min_scale: float = Field(1e-6, gt=0, description="floor of the residual noise sigma, in sensor units")
    clear_ratio: float = Field(0.8, gt=0, le=1, description="condition clears below threshold * clear_ratio")
    on_delay: float = Field(0.0, ge=0, le=86400, description="seconds of drift before alarming")
    off_delay: float = Field(0.0, ge=0, le=86400, description="seconds back within limits before clearing")


@register
class NeighbourDrift(Detector):
    name = "neighbour_drift"
    Params = NeighbourDriftParams
    CONDITIONS = ("normal", "drift")
    SEVERITY = {"drift": "low"}
    SENSOR_HEALTH = True
    univariate = False

    def __init__(self, params: NeighbourDriftParams, sensors):
        super().__init__(params, sensors)
        n = self.n
        col = {s.id: i for i, s in enumerate(self.sensors)}
        nbs = [[col[m] for m in s.neighbours if m in col and col[m] != i] for i, s in enumerate(self.sensors)]
        k = max([len(v) for v in nbs] + [1])
        self.nb = np.full((n, k), n, dtype=np.int64)  # padded with column n (always NaN)
        for i, v in enumerate(nbs):
            self.nb[i, :len(v)] = v
        self.last = np.full(n + 1, np.nan)
        self.last_t = np.full(n + 1, -np.inf)
        self.drift = np.full(n, np.nan)  # EWMA of the residual
        self.offset = np.zeros(n)  # normal residual
        self.noise = np.zeros(n)  # mean absolute deviation of the residual from the offset
        self.nl = np.zeros(n, dtype=np.int64)  # residuals learned

    @classmethod
    def example_params(cls):
        return {"alpha": 0.05, "warmup": 30, "threshold": 3.0, "abs_limit": 20.0}

    def make_decider(self) -> Decider:
        p: NeighbourDriftParams = self.params
        return LevelsDecider(self.n, 1, clear_ratio=p.clear_ratio, on_delay=p.on_delay, off_delay=p.off_delay)

    def _state_arrays(self):
        return {"last": self.last, "last_t": self.last_t, "drift": self.drift, "offset": self.offset,
                "noise": self.noise, "nl": self.nl}

    def residual(self, idx, t, x):
        """``x`` minus the median of the sensor's usable neighbours (NaN if too few)."""
        p: NeighbourDriftParams = self.params
        nb = self.nb[idx]
        vals = self.last[nb]
        fresh = (t[:, None] - self.last_t[nb]) <= p.max_age
        vals = np.where(fresh, vals, np.nan)
        med = row_median(vals)
        med = np.where(np.sum(~np.isnan(vals), axis=1) >= p.min_neighbours, med, np.nan)
        with np.errstate(invalid="ignore", over="ignore"):
            return x - med

    def _next_drift(self, idx, r):
        d = self.drift[idx]
        with np.errstate(invalid="ignore", over="ignore"):
            new = np.where(np.isnan(d), r, d + self.params.alpha * (r - d))
        return np.where(np.isfinite(r), new, d)

    def evaluate_many(self, idx, t, x):
        p: NeighbourDriftParams = self.params
        r = self.residual(idx, t, x)
        dev = np.abs(self._next_drift(idx, r) - self.offset[idx])
        with np.errstate(invalid="ignore", over="ignore"):
            z = dev / np.maximum(MAD_TO_SIGMA * self.noise[idx], p.min_scale)
            z = np.where((self.nl[idx] >= p.warmup) & np.isfinite(r), z, np.nan)
            ratio = z / p.threshold
            if p.abs_limit is not None:
                ratio = np.fmax(ratio, np.where(np.isnan(z), np.nan, dev / p.abs_limit))
        return z, ratio[None, :]

    def score_many(self, idx, t, x):
        return self.evaluate_many(idx, t, x)[0]

    def observe_many(self, idx, t, x, learn):
        p: NeighbourDriftParams = self.params
        r = self.residual(idx, t, x)
        self.drift[idx] = self._next_drift(idx, r)
        lr = np.flatnonzero(learn & np.isfinite(r))
        if len(lr):
            i, rr, nl = idx[lr], r[lr], self.nl[idx[lr]]
            warm = nl >= p.warmup
            a = np.where(warm, p.adapt, 1.0 / (nl + 1))
            off, noise = self.offset[i], self.noise[i]
            lim = 4.0 * MAD_TO_SIGMA * noise + p.min_scale
            dev = np.where(nl >= 10, np.clip(rr - off, -lim, lim), rr - off)
            self.offset[i] = off + a * dev
            self.noise[i] = noise + a * (np.abs(dev) - noise)
            self.nl[i] = nl + 1
        ok = np.isfinite(x)
        self.last[idx[ok]] = x[ok]
        self.last_t[idx[ok]] = t[ok]
