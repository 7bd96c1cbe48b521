"""Flammable gas in %LEL: two-level alarm (warning, then action) with standard set-point presets.

Catalytic-bead and infrared detectors for flammables read in percent of the lower explosive
limit. Fixed installations alarm on the instantaneous reading at two set points: a first alarm
(investigate, start extra ventilation) and a second (evacuate, trip ignition sources). The usual
pairs are ``10/20``, ``10/40`` and ``20/40`` %LEL (:data:`.presets_gas.LEL_PRESETS`); explicit
``alarm1`` / ``alarm2`` override them.

Score: the reading in %LEL. Conditions ``lel_alarm1`` < ``lel_alarm2`` (ordered, so the second
implies the first), each clearing ``deadband`` %LEL below its set point
(:class:`~.decide.LevelsDecider` on the ratios to the set points). Sensors must read in %LEL:
another unit is refused when the detector is built (a ppm methane channel compared with 10 would
alarm at 10 ppm, or, the other way round, never).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from .base import MEASUREMENTS, Detector, SensorInfo, debounce
from .decide import Decider, LevelsDecider
from .presets_gas import LEL_PRESETS, is_lel_unit
from .registry import register


class LelParams(debounce(longest_on=600)):
    preset: Literal["10/20", "10/40", "20/40"] | None = Field(
        None, description="first/second alarm set points in %LEL")
    alarm1: float | None = Field(None, gt=0, lt=100, description="first alarm, %LEL (overrides the preset)")
    alarm2: float | None = Field(None, gt=0, le=100, description="second alarm, %LEL (overrides the preset)")
    deadband: float = Field(2.0, ge=0, le=20, description="%LEL below a set point before its alarm clears")

    @model_validator(mode="after")
    def _check(self):
        a1, a2 = self.set_points()
        if a1 is None or a2 is None:
            raise ValueError("lel needs a preset, or both alarm1 and alarm2")
        if not a1 < a2:
            raise ValueError(f"alarm1 ({a1}) must be below alarm2 ({a2})")
        if self.deadband >= a1:
            raise ValueError(f"deadband ({self.deadband}) must be below alarm1 ({a1})")
        return self

    def set_points(self) -> tuple[float | None, float | None]:
        pre = LEL_PRESETS[self.preset] if self.preset else (None, None)
        return (self.alarm1 if self.alarm1 is not None else pre[0],
                self.alarm2 if self.alarm2 is not None else pre[1])


@register
class LelDetector(Detector):
    name = "lel"
    Params = LelParams
    CONDITIONS = ("normal", "lel_alarm1", "lel_alarm2", "over_range")
    SEVERITY = {"lel_alarm1": "high", "lel_alarm2": "critical", "over_range": "critical"}
    JUDGES = MEASUREMENTS
    OVER_RANGE = "over_range"

    def __init__(self, params: LelParams, sensors):
        super().__init__(params, sensors)
        bad = [s.id for s in self.sensors if not is_lel_unit(s.unit)]
        if bad:
            raise ValueError(f"lel watches sensors reading in %LEL; {', '.join(bad)} read in other units")
        self.set_points = np.array(params.set_points(), dtype=np.float64)

    @classmethod
    def absolute_levels(cls, params: LelParams) -> list[tuple[str, float, bool]]:
        a1, a2 = params.set_points()
        return [(k, v, True) for k, v in (("alarm1", a1), ("alarm2", a2)) if v is not None]

    @classmethod
    def example_params(cls):
        return {"alarm1": 60.0, "alarm2": 80.0, "deadband": 5.0, "on_delay": 5.0}

    @classmethod
    def example_sensors(cls, n: int = 4):
        return [SensorInfo(id=f"f{i}", kind="gas", unit="%LEL", range_min=0.0, range_max=100.0, area="A")
                for i in range(n)]

    def make_decider(self) -> Decider:
        p: LelParams = self.params
        # the absolute deadband is folded into the ratios (evaluate_many), so no clear ratio here
        return LevelsDecider(self.n, 2, ordered=True, clear_ratio=1.0, on_delay=p.on_delay, off_delay=p.off_delay)

    def evaluate_many(self, idx, t, x):
        x = np.asarray(x, dtype=np.float64)
        score = np.where(np.isfinite(x), x, np.nan)
        held = self.decider.code[idx]
        db = self.params.deadband
        # a held level stays while x >= set point - deadband: shift its set point down by the deadband
        sp = self.set_points[:, None] - np.where(held[None, :] >= np.array([[1], [2]]), db, 0.0)
        with np.errstate(invalid="ignore"):
            ratios = score[None, :] / sp
        return score, ratios

    def score_many(self, idx, t, x):
        return self.evaluate_many(idx, t, x)[0]
