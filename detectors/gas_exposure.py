"""Toxic-gas exposure: 8-hour TWA, 15-minute STEL and instantaneous IDLH, per sensor.

A fixed gas detector at a work position stands in for the personal monitor of whoever works
there. Occupational limits are *averages over time*, not thresholds on single readings: the TWA
is the exposure integrated over the averaging time (ACGIH: 8 hours) divided by it, the STEL the
same over 15 minutes, and only IDLH is an instantaneous ceiling. ``preset: H2S`` (see
:mod:`.presets_gas`) fills in the limits; explicit ``twa`` / ``stel`` / ``idlh`` override them.

Exact time weighting with irregular sampling
    Each reading's concentration is held until the next reading (sample-and-hold), but for at
    most ``max_hold`` seconds: a sensor that falls silent stops contributing instead of
    extrapolating its last value for hours. As in the ACGIH/OSHA formula
    ``TWA = sum(C_i * T_i) / 8 h``, time without data counts as zero exposure, and a sensor that
    has run for less than the averaging time is averaged over the full time all the same.

O(1) per reading: a ring of buckets per sensor
    The integral of concentration x seconds is kept in a ring of ``B + 1`` buckets per sensor
    (default 96 five-minute buckets for the TWA, 15 one-minute buckets for the STEL), with the
    ring's running total. A held interval is added to the one or two buckets it falls in; a
    window ending at time ``t`` takes the full buckets plus the part of the oldest bucket still
    inside the window (assuming uniform exposure within that one bucket), so the window is
    exact to within one bucket's non-uniformity. Moving into a new bucket clears the expired
    ones and recomputes the total exactly (so rounding never accumulates): that is O(B) once per
    bucket per sensor, amortised O(1) per reading. Readings within one bucket cost a handful of
    array operations for all sensors of a round.

Score and conditions
    The score is the *exposure index*: the highest of TWA / TWA-limit, STEL / STEL-limit and
    reading / IDLH (1.0 = at a limit). Conditions are ordered ``twa_exceeded`` < ``stel_exceeded``
    < ``idlh`` (:class:`~.decide.LevelsDecider`): a condition starts when its ratio reaches 1 and
    clears below ``clear_ratio``. The integrals see every reading, flagged or not: exposure during
    an alarm is still exposure. Uncertain and over-range readings are judged too; an over-range
    reading counts as the top of the sensor's range (a lower bound of the exposure) and raises
    ``over_range`` at once, beyond IDLH.

Units: preset limits are in ppm. Sensors watched with a preset must read in ppm or ppb (ppb is
converted); any other unit is refused when the detector is built, since a preset applied to a
%LEL or mg/m3 channel would be silently wrong by orders of magnitude. Without a preset the limits
are in the sensors' own unit. Readings are clipped to [0, 1e15] before integration (negative zero
drift is no exposure; absurd values must not overflow the integral).
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from .base import MEASUREMENTS, Detector, SensorInfo, debounce
from .decide import Decider, LevelsDecider
from .presets_gas import EXPOSURE_PRESETS, PPM_FACTORS, exposure_preset
from .registry import register

_EMPTY = -(2 ** 40)  # bucket id of a ring that has never been written
_CLIP = 1e15


class GasExposureParams(debounce(clear_ratio=0.9)):
    preset: Literal["H2S", "NH3", "Cl2"] | None = Field(
        None, description="gas whose ACGIH TWA/STEL and NIOSH IDLH limits to use (presets_gas.py)")
    twa: float | None = Field(None, gt=0, description="8-h TWA limit (overrides the preset; sensor units without one)")
    stel: float | None = Field(None, gt=0, description="15-min STEL limit (overrides the preset)")
    idlh: float | None = Field(None, gt=0, description="instantaneous IDLH ceiling (overrides the preset)")
    twa_hours: float = Field(8.0, ge=0.25, le=24, description="TWA averaging time, hours")
    twa_buckets: int = Field(96, ge=4, le=1440, description="buckets in the TWA ring (resolution = twa_hours / buckets)")
    stel_minutes: float = Field(15.0, ge=1, le=240, description="STEL averaging time, minutes")
    stel_buckets: int = Field(15, ge=3, le=240, description="buckets in the STEL ring")
    max_hold: float = Field(300.0, gt=0, le=3600, description="seconds a reading counts for at most, if no newer one comes")

    @model_validator(mode="after")
    def _check(self):
        lim = self.limits()
        if all(v is None for v in lim.values()):
            raise ValueError("gas_exposure needs a preset or at least one of twa, stel, idlh")
        given = [(k, v) for k, v in lim.items() if v is not None]
        for (k1, v1), (k2, v2) in zip(given, given[1:]):
            if not v1 < v2:
                raise ValueError(f"limits must be ordered twa < stel < idlh, got {k1}={v1} >= {k2}={v2}")
        for k, v in given:
            if not math.isfinite(v):
                raise ValueError(f"{k} must be finite")
        if self.max_hold > self.stel_minutes * 60:
            raise ValueError(f"max_hold ({self.max_hold} s) must not exceed the STEL window "
                             f"({self.stel_minutes * 60:g} s)")
        return self

    def limits(self) -> dict[str, float | None]:
        """Effective limits: explicit values, else the preset's, else None (not monitored)."""
        pre = exposure_preset(self.preset) if self.preset else None
        return {"twa": self.twa if self.twa is not None else (pre.twa if pre else None),
                "stel": self.stel if self.stel is not None else (pre.stel if pre else None),
                "idlh": self.idlh if self.idlh is not None else (pre.idlh if pre else None)}


