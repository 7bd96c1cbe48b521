"""Flatline: a sensor stuck on one value although it normally varies.

A frozen transmitter, a PLC holding the last good value after a communication fault, or a
gateway repeating a cached reading all look like a perfectly steady process -- which no real
analog measurement is for long. The detector tracks, per sensor, the current *run*: the stretch
of readings whose max - min has stayed within ``tolerance`` (0: bit-identical repeats, the usual
signature of a frozen value). The score is the run's duration divided by ``window`` seconds;
the ``flatline`` condition starts at 1.0, i.e. after ``window`` seconds without any change larger
than ``tolerance``, and clears with the first reading that leaves the band.

"Normally varies": a sensor only counts once its band has been broken ``min_changes`` times, so
a channel that is legitimately constant (a spare, a switch, a gas detector in clean air reading
exactly 0 with a coarse resolution) never alarms. Raise ``tolerance`` to the sensor's noise level
to catch a sensor that still jitters by one count while being stuck; keep it 0 otherwise.

Runs are tracked with O(1) state per sensor (band low, band high, start time); a new run starts
at the reading that broke the band, so the measured duration errs on the short side by at most
one sampling interval. Runs see every reading, flagged or not.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from .base import Detector, debounce
from .decide import Decider, ThresholdDecider
from .registry import register


class FlatlineParams(debounce(on_delay=None)):
    window: float = Field(600.0, ge=1, le=7 * 86400, description="seconds without change before the flatline condition")
    tolerance: float = Field(0.0, ge=0, description="max - min at or below this counts as no change (sensor units)")
    min_changes: int = Field(20, ge=1, le=1_000_000, description="changes seen before a sensor counts as one that varies")
    min_readings: int = Field(3, ge=2, le=100_000, description="readings a run needs before it can count as stuck")


@register
class FlatlineDetector(Detector):
    name = "flatline"
    Params = FlatlineParams
    CONDITIONS = ("normal", "flatline")
    SEVERITY = {"flatline": "medium"}
    SENSOR_HEALTH = True

    def __init__(self, params: FlatlineParams, sensors):
        super().__init__(params, sensors)
        n = self.n
        self.lo = np.full(n, np.nan)
        self.hi = np.full(n, np.nan)
        self.start = np.full(n, np.nan)  # time of the run's first reading
        self.runlen = np.zeros(n, dtype=np.int64)  # readings in the run
        self.changes = np.zeros(n, dtype=np.int64)  # band breaks seen

    @classmethod
    def example_params(cls):
        return {"window": 120.0, "min_changes": 5}

    def make_decider(self) -> Decider:
        return ThresholdDecider(self.n, [1.0], off_delay=self.params.off_delay)

    def _state_arrays(self):
        return {"lo": self.lo, "hi": self.hi, "start": self.start, "runlen": self.runlen, "changes": self.changes}

    def _next(self, idx, x):
        """Band after adding ``x`` and whether ``x`` breaks (or starts) the run."""
        with np.errstate(invalid="ignore"):
            lo, hi = np.fmin(self.lo[idx], x), np.fmax(self.hi[idx], x)
            brk = ~(hi - lo <= self.params.tolerance) | np.isnan(self.start[idx])
        return lo, hi, brk

    def score_many(self, idx, t, x):
        p: FlatlineParams = self.params
        _, _, brk = self._next(idx, x)
        dur = t - self.start[idx]
        ok = ~brk & (self.runlen[idx] + 1 >= p.min_readings) & (self.changes[idx] >= p.min_changes)
        return np.where(ok & np.isfinite(x), dur / p.window, 0.0)

    def observe_many(self, idx, t, x, learn):
        ok = np.isfinite(x)
        if not ok.all():
            idx, t, x = idx[ok], t[ok], x[ok]
        lo, hi, brk = self._next(idx, x)
        self.changes[idx] += brk & ~np.isnan(self.start[idx])
        self.start[idx] = np.where(brk, t, self.start[idx])
        self.lo[idx] = np.where(brk, x, lo)
        self.hi[idx] = np.where(brk, x, hi)
        self.runlen[idx] = np.where(brk, 1, self.runlen[idx] + 1)
