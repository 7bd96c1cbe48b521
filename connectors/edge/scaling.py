"""Raw device values to engineering units, with a quality and a flag (pure computation, no I/O).

Every channel goes ``raw → raw * scale + offset``. For a 4-20 mA channel that result is the loop
current in mA, and :func:`convert_loop` turns it into engineering units over the sensor's range
(4 mA = range low, 20 mA = range high) and decides the reading's quality and flag from the
current (NAMUR NE43):

=================  ==================  ========================================================
loop current       state               published as
=================  ==================  ========================================================
< 3.6 mA           ``failure``         bad, flag ``signal_failure``, value the range low
3.6 - 3.8 mA       ``under_range``     uncertain, clamped to the range low
3.8 - 20.5 mA      ``measuring``       good (clamped into the range)
20.5 - 21 mA       ``over_range``      uncertain, flag ``over_range``, value the range high
> 21 mA            ``failure``         bad, flag ``over_range``, value the range high
=================  ==================  ========================================================

Over range is not a sensor fault: a gas controller drives its loop to 20.5-22 mA when the gas is
above full scale, the most dangerous reading there is. NE43 calls a current above 21 mA a failure
signal, but a transmitter cannot tell the daemon which of the two it means, so it is published as
over range (bad quality, so statistical detectors ignore it) and the daemon's limit detectors judge
it at or above full scale. Below 3.6 mA there is no measurement (wire break, dead transmitter): the
``signal_failure`` flag makes the daemon alarm at once instead of after a stale timeout.

Gas-detector controllers signal their own states below 4 mA, and vendors differ (e.g. 2 mA
fault, 3 mA inhibit, 3.5 mA calibration): ``bands`` lists them per channel and they win over the
NE43 bands where they overlap. A band's quality is ``bad`` (fault, inhibit: no measurement) or
``uncertain`` (calibration: the value is test gas, not the plant); the daemon stores the reading
and its statistical detectors do not judge it. A band with ``signal_failure: true`` (a fault)
is flagged like a loop below 3.6 mA and alarmed at once; the others (inhibit: out of service on
purpose) go stale if they last.

A channel without a loop may declare its measuring ``range``: a value above it is published as the
range high, uncertain, flagged ``over_range``; below it, as the range low, uncertain. Values are
clamped into the range because the daemon refuses readings outside a sensor's measuring range: a
fault must arrive as a flagged reading, not be dead-lettered as out of range.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Quality = Literal["good", "uncertain", "bad"]
Flag = Literal["over_range", "signal_failure"]

NE43_FAILURE_LOW = 3.6
NE43_MEASURE_LOW = 3.8
NE43_MEASURE_HIGH = 20.5
NE43_FAILURE_HIGH = 21.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SignalBand(_Model):
    """A vendor's status signal: a loop current band with its own meaning."""

    #: lowest current of the band, mA (inclusive)
    low: float = Field(ge=0, le=4)
    #: highest current of the band, mA (exclusive)
    high: float = Field(gt=0, le=4)
    #: what the instrument says, e.g. fault, inhibit, calibration (logged and counted)
    state: str = Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]*$")
    #: quality of the readings published while in this band
    quality: Literal["uncertain", "bad"] = "bad"
    #: the instrument cannot measure (a fault): flag its readings ``signal_failure`` (alarmed at once)
    signal_failure: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "SignalBand":
        if not self.low < self.high:
            raise ValueError(f"band low ({self.low}) must be below high ({self.high})")
        return self


class Loop(_Model):
    """A 4-20 mA channel: the scaled raw value is the loop current in mA."""

    #: engineering value at 4 mA and at 20 mA (the transmitter's range, e.g. [0, 100] ppm)
    range: tuple[float, float]
    #: vendor status bands below 4 mA; they win over the NE43 bands where they overlap
    bands: list[SignalBand] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def _check(self) -> "Loop":
        if not (math.isfinite(self.range[0]) and math.isfinite(self.range[1]) and self.range[0] < self.range[1]):
            raise ValueError(f"range must be [low, high] with low < high (got {list(self.range)})")
        bands = sorted(self.bands, key=lambda b: b.low)
        for a, b in zip(bands, bands[1:]):
            if b.low < a.high:
                raise ValueError(f"bands {a.state!r} and {b.state!r} overlap")
        return self


