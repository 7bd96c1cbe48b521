"""Fault signalling of 4-20 mA transmitters (NAMUR NE43 and gas-detector conventions).

A 4-20 mA transmitter signals its own state *through the loop current*: 4-20 mA is the
measurement, and currents outside it carry meaning. NAMUR NE43 reserves 3.8-20.5 mA for
measurement (including slight under/over-range) and <= 3.6 mA or >= 21 mA for failure signals;
fixed gas detectors add conventions of their own, e.g. about 3 mA for a fault, 3.5-3.75 mA while
in calibration or maintenance (inhibit), and 0-2 mA for a dead instrument or an open loop. The
default bands:

==================  =====================  ===============
loop current        condition              default severity
==================  =====================  ===============
< 2.4 mA            ``failure``            high
2.4 - 3.6 mA        ``fault``              high
3.5 - 3.75 mA       ``maintenance``        low  (wins over fault where they overlap)
3.75 - 21 mA        normal
> 21 mA             ``over_range``         high
==================  =====================  ===============

A fault in a gas detector means no gas protection at that point: it must reach an operator as
surely as a gas alarm does.

``signal: mA`` -- the reading *is* the loop current. ``signal: scaled`` -- the reading is in
engineering units (the PLC scaled 4-20 mA to the sensor's range), and is converted back with the
sensor's registry range (4 mA = range min, 20 mA = range max). Many systems also write a
*sentinel* on a fault (-9999, -1): list them in ``sentinels`` (matched exactly) to report them as
``fault``; ``nan_is_fault`` does the same for NaN (some gateways send NaN for bad quality).

Score: how far the current is outside NE43's measurement band 3.8-20.5 mA, in mA (0 inside).
Decision: :class:`~.decide.BandDecider` on the current, with a deadband in mA.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from .base import Detector, SensorInfo, debounce
from .decide import BandDecider, Decider
from .registry import register

NE43_LOW, NE43_HIGH = 3.8, 20.5  # NAMUR NE43 measurement-information band, mA


class FaultCodeParams(debounce()):
    signal: Literal["mA", "scaled"] = Field("mA", description="mA: value is the loop current; scaled: engineering units over the sensor's range")
    failure_below: float = Field(2.4, ge=0, le=4, description="mA below which the instrument has failed (dead, open loop)")
    fault_below: float = Field(3.6, ge=0, le=4, description="mA below which the transmitter signals a fault (NE43: <= 3.6)")
    maintenance_low: float = Field(3.5, ge=0, le=4, description="calibration/maintenance band, low end (mA)")
    maintenance_high: float = Field(3.75, ge=0, le=4, description="calibration/maintenance band, high end (mA)")
    over_range_above: float = Field(21.0, ge=20, le=30, description="mA above which the loop is over-range (NE43: >= 21 = failure)")
    sentinels: list[float] = Field(default_factory=list, max_length=16, description="readings that mean fault, matched exactly")
    nan_is_fault: bool = Field(False, description="report NaN readings as fault")
    deadband: float = Field(0.05, ge=0, le=1, description="mA a reading must move back past a band edge before it clears")

    @model_validator(mode="after")
    def _check(self):
        if not self.failure_below <= self.maintenance_low < self.maintenance_high:
            raise ValueError("bands must be ordered failure_below <= maintenance_low < maintenance_high "
                             f"(got {self.failure_below}, {self.maintenance_low}, {self.maintenance_high})")
        if not self.failure_below <= self.fault_below:
            raise ValueError(f"fault_below ({self.fault_below}) must not be below failure_below ({self.failure_below})")
        return self


@register
class FaultCodeDetector(Detector):
    name = "fault_code"
    Params = FaultCodeParams
    CONDITIONS = ("normal", "maintenance", "over_range", "fault", "failure")
    SEVERITY = {"maintenance": "low", "over_range": "high", "fault": "high", "failure": "high"}
    SENSOR_HEALTH = True

    def __init__(self, params: FaultCodeParams, sensors):
        super().__init__(params, sensors)
        self.rmin = np.array([s.range_min for s in self.sensors], dtype=np.float64)
        self.span = np.array([s.range_max - s.range_min for s in self.sensors], dtype=np.float64)
        self.sentinels = np.array(params.sentinels, dtype=np.float64)
        edges, codes = self.bands(params)
        # a current that reads as "fault", for sentinels and NaN (-1 mA = failure if no fault band)
        lo = np.r_[-np.inf, edges]
        faults = np.flatnonzero(codes == self.CONDITIONS.index("fault"))
        self._fault_mA = float(lo[faults[0]]) if len(faults) else -1.0

    @classmethod
    def bands(cls, p: FaultCodeParams) -> tuple[np.ndarray, np.ndarray]:
        """Band edges (mA, ascending) and the code of each interval between them."""
        code = {c: i for i, c in enumerate(cls.CONDITIONS)}
        mh = np.nextafter(p.maintenance_high, np.inf)  # the band includes its high end
        over = np.nextafter(p.over_range_above, np.inf)  # over-range means strictly above
        edges = sorted({p.failure_below, p.maintenance_low, mh, p.fault_below, over})

        def classify(v: float) -> int:  # every rule is "v < edge": constant on [edge_i, edge_i+1)
            if v < p.failure_below:
                return code["failure"]
            if p.maintenance_low <= v < mh:
                return code["maintenance"]
            if v < p.fault_below:
                return code["fault"]
            if v >= over:
                return code["over_range"]
            return 0

        codes = [classify(edges[0] - 1.0)] + [classify(e) for e in edges]
        return np.array(edges), np.array(codes, dtype=np.int8)

    @classmethod
    def example_params(cls):
        return {"signal": "scaled", "sentinels": [-9999.0], "deadband": 0.02}

    @classmethod
    def example_sensors(cls, n: int = 4):
        return [SensorInfo(id=f"t{i}", kind="gas", unit="ppm", range_min=0.0, range_max=100.0, area="A")
                for i in range(n)]

    def make_decider(self) -> Decider:
        p: FaultCodeParams = self.params
        edges, codes = self.bands(p)
        return BandDecider(self.n, edges, codes, deadband=p.deadband, on_delay=p.on_delay,
                           off_delay=p.off_delay)

    def current(self, idx, x):
        """Loop current (mA) of readings, with sentinels (and NaN if configured) mapped to a fault current."""
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            ma = x if self.params.signal == "mA" else 4.0 + 16.0 * (x - self.rmin[idx]) / self.span[idx]
        if len(self.sentinels):
            ma = np.where(np.isin(x, self.sentinels), self._fault_mA, ma)
        if self.params.nan_is_fault:
            ma = np.where(np.isnan(x), self._fault_mA, ma)
        return ma

    def evaluate_many(self, idx, t, x):
        ma = self.current(idx, x)
        with np.errstate(invalid="ignore"):
            score = np.maximum(np.maximum(NE43_LOW - ma, ma - NE43_HIGH), 0.0)
        return score, ma

    def score_many(self, idx, t, x):
        return self.evaluate_many(idx, t, x)[0]
