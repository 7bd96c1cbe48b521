"""Seasonal robust z-score: distance from a baseline that knows the time of day.

Many plant signals follow a daily cycle -- ambient temperature, cooling-water temperature, loads
that follow shifts -- and a single baseline either misses an anomaly at the quiet hour or
alarms at every peak. This detector keeps, per sensor, a baseline for each of ``slots`` slots of
the day (24 = hour of day, in local standard time ``utc_offset``) next to a global one, and
scores a reading against its slot's baseline once the slot has seen ``slot_warmup`` readings,
against the global one until then. The first day therefore behaves like a plain z-score; after
that the daily cycle is no longer an anomaly.

Baselines are robust streaming estimates with O(1) state: a location (EWMA of the reading) and a
scale (EWMA of the absolute deviation, times 1.2533 for sigma), both *Huber-clipped* at 4 sigma
once a few readings are in, so an outlier moves them by a bounded amount, and both learned from
normal readings only. During the first readings of a baseline the rate is ``1/count`` (a running
mean), so it starts unbiased. A slot starts from the global baseline.

``z = |x - location| / max(sigma, min_scale)``. Decision: fixed ``threshold`` (and optional
``high_threshold``) as in ``robust_zscore``, or ``decision: quantile``: alarm when ``z`` exceeds
``quantile_factor`` times the sensor's own running ``quantile`` of past normal scores
(:class:`~.decide.QuantileDecider`, river's ``QuantileFilter`` made per sensor), never below
``threshold`` -- useful when sensors differ too much for one threshold.

Daylight saving time is not applied: the slots follow standard time, so for half the year the
cycle is one slot off, which the neighbouring slots' similar baselines absorb.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from .base import Detector, debounce
from .decide import Decider, QuantileDecider, ThresholdDecider
from .registry import register

MAD_TO_SIGMA = 1.2533  # mean absolute deviation -> sigma (normal distribution)


class SeasonalZParams(debounce(clear_ratio=0.7)):
    slots: int = Field(24, ge=2, le=288, description="slots per day (24 = hour of day)")
    utc_offset: float = Field(0.0, ge=-12, le=14, description="plant's standard time offset from UTC, hours")
    alpha: float = Field(0.01, gt=0, le=0.5, description="EWMA rate of the global baseline, per reading")
    slot_alpha: float = Field(0.05, gt=0, le=0.5, description="EWMA rate of a slot's baseline, per reading in that slot")
    warmup: int = Field(50, ge=5, le=1_000_000, description="readings before any score counts")
    slot_warmup: int = Field(30, ge=3, le=1_000_000, description="readings in a slot before its own baseline is used")
    threshold: float = Field(6.0, gt=0, description="z at which the anomaly condition starts (floor in quantile mode)")
    high_threshold: float | None = Field(None, gt=0, description="z for the severe condition (threshold mode)")
    min_scale: float = Field(1e-6, gt=0, description="floor of sigma, in sensor units")
    decision: Literal["threshold", "quantile"] = Field("threshold", description="fixed thresholds, or a multiple of each sensor's own score quantile")
    quantile: float = Field(0.99, ge=0.5, lt=1, description="quantile of past normal scores (quantile mode)")
    quantile_factor: float = Field(1.5, ge=1, le=100, description="alarm above this times the quantile (quantile mode)")
    quantile_min_count: int = Field(200, ge=5, le=1_000_000, description="normal scores a sensor needs before quantile alarms")

    @model_validator(mode="after")
    def _check(self):
        if self.high_threshold is not None and self.high_threshold <= self.threshold:
            raise ValueError("high_threshold must be above threshold")
        if self.high_threshold is not None and self.decision == "quantile":
            raise ValueError("high_threshold applies to decision: threshold only")
        return self


def _robust_step(loc, dev, cnt, x, alpha, min_scale):
    """One Huber-clipped EWMA step of (location, mean absolute deviation); returns new arrays."""
    a = np.maximum(alpha, 1.0 / (cnt + 1))
    lim = 4.0 * MAD_TO_SIGMA * dev + min_scale
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.where(cnt == 0, 0.0, x - loc)
        e = np.where(cnt >= 10, np.clip(e, -lim, lim), e)
        new_loc = np.where(cnt == 0, x, loc + a * e)
        new_dev = np.where(cnt == 0, 0.0, dev + a * (np.abs(e) - dev))
    fin = np.isfinite(new_loc) & np.isfinite(new_dev)
    return np.where(fin, new_loc, loc), np.where(fin, new_dev, dev), cnt + fin


@register
class SeasonalZScore(Detector):
    name = "seasonal_zscore"
    Params = SeasonalZParams
    CONDITIONS = ("normal", "anomaly", "severe_anomaly")
    SEVERITY = {"anomaly": "medium", "severe_anomaly": "high"}

    def __init__(self, params: SeasonalZParams, sensors):
        super().__init__(params, sensors)
        self.warmup = params.warmup
        n, S = self.n, params.slots
        self.g_loc, self.g_dev = np.zeros(n), np.zeros(n)
        self.g_cnt = np.zeros(n, dtype=np.int64)
        self.s_loc, self.s_dev = np.zeros((n, S)), np.zeros((n, S))
        self.s_cnt = np.zeros((n, S), dtype=np.int64)
        self.slot_len = 86400.0 / S

    @classmethod
    def example_params(cls):
        return {"slots": 24, "warmup": 20, "slot_warmup": 5, "threshold": 4.0, "high_threshold": 8.0,
                "alpha": 0.05}

    def make_decider(self) -> Decider:
        p: SeasonalZParams = self.params
        if p.decision == "quantile":
            return QuantileDecider(self.n, p.quantile, [p.quantile_factor], min_count=p.quantile_min_count,
                                   floor=p.threshold, clear_ratio=p.clear_ratio, on_delay=p.on_delay,
                                   off_delay=p.off_delay)
        th = [p.threshold] + ([p.high_threshold] if p.high_threshold else [])
        return ThresholdDecider(self.n, th, clear_ratio=p.clear_ratio, on_delay=p.on_delay, off_delay=p.off_delay)

    def _state_arrays(self):
        return {"g_loc": self.g_loc, "g_dev": self.g_dev, "g_cnt": self.g_cnt,
                "s_loc": self.s_loc, "s_dev": self.s_dev, "s_cnt": self.s_cnt}

    def slot(self, t: np.ndarray) -> np.ndarray:
        """Slot of the day of times ``t`` (Unix seconds) in the plant's standard time."""
        local = np.mod(np.asarray(t, dtype=np.float64) + self.params.utc_offset * 3600.0, 86400.0)
        return np.minimum((local // self.slot_len).astype(np.int64), self.params.slots - 1)

    def score_many(self, idx, t, x):
        p: SeasonalZParams = self.params
        s = self.slot(t)
        own = self.s_cnt[idx, s] >= p.slot_warmup
        loc = np.where(own, self.s_loc[idx, s], self.g_loc[idx])
        dev = np.where(own, self.s_dev[idx, s], self.g_dev[idx])
        with np.errstate(invalid="ignore", over="ignore"):
            return np.abs(x - loc) / np.maximum(MAD_TO_SIGMA * dev, p.min_scale)

    def learn_many(self, idx, t, x):
        super().learn_many(idx, t, x)
        p: SeasonalZParams = self.params
        ok = np.isfinite(x)
        if not ok.all():
            idx, t, x = idx[ok], t[ok], x[ok]
        if not len(idx):
            return
        gl, gd, gc = _robust_step(self.g_loc[idx], self.g_dev[idx], self.g_cnt[idx], x, p.alpha, p.min_scale)
        self.g_loc[idx], self.g_dev[idx], self.g_cnt[idx] = gl, gd, gc
        s = self.slot(t)
        cnt = self.s_cnt[idx, s]
        sl, sd, sc = _robust_step(self.s_loc[idx, s], self.s_dev[idx, s], cnt, x, p.slot_alpha, p.min_scale)
        fresh = cnt == 0  # a slot starts from the global baseline (which has just learned x)
        self.s_loc[idx, s] = np.where(fresh, gl, sl)
        self.s_dev[idx, s] = np.where(fresh, gd, sd)
        self.s_cnt[idx, s] = np.where(fresh, 1, sc)
