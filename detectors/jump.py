"""Jump: a sudden step between consecutive readings of a sensor.

A step that no process can make between two samples is a sensor or transmission problem (a
loose connection, a range switch, a replaced transmitter, a bit error) or a real and sudden
event (a valve slamming, a line breaking). The score is the change from the previous reading in
*robust sigmas of the sensor's own reading-to-reading changes*: ``|x - previous| / sigma``, with
sigma learned from normal readings as a Huber-clipped EWMA of ``|difference|`` (times 1.2533,
the mean-absolute-deviation-to-sigma factor of a normal distribution; clipped at 5 sigma so one
outlier cannot inflate it). The ``jump`` condition starts at ``k`` sigmas, or when the change
reaches ``abs_limit`` in sensor units (which applies from the first pair of readings, before the
sigma is learned).

A jump is one reading: ``off_delay`` holds the condition (default 60 s) so that it is an event an
operator can see rather than a one-sample blip. Changes across a gap longer than ``max_gap``
seconds are not scored: after a long silence a large change is expected. ``direction`` limits
the check to steps up or down. Set ``min_scale`` to the sensor's resolution: a sensor that
repeats the same value for hours would otherwise turn its first one-count change into a huge
score.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from .base import Detector, debounce
from .decide import Decider, LevelsDecider
from .registry import register

MAD_TO_SIGMA = 1.2533  # mean absolute deviation -> sigma (normal distribution)


class JumpParams(debounce(on_delay=None, off_delay=60.0, off_text="seconds the jump condition is held after the step")):
    k: float = Field(8.0, gt=0, le=1000, description="robust sigmas of the differences that count as a jump")
    abs_limit: float | None = Field(None, gt=0, description="absolute change (sensor units) that always counts as a jump")
    direction: Literal["both", "up", "down"] = Field("both", description="which steps to report")
    alpha: float = Field(0.01, gt=0, le=0.5, description="EWMA rate of the difference scale, per reading")
    warmup: int = Field(30, ge=3, le=100_000, description="differences learned before the sigma criterion applies")
    min_scale: float = Field(1e-6, gt=0, description="floor of sigma, in sensor units (set to the resolution)")
    max_gap: float = Field(600.0, gt=0, le=7 * 86400, description="seconds between readings beyond which a change is not scored")


@register
class JumpDetector(Detector):
    name = "jump"
    Params = JumpParams
    CONDITIONS = ("normal", "jump")
    SEVERITY = {"jump": "medium"}
    SENSOR_HEALTH = True

    def __init__(self, params: JumpParams, sensors):
        super().__init__(params, sensors)
        n = self.n
        self.prev_x = np.full(n, np.nan)
        self.prev_t = np.full(n, np.nan)
        self.scale = np.zeros(n)  # EWMA of |difference|
        self.nd = np.zeros(n, dtype=np.int64)  # differences learned

    @classmethod
    def example_params(cls):
        return {"k": 6.0, "abs_limit": 25.0, "warmup": 10, "off_delay": 20.0}

    def make_decider(self) -> Decider:
        return LevelsDecider(self.n, 1, off_delay=self.params.off_delay)

    def _state_arrays(self):
        return {"prev_x": self.prev_x, "prev_t": self.prev_t, "scale": self.scale, "nd": self.nd}

    def _diff(self, idx, t, x):
        with np.errstate(invalid="ignore", over="ignore"):
            d = x - self.prev_x[idx]
            ok = np.isfinite(d) & (t - self.prev_t[idx] <= self.params.max_gap)
        return np.where(ok, d, np.nan)

    def evaluate_many(self, idx, t, x):
        p: JumpParams = self.params
        d = self._diff(idx, t, x)
        if p.direction == "up":
            d = np.where(d > 0, d, 0.0)
        elif p.direction == "down":
            d = np.where(d < 0, d, 0.0)
        ad = np.abs(d)
        with np.errstate(invalid="ignore", over="ignore"):
            z = ad / np.maximum(MAD_TO_SIGMA * self.scale[idx], p.min_scale)
            z = np.where(self.nd[idx] >= p.warmup, z, np.nan)
            ratio = z / p.k
            if p.abs_limit is not None:
                ratio = np.fmax(ratio, ad / p.abs_limit)
        return z, ratio[None, :]

    def score_many(self, idx, t, x):
        return self.evaluate_many(idx, t, x)[0]

    def observe_many(self, idx, t, x, learn):
        p: JumpParams = self.params
        d = self._diff(idx, t, x)
        lr = np.flatnonzero(learn & np.isfinite(d))
        if len(lr):  # learn the scale of normal differences (before moving on: needs the old previous)
            i, ad, nd = idx[lr], np.abs(d[lr]), self.nd[idx[lr]]
            s = self.scale[i]
            ad = np.where(nd >= 10, np.minimum(ad, 5.0 * MAD_TO_SIGMA * s + p.min_scale), ad)
            a = np.maximum(p.alpha, 1.0 / (nd + 1))
            self.scale[i] = s + a * (ad - s)
            self.nd[i] = nd + 1
        ok = np.isfinite(x)
        self.prev_x[idx[ok]] = x[ok]
        self.prev_t[idx[ok]] = t[ok]