# --- the bucket ring, as functions on (sums, total, top) arrays ---------------------------------
def _window_integral(sums, total, top, rows, t, w, B):
    """Integral over the window ``[t - B*w, t]`` of the committed buckets of ``rows``."""
    S = B + 1
    k = np.floor(t / w).astype(np.int64)
    phi = t / w - k  # elapsed fraction of the current bucket
    tp = top[rows]
    d = k - tp
    out = total[rows] - phi * sums[rows, (tp + 1) % S]  # d == 0: oldest bucket partly out
    one = np.flatnonzero(d == 1)
    if len(one):
        r, tq = rows[one], tp[one]
        out[one] = total[r] - sums[r, (tq + 1) % S] - phi[one] * sums[r, (tq + 2) % S]
    many = np.flatnonzero(d >= 2)
    if len(many):
        r, tq = rows[many], tp[many]
        ids = tq[:, None] - ((tq[:, None] - np.arange(S)[None, :]) % S)  # bucket id held by each slot
        lo = (k[many] - B)[:, None]
        wgt = np.where(ids > lo, 1.0, np.where(ids == lo, 1.0 - phi[many][:, None], 0.0))
        out[many] = (sums[r] * wgt).sum(axis=1)
    return out


def _commit(sums, total, top, rows, t_prev, x_prev, t_new, hold, w, B):
    """Advance the rings of ``rows`` to ``t_new`` and add ``x_prev`` held from ``t_prev``."""
    S = B + 1
    k = np.floor(t_new / w).astype(np.int64)
    tp = top[rows]
    adv = np.flatnonzero(k > tp)
    if len(adv):
        r = rows[adv]
        n_clear = np.minimum(k[adv] - tp[adv], S)
        clear = ((np.arange(S)[None, :] - (tp[adv] + 1)[:, None]) % S) < n_clear[:, None]
        s = np.where(clear, 0.0, sums[r])
        sums[r] = s
        total[r] = s.sum(axis=1)
        top[r] = k[adv]
    has = np.flatnonzero(np.isfinite(t_prev) & np.isfinite(x_prev))
    if not len(has):
        return
    r, t0, val, kk = rows[has], t_prev[has], x_prev[has], k[has]
    t1 = np.minimum(t_new[has], t0 + hold)
    a0 = np.floor(t0 / w).astype(np.int64)
    span = np.floor(t1 / w).astype(np.int64) - a0
    for j in range(int(span.max()) + 1):
        sel = np.flatnonzero((span >= j) & (a0 + j >= kk - B))
        if not len(sel):
            continue
        bid = a0[sel] + j
        piece = val[sel] * np.maximum(np.minimum(t1[sel], (bid + 1) * w) - np.maximum(t0[sel], bid * w), 0.0)
        sums[r[sel], bid % S] += piece
        total[r[sel]] += piece