@dataclass(frozen=True, slots=True)
class Converted:
    value: float
    quality: Quality
    state: str  # measuring, under_range, over_range, failure or a vendor band's state
    flag: Flag | None = None


def linear(raw: float, scale: float = 1.0, offset: float = 0.0) -> float:
    return raw * scale + offset


def convert_loop(ma: float, loop: Loop) -> Converted:
    """Loop current (mA) to engineering units over ``loop.range`` with the quality it implies."""
    lo, hi = loop.range
    if not math.isfinite(ma):
        return Converted(lo, "bad", "failure", "signal_failure")
    value = lo + (ma - 4.0) * (hi - lo) / 16.0
    clamped = min(max(value, lo), hi)
    for band in loop.bands:
        if band.low <= ma < band.high:
            return Converted(lo, band.quality, band.state, "signal_failure" if band.signal_failure else None)
    if ma < NE43_FAILURE_LOW:
        return Converted(lo, "bad", "failure", "signal_failure")
    if ma < NE43_MEASURE_LOW:
        return Converted(lo, "uncertain", "under_range")
    if ma > NE43_FAILURE_HIGH:
        return Converted(hi, "bad", "failure", "over_range")
    if ma > NE43_MEASURE_HIGH:
        return Converted(hi, "uncertain", "over_range", "over_range")
    return Converted(clamped, "good", "measuring")


class Conversion(_Model):
    """How a channel's raw value becomes a reading; shared by every source kind."""

    #: engineering value = raw * scale + offset (before the loop conversion, if any)
    scale: float = 1.0
    #: added after scaling
    offset: float = 0.0
    #: the scaled value is a 4-20 mA loop current: convert it over this range, with quality
    loop: Loop | None = None
    #: measuring range [low, high] of a channel without a loop (a loop's is ``loop.range``): values
    #: beyond it are clamped, uncertain, and flagged ``over_range`` above it
    range: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _one_range(self) -> "Conversion":
        r = self.range
        if r is not None:
            if not (math.isfinite(r[0]) and math.isfinite(r[1]) and r[0] < r[1]):
                raise ValueError(f"range must be [low, high] with low < high (got {list(r)})")
            if self.loop is not None and tuple(r) != tuple(self.loop.range):
                raise ValueError(f"range {list(r)} differs from loop.range {list(self.loop.range)}: give one of them")
        return self

    @property
    def measuring_range(self) -> tuple[float, float] | None:
        """The sensor's measuring range as this channel knows it (None: not declared)."""
        return tuple(self.loop.range) if self.loop is not None else self.range

    def convert(self, raw: float, quality: Quality = "good", flag: Flag | None = None) -> Converted:
        """``quality`` and ``flag`` are what the device itself reported; the worse quality wins, and
        a signal failure wins over over range."""
        x = linear(raw, self.scale, self.offset)
        if self.loop is not None:
            c = convert_loop(x, self.loop)
        elif not math.isfinite(x):  # without a range there is no value to publish it with (skipped, counted)
            c = Converted(x if self.range is None else self.range[0], "bad", "failure", "signal_failure")
        elif self.range is not None and x > self.range[1]:
            c = Converted(self.range[1], "uncertain", "over_range", "over_range")
        elif self.range is not None and x < self.range[0]:
            c = Converted(self.range[0], "uncertain", "under_range")
        else:
            c = Converted(x, "good", "measuring")
        worst = max(quality, c.quality, key=_RANK.__getitem__)
        f = "signal_failure" if "signal_failure" in (flag, c.flag) else flag or c.flag
        return c if (worst, f) == (c.quality, c.flag) else Converted(c.value, worst, c.state, f)


_RANK = {"good": 0, "uncertain": 1, "bad": 2}
