"""Limit alarms: high / high-high / low / low-low with deadband and on/off delays (ISA-18.2).

The score is the measured value itself; the decision is :class:`~.decide.LimitDecider`.
Limits may be given per detector (``high: 10``) and are overridden per sensor by the sensor's
own ``limits`` in the registry, so one detector entry can watch many sensors of one kind.

Every measurement is judged, uncertain and over-range ones included: a gas reading flagged
uncertain is still gas. A reading at or above the top of the sensor's measuring range (a 4-20 mA
loop above 20.5 mA, a value flagged ``over_range``, a saturated instrument) is the most dangerous
reading there is: the true value may be far higher. On a sensor with an upper limit it raises
``over_range`` at once (no on-delay): beyond high and high-high, critical by default. It returns
to ``high_high`` (or lower) with the off-delay once the readings are back within the range.
"""
from __future__ import annotations

import math

import numpy as np
from pydantic import Field, model_validator

from .base import MEASUREMENTS, Detector, debounce
from .decide import Decider, LimitDecider
from .registry import register


class LimitParams(debounce()):
    high: float | None = Field(None, description="high alarm limit (engineering units)")
    high_high: float | None = Field(None, description="high-high (trip) limit, above high")
    low: float | None = Field(None, description="low alarm limit")
    low_low: float | None = Field(None, description="low-low limit, below low")
    deadband: float = Field(0.0, ge=0, description="value must return past the limit by this much to clear")

    @model_validator(mode="after")
    def _ordered(self):
        lv = [("low_low", self.low_low), ("low", self.low), ("high", self.high), ("high_high", self.high_high)]
        given = [(k, v) for k, v in lv if v is not None]
        for (k1, v1), (k2, v2) in zip(given, given[1:]):
            if not v1 < v2:
                raise ValueError(f"limits must be ordered low_low < low < high < high_high, got {k1}={v1} >= {k2}={v2}")
        for k, v in given:
            if not math.isfinite(v):
                raise ValueError(f"{k} must be finite")
        return self


@register
class LimitDetector(Detector):
    name = "limit"
    Params = LimitParams
    CONDITIONS = LimitDecider.CONDITIONS + ("over_range",)
    SEVERITY = {"low": "high", "low_low": "critical", "high": "high", "high_high": "critical", "over_range": "critical"}
    JUDGES = MEASUREMENTS
    OVER_RANGE = "over_range"

    @classmethod
    def example_params(cls):
        return {"low_low": 10.0, "low": 20.0, "high": 75.0, "high_high": 90.0, "deadband": 2.0, "on_delay": 3.0}

    @classmethod
    def absolute_levels(cls, params: LimitParams) -> list[tuple[str, float, bool]]:
        levels = [("low_low", params.low_low, False), ("low", params.low, False), ("high", params.high, True),
                  ("high_high", params.high_high, True)]
        return [(k, v, up) for k, v, up in levels if v is not None]

    def make_decider(self) -> Decider:
        p: LimitParams = self.params
        nan = lambda v: np.nan if v is None else v  # noqa: E731
        return LimitDecider(self.n, high=nan(p.high), high_high=nan(p.high_high), low=nan(p.low),
                            low_low=nan(p.low_low), deadband=p.deadband, on_delay=p.on_delay,
                            off_delay=p.off_delay)

    def over_range(self, idx, x):
        # only where the detector watches the upper side: a low-pressure limit has nothing to say
        d: LimitDecider = self.decider
        upper = ~(np.isnan(d.high[idx]) & np.isnan(d.high_high[idx]))
        return super().over_range(idx, x) & upper

    def score_many(self, idx, t, x):
        return np.asarray(x, dtype=np.float64)
