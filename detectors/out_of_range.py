"""Out of range: a reading outside the instrument's measuring range, pegged at one end, or no signal.

The measuring range comes from each sensor's registry entry (``range: [min, max]``), so one
detector entry covers every sensor of a kind. A reading beyond the range is not a measurement:
the transmitter is over-ranged, the loop is faulty or the scaling is wrong (``below_range`` /
``above_range``). A reading within ``saturation_high`` (a fraction of the span) of the top end is
*saturated*: the instrument reads its maximum, and the true value -- a gas concentration, a
pressure -- may be far higher (``saturated_high``). The bottom end likewise (``saturated_low``),
off by default since many sensors rest at their zero (gas detectors in clean air).

A reading at or above the top of the range -- the instrument's full scale, or flagged
``over_range`` on the wire -- is ``above_range`` at once (no on-delay). ``tolerance`` (fraction of
span) allows for the usual slight under-range of transmitters (a 4-20 mA loop reads down to 3.8
mA: -1.25 % of span) before a reading counts as below the range. A reading exactly at ``min`` is
in range.

A reading flagged ``signal_failure`` (a 4-20 mA loop below 3.6 mA: wire break, dead transmitter)
carries no measurement; it reaches the detector as NaN and raises ``signal_failure`` at once,
without waiting for a stale timeout: a gas detector without a signal protects nobody. The
condition clears with the first reading that is a measurement again (after ``off_delay``).

Score: distance from mid-range in half-spans (0 at mid-range, 1 at either end, above 1 outside).
Decision: ISA limits on the position within the range (:class:`~.decide.LimitDecider` with
``source="x"``), with ``deadband`` (fraction of span) and on/off delays.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from .base import Detector, debounce
from .decide import Decider, LimitDecider
from .registry import register


class OutOfRangeParams(debounce()):
    tolerance: float = Field(0.0, ge=0, le=0.5, description="fraction of span below the range that still counts as in range")
    saturation_low: float = Field(0.0, ge=0, lt=0.5, description="fraction of span at the bottom that counts as saturated (0 = off)")
    saturation_high: float = Field(0.0, ge=0, lt=0.5, description="fraction of span at the top that counts as saturated (0 = off)")
    deadband: float = Field(0.005, ge=0, le=0.1, description="fraction of span a reading must come back by to clear")

    @model_validator(mode="after")
    def _check(self):
        if self.saturation_low + self.saturation_high >= 1:
            raise ValueError("saturation_low + saturation_high must be below 1")
        return self


@register
class OutOfRangeDetector(Detector):
    name = "out_of_range"
    Params = OutOfRangeParams
    # codes follow LimitDecider: 1 low, 2 low_low, 3 high, 4 high_high; 5 comes from the flag
    CONDITIONS = ("normal", "saturated_low", "below_range", "saturated_high", "above_range", "signal_failure")
    SEVERITY = {"saturated_low": "medium", "below_range": "high", "saturated_high": "high", "above_range": "high",
                "signal_failure": "high"}
    SENSOR_HEALTH = True
    JUDGES = frozenset({"good", "uncertain", "over_range", "signal_failure"})
    OVER_RANGE = "above_range"

    def __init__(self, params: OutOfRangeParams, sensors):
        super().__init__(params, sensors)
        self.rmin = np.array([s.range_min for s in self.sensors], dtype=np.float64)
        span = np.array([s.range_max - s.range_min for s in self.sensors], dtype=np.float64)
        self.span = np.where(np.isfinite(span) & (span > 0), span, np.nan)  # NaN: no usable range

    @classmethod
    def example_params(cls):
        return {"tolerance": 0.01, "saturation_high": 0.02, "saturation_low": 0.01, "on_delay": 2.0}

    def make_decider(self) -> Decider:
        p: OutOfRangeParams = self.params
        return LimitDecider(
            self.n, source="x", deadband=p.deadband, on_delay=p.on_delay, off_delay=p.off_delay,
            low=p.saturation_low if p.saturation_low > 0 else np.nan,
            low_low=np.nextafter(-p.tolerance, -np.inf),  # strictly below the range
            high=1.0 - p.saturation_high if p.saturation_high > 0 else np.nan,
            high_high=np.nextafter(1.0 + p.tolerance, np.inf))  # strictly above it

    def position(self, idx, x):
        """Position of readings within their sensor's range: 0 at min, 1 at max."""
        with np.errstate(invalid="ignore", over="ignore"):
            return (np.asarray(x, dtype=np.float64) - self.rmin[idx]) / self.span[idx]

    def evaluate_many(self, idx, t, x):
        pos = self.position(idx, x)
        with np.errstate(invalid="ignore", over="ignore"):
            return np.abs(2.0 * pos - 1.0), pos

    def score_many(self, idx, t, x):
        return self.evaluate_many(idx, t, x)[0]

    def forced(self, idx, x):
        over = super().forced(idx, x)
        failed = np.isnan(np.asarray(x, dtype=np.float64))
        if not failed.any():
            return over
        code = np.int8(self.CONDITIONS.index("signal_failure"))
        return np.where(failed, code, np.int8(0) if over is None else over).astype(np.int8)