@register
class GasExposure(Detector):
    name = "gas_exposure"
    Params = GasExposureParams
    CONDITIONS = ("normal", "twa_exceeded", "stel_exceeded", "idlh", "over_range")
    SEVERITY = {"twa_exceeded": "medium", "stel_exceeded": "high", "idlh": "critical", "over_range": "critical"}
    JUDGES = MEASUREMENTS
    OVER_RANGE = "over_range"

    def __init__(self, params: GasExposureParams, sensors):
        super().__init__(params, sensors)
        p = params
        lim = p.limits()
        self.limit = np.array([np.nan if lim[k] is None else lim[k] for k in ("twa", "stel", "idlh")])
        self.factor = np.ones(self.n)
        if p.preset:
            unit = EXPOSURE_PRESETS[p.preset].unit
            bad = [s.id for s in self.sensors if s.unit.strip().lower() not in PPM_FACTORS]
            if bad:
                raise ValueError(f"gas_exposure preset {p.preset!r} is in {unit}; sensors {', '.join(bad)} "
                                 f"read in other units (allowed: {', '.join(PPM_FACTORS)})")
            self.factor = np.array([PPM_FACTORS[s.unit.strip().lower()] for s in self.sensors])
        self.twa_win, self.twa_B = p.twa_hours * 3600.0, p.twa_buckets
        self.twa_w = self.twa_win / self.twa_B
        self.stel_win, self.stel_B = p.stel_minutes * 60.0, p.stel_buckets
        self.stel_w = self.stel_win / self.stel_B
        n = self.n
        self.prev_t = np.full(n, np.nan)
        self.prev_x = np.full(n, np.nan)
        self.twa_sum = np.zeros((n, self.twa_B + 1))
        self.twa_tot = np.zeros(n)
        self.twa_top = np.full(n, _EMPTY, dtype=np.int64)
        self.stel_sum = np.zeros((n, self.stel_B + 1))
        self.stel_tot = np.zeros(n)
        self.stel_top = np.full(n, _EMPTY, dtype=np.int64)

    @classmethod
    def example_params(cls):
        return {"twa": 30.0, "stel": 70.0, "idlh": 90.0, "twa_hours": 1.0, "stel_minutes": 5.0}

    @classmethod
    def example_sensors(cls, n: int = 4):
        return [SensorInfo(id=f"g{i}", kind="gas", unit="ppm", range_min=0.0, range_max=100.0, area="A")
                for i in range(n)]

    def make_decider(self) -> Decider:
        p: GasExposureParams = self.params
        return LevelsDecider(self.n, 3, ordered=True, clear_ratio=p.clear_ratio, on_delay=p.on_delay,
                             off_delay=p.off_delay)

    def _state_arrays(self):
        return {"prev_t": self.prev_t, "prev_x": self.prev_x,
                "twa_sum": self.twa_sum, "twa_tot": self.twa_tot, "twa_top": self.twa_top,
                "stel_sum": self.stel_sum, "stel_tot": self.stel_tot, "stel_top": self.stel_top}

    def averages(self, idx: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TWA and STEL (in ppm, or sensor units without a preset) of sensors ``idx`` at times ``t``."""
        idx = np.asarray(idx, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        tp, xp = self.prev_t[idx], self.prev_x[idx]
        ok = np.isfinite(tp) & np.isfinite(xp)
        tp0, xp0 = np.where(ok, tp, t), np.where(ok, xp, 0.0)
        end = np.minimum(t, tp0 + self.params.max_hold)

        def pending(win):  # the last reading, held up to now, not yet committed to the ring
            return xp0 * np.maximum(end - np.maximum(tp0, t - win), 0.0)

        twa = (_window_integral(self.twa_sum, self.twa_tot, self.twa_top, idx, t, self.twa_w, self.twa_B)
               + pending(self.twa_win)) / self.twa_win
        stel = (_window_integral(self.stel_sum, self.stel_tot, self.stel_top, idx, t, self.stel_w, self.stel_B)
                + pending(self.stel_win)) / self.stel_win
        return twa, stel

    def evaluate_many(self, idx, t, x):
        with np.errstate(invalid="ignore", over="ignore"):
            twa, stel = self.averages(idx, t)
            xs = np.where(np.isfinite(x), x * self.factor[idx], np.nan)
            ratios = np.stack([twa / self.limit[0], stel / self.limit[1], xs / self.limit[2]])
            score = np.fmax(np.fmax(ratios[0], ratios[1]), ratios[2])
        return score, ratios

    def score_many(self, idx, t, x):
        return self.evaluate_many(idx, t, x)[0]

    def observe_many(self, idx, t, x, learn):
        ok = np.isfinite(x)
        if not ok.all():
            idx, t, x = idx[ok], t[ok], x[ok]
        if not len(idx):
            return
        tp, xp = self.prev_t[idx], self.prev_x[idx]
        hold = self.params.max_hold
        _commit(self.twa_sum, self.twa_tot, self.twa_top, idx, tp, xp, t, hold, self.twa_w, self.twa_B)
        _commit(self.stel_sum, self.stel_tot, self.stel_top, idx, tp, xp, t, hold, self.stel_w, self.stel_B)
        self.prev_t[idx] = t
        self.prev_x[idx] = np.clip(x * self.factor[idx], 0.0, _CLIP)
