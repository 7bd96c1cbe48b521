"""Rate of change: a value rising or falling faster than a limit, in units per minute.

A pressure falling fast (a leak, a relief valve lifting), a level rising fast (an overfill in the
making) or a temperature climbing fast (a runaway) can be seen long before the value itself
reaches a limit. The rate is measured over ``span`` seconds -- the change between the current
reading and the reading about ``span`` seconds before it, divided by the time between them --
so a noisy sensor does not alarm on its sample-to-sample jitter; ``smooth`` (seconds, an EWMA
time constant) smooths the readings first if ``span`` alone is not enough.

State per sensor is a short ring of past (time, value) pairs, sampled every ``2 * span / buffer``
seconds so that the ring always covers about two spans however fast the sensor reports. The
reference is the newest ring entry at least ``span`` old; if the ring has none yet (start-up,
after a gap), the oldest entry, if it is at least ``min_cover * span`` old. Finding it is a
vectorised pass over the ring (``buffer`` entries): O(buffer) operations per round, not a loop.

Score: the rate relative to its limit, ``max(rate / rise, -rate / fall, 0)`` (1.0 = at the
limit). Conditions ``rising_fast`` / ``falling_fast`` (:class:`~.decide.LevelsDecider`,
mutually exclusive), each clearing below ``clear_ratio`` of its limit.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from .base import Detector, debounce
from .decide import Decider, LevelsDecider
from .registry import register


class RateOfChangeParams(debounce(clear_ratio=0.8)):
    span: float = Field(60.0, ge=1, le=86400, description="seconds over which the rate is measured")
    rise: float | None = Field(None, gt=0, description="rise faster than this (units per minute) alarms; None = not checked")
    fall: float | None = Field(None, gt=0, description="fall faster than this (units per minute, positive) alarms; None = not checked")
    buffer: int = Field(16, ge=4, le=256, description="ring entries per sensor (cover two spans)")
    min_cover: float = Field(0.5, gt=0, le=1, description="shortest usable reference age, as a fraction of span")
    smooth: float = Field(0.0, ge=0, le=86400, description="EWMA time constant (seconds) applied to readings first; 0 = raw")

    @model_validator(mode="after")
    def _check(self):
        if self.rise is None and self.fall is None:
            raise ValueError("rate_of_change needs rise, fall or both")
        return self


@register
class RateOfChange(Detector):
    name = "rate_of_change"
    Params = RateOfChangeParams
    CONDITIONS = ("normal", "rising_fast", "falling_fast")
    SEVERITY = {"rising_fast": "medium", "falling_fast": "medium"}

    def __init__(self, params: RateOfChangeParams, sensors):
        super().__init__(params, sensors)
        n, R = self.n, params.buffer
        self.ring_t = np.full((n, R), np.nan)
        self.ring_x = np.full((n, R), np.nan)
        self.ring_pos = np.zeros(n, dtype=np.int64)  # next slot to write
        self.sm_x = np.full(n, np.nan)  # smoothed value
        self.sm_t = np.full(n, np.nan)
        self.every = 2.0 * params.span / R  # ring sampling interval
        inv = lambda v: 0.0 if v is None else 1.0 / v  # noqa: E731
        self.inv_limits = np.array([inv(params.rise), -inv(params.fall)])

    @classmethod
    def example_params(cls):
        return {"span": 30.0, "rise": 30.0, "fall": 30.0, "buffer": 8}

    def make_decider(self) -> Decider:
        p: RateOfChangeParams = self.params
        return LevelsDecider(self.n, 2, ordered=False, clear_ratio=p.clear_ratio, on_delay=p.on_delay,
                             off_delay=p.off_delay)

    def _state_arrays(self):
        return {"ring_t": self.ring_t, "ring_x": self.ring_x, "ring_pos": self.ring_pos, "sm_x": self.sm_x,
                "sm_t": self.sm_t}

    def _smoothed(self, idx, t, x):
        tau = self.params.smooth
        if tau <= 0:
            return x
        prev = self.sm_x[idx]
        with np.errstate(invalid="ignore", over="ignore"):
            a = 1.0 - np.exp(-(t - self.sm_t[idx]) / tau)
            v = prev + a * (x - prev)
        return np.where(np.isfinite(prev), v, x)

    def rate(self, idx, t, x):
        """Rate of change (units per minute) of readings against the ring; NaN without a reference."""
        p: RateOfChangeParams = self.params
        v = self._smoothed(idx, t, x)
        rt, rx = self.ring_t[idx], self.ring_x[idx]
        with np.errstate(invalid="ignore"):
            age = t[:, None] - rt
            cand = np.where(age >= p.span, age, np.inf)  # NaN ages (empty slots) are not candidates
            j = np.argmin(cand, axis=1)
            found = np.isfinite(cand[np.arange(len(idx)), j])
            oldest = np.argmax(np.where(np.isnan(age), -np.inf, age), axis=1)
            j = np.where(found, j, oldest)
            rows = np.arange(len(idx))
            ref_age = age[rows, j]
            usable = ref_age >= p.min_cover * p.span
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            rate = (v - rx[rows, j]) / ref_age * 60.0
        return np.where(usable & np.isfinite(rate), rate, np.nan)

    def evaluate_many(self, idx, t, x):
        rate = self.rate(idx, t, x)
        with np.errstate(invalid="ignore", over="ignore"):
            ratios = rate[None, :] * self.inv_limits[:, None]
            score = np.fmax(np.fmax(ratios[0], ratios[1]), 0.0)
        return np.where(np.isnan(rate), np.nan, score), ratios

    def score_many(self, idx, t, x):
        return self.evaluate_many(idx, t, x)[0]

    def observe_many(self, idx, t, x, learn):
        ok = np.isfinite(x)
        if not ok.all():
            idx, t, x = idx[ok], t[ok], x[ok]
        if not len(idx):
            return
        v = self._smoothed(idx, t, x)
        self.sm_x[idx], self.sm_t[idx] = v, t
        R = self.params.buffer
        last = self.ring_t[idx, (self.ring_pos[idx] - 1) % R]
        push = ~(t - last < self.every)  # also when the ring is empty (NaN)
        i = idx[push]
        self.ring_t[i, self.ring_pos[i] % R] = t[push]
        self.ring_x[i, self.ring_pos[i] % R] = v[push]
        self.ring_pos[i] = (self.ring_pos[i] + 1) % R
