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

``scale: span`` compares readings as fractions of each sensor's measuring range (percent of full
scale, as gas detector zero drift is specified), so neighbours of another gas or range count too:
gas detectors in clean air all read near zero. ``abs_limit``, ``event_band`` and ``min_scale``
are then fractions of the span (0.01 = 1 % of full scale).

Drift is slow, and it is one sensor moving while its neighbourhood stays put; a plume or a
process upset is neither. With ``event_band`` set, an *event* starts when the residual moves by more
than the band from one reading to the next, or when the neighbours' median leaves its own slowly
tracked baseline by more than the band (a plume reaching the neighbours), and lasts until both are
back within the band. During an event the residual moves neither the drift statistic nor the
learned offset. A leak is therefore the limit detectors' business, not a drift; a sensor that steps
away for good is the ``jump`` detector's.

A sensor without enough fresh neighbours cannot be judged: it keeps its condition until it can.

Only neighbours watched by the same detector entry count (select them together). Neighbour
medians use an index matrix built once (padded with a column that always holds NaN), so a round
of readings costs a few array operations regardless of how the neighbours are laid out. This
detector compares sensors, so it is not ``univariate``: a sensor's score depends on the latest
readings of its neighbours before the current call.
"""
from __future__ import annotations

import numpy as np
from typing import Literal

from pydantic import Field

from .base import Detector, debounce
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


class NeighbourDriftParams(debounce(clear_ratio=0.8, longest=86400)):
    alpha: float = Field(0.01, gt=0, le=0.5, description="EWMA rate of the drift statistic, per reading")
    threshold: float = Field(3.0, gt=0, le=1000, description="drift, in sigmas of the residual noise, that alarms")
    abs_limit: float | None = Field(None, gt=0, description="drift in sensor units (scale: span: fraction of span) that alarms regardless of noise")
    scale: Literal["units", "span"] = Field("units", description="compare readings in sensor units, or as fractions of each sensor's range (neighbours of other gases or ranges)")
    event_band: float | None = Field(None, gt=0, description="a residual step, or a move of the neighbours' median, larger than this is an event (a plume), not drift: it does not move the statistic until both are back within this (None = off)")
    warmup: int = Field(200, ge=10, le=1_000_000, description="readings to learn the normal offset and noise")
    adapt: float = Field(0.0, ge=0, le=0.01, description="rate at which offset and noise keep following normal readings (0 = frozen)")
    max_age: float = Field(900.0, gt=0, le=86400, description="seconds after which a neighbour's latest reading is too old to use")
    min_neighbours: int = Field(1, ge=1, le=64, description="usable neighbours needed for a residual")
    min_scale: float = Field(1e-6, gt=0, description="floor of the residual noise sigma, in sensor units")


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
        span = np.array([s.range_max - s.range_min for s in self.sensors] + [1.0], dtype=np.float64)
        ok = np.isfinite(span) & (span > 0)
        #: what a reading is divided by before it is compared (1, or the sensor's span)
        self.unit = np.where(ok, span, np.nan) if params.scale == "span" else np.ones(n + 1)
        self.last = np.full(n + 1, np.nan)
        self.last_t = np.full(n + 1, -np.inf)
        self.drift = np.full(n, np.nan)  # EWMA of the residual
        self.offset = np.zeros(n)  # normal residual
        self.noise = np.zeros(n)  # mean absolute deviation of the residual from the offset
        self.nl = np.zeros(n, dtype=np.int64)  # residuals learned
        self.prev_r = np.full(n, np.nan)  # the previous residual
        self.held = np.zeros(n, dtype=bool)  # in an event (see event_band)
        self.nbase = np.full(n, np.nan)  # slowly tracked baseline of the neighbours' median

    @classmethod
    def example_params(cls):
        return {"alpha": 0.05, "warmup": 30, "threshold": 3.0, "abs_limit": 20.0}

    def make_decider(self) -> Decider:
        p: NeighbourDriftParams = self.params
        return LevelsDecider(self.n, 1, clear_ratio=p.clear_ratio, on_delay=p.on_delay, off_delay=p.off_delay)

    def _state_arrays(self):
        return {"last": self.last, "last_t": self.last_t, "drift": self.drift, "offset": self.offset,
                "noise": self.noise, "nl": self.nl, "prev_r": self.prev_r, "held": self.held, "nbase": self.nbase}

    def residual(self, idx, t, x):
        """``x`` minus the median of the sensor's usable neighbours (NaN if too few)."""
        return self._parts(idx, t, x)[0]

    def _parts(self, idx, t, x):
        """The residual and the neighbours' median it is taken from (both NaN if too few)."""
        p: NeighbourDriftParams = self.params
        nb = self.nb[idx]
        with np.errstate(invalid="ignore", over="ignore"):
            vals = self.last[nb] / self.unit[nb]
        fresh = (t[:, None] - self.last_t[nb]) <= p.max_age
        vals = np.where(fresh, vals, np.nan)
        med = row_median(vals)
        med = np.where(np.sum(~np.isnan(vals), axis=1) >= p.min_neighbours, med, np.nan)
        with np.errstate(invalid="ignore", over="ignore"):
            return x / self.unit[idx] - med, med

    def _event(self, idx, r, med):
        """Readings of an event, not drift (see ``event_band``)."""
        band = self.params.event_band
        if band is None:
            return np.zeros(len(idx), dtype=bool)
        d, held = self.drift[idx], self.held[idx]
        with np.errstate(invalid="ignore"):
            moved = np.abs(med - self.nbase[idx]) > band  # the neighbourhood left its baseline
            start = ~held & (np.abs(r - self.prev_r[idx]) > band)
            last = held & ~(np.abs(r - d) <= band)
        return np.isfinite(d) & np.isfinite(r) & (start | last | moved)

    def _next_drift(self, idx, r, event):
        d = self.drift[idx]
        with np.errstate(invalid="ignore", over="ignore"):
            new = np.where(np.isnan(d), r, d + self.params.alpha * (r - d))
        return np.where(np.isfinite(r) & ~event, new, d)

    def evaluate_many(self, idx, t, x):
        p: NeighbourDriftParams = self.params
        r, med = self._parts(idx, t, x)
        dev = np.abs(self._next_drift(idx, r, self._event(idx, r, med)) - self.offset[idx])
        with np.errstate(invalid="ignore", over="ignore"):
            z = dev / np.maximum(MAD_TO_SIGMA * self.noise[idx], p.min_scale)
            z = np.where((self.nl[idx] >= p.warmup) & np.isfinite(r), z, np.nan)
            ratio = z / p.threshold
            if p.abs_limit is not None:
                ratio = np.fmax(ratio, np.where(np.isnan(z), np.nan, dev / p.abs_limit))
        # without enough fresh neighbours a sensor cannot be judged: it keeps its condition
        ratio = np.where(np.isnan(ratio) & (self.decider.code[idx] > 0), 1.0, ratio)
        return z, ratio[None, :]

    def score_many(self, idx, t, x):
        return self.evaluate_many(idx, t, x)[0]

    def observe_many(self, idx, t, x, learn):
        p: NeighbourDriftParams = self.params
        r, med = self._parts(idx, t, x)
        event = self._event(idx, r, med)
        self.drift[idx] = self._next_drift(idx, r, event)
        fin = np.isfinite(r)
        self.held[idx[fin]] = event[fin]
        self.prev_r[idx[fin]] = r[fin]
        calm = np.flatnonzero(fin & ~event)
        if len(calm):
            i, m = idx[calm], med[calm]
            b = self.nbase[i]
            self.nbase[i] = np.where(np.isnan(b), m, b + p.alpha * (m - b))
        lr = np.flatnonzero(learn & np.isfinite(r) & ~event)
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
