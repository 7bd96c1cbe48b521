"""Chemical security: an inventory instrument that lies (frozen, replaying, contradicted, silent).

A thief who can reach a tank's level transmitter (or its network) hides a draw-off by freezing the
reading, or by replaying a recording of its normal noise while the tank drains. Neither moves the
mass balance, so both are security events in their own right, whatever a maintenance view makes of
them:

* ``replaying``: the readings' pattern of changes has been seen before. Every reading extends a
  window of the last ``window`` changes (differences between consecutive readings, rounded to
  ``resolution``; differences make it blind to an added offset); its fingerprint is looked up among
  the fingerprints of the last ``memory`` readings. Real noise never repeats a window of 16 changes;
  a replayed recording repeats every one of them. ``replay_hits`` matching windows in a row raise
  it; a window with fewer than ``min_distinct`` distinct changes (a quiet, quantised level) does not
  count either way.
* ``frozen``: no change beyond ``tolerance`` for ``frozen_after`` seconds on a tank whose reading
  has changed at least ``min_changes`` times before.
* ``disagrees``: a second instrument on the same tank (a load cell, a second radar: ``cross``,
  scaled into the tank's units by ``cross_scale``) has moved away from it by more than
  ``cross_tolerance`` compared with their learned offset.
* ``silent``: no reading for ``silent_after`` seconds while the detector's other instruments report
  (on ``tick``, in reading time; a whole site going quiet is the ``stale`` detector's, whose alarms
  on a toxic tank are security alarms too).

Priority when several hold: replaying, frozen, disagrees, silent. Routed like the mass balance: a
security alarm (docs/security.md).
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from .base import Detector, DetectorParams, Output, SensorInfo
from .decide import Decider
from .registry import register

_MIX = np.uint64(0x9E3779B97F4A7C15)


class InventoryIntegrityParams(DetectorParams):
    window: int = Field(16, ge=4, le=256, description="changes in a fingerprint window")
    memory: int = Field(4096, ge=64, le=65536, description="readings whose fingerprints are remembered")
    resolution: float = Field(0.0, ge=0, description="changes are rounded to this (sensor units); 0: exact values")
    min_distinct: int = Field(4, ge=1, le=256, description="distinct changes a window needs to count")
    replay_hits: int = Field(3, ge=1, le=10_000, description="matching windows in a row that raise replaying")
    frozen_after: float = Field(900.0, ge=1, le=7 * 86400, description="seconds without change that raise frozen")
    tolerance: float = Field(0.0, ge=0, description="changes up to this (sensor units) are no change")
    min_changes: int = Field(10, ge=1, le=1_000_000, description="changes seen before a tank can count as frozen")
    cross: dict[str, str] = Field(default_factory=dict, description="tank sensor id -> second instrument's sensor id")
    cross_scale: dict[str, float] = Field(default_factory=dict, description="tank id -> factor from the second instrument to the tank's unit")
    cross_tolerance: float = Field(2.0, gt=0, description="disagreement that raises disagrees (tank's units)")
    silent_after: float = Field(600.0, ge=1, le=7 * 86400, description="seconds without a reading that raise silent")
    clear_after: int = Field(30, ge=1, le=100_000, description="readings without a replayed window before replaying clears")


class KindDecider(Decider):
    def raw(self, idx, score, x):
        return np.asarray(x, dtype=np.int8)


@register
class InventoryIntegrity(Detector):
    name = "inventory_integrity"
    Params = InventoryIntegrityParams
    CONDITIONS = ("normal", "replaying", "frozen", "disagrees", "silent")
    SEVERITY = {"replaying": "high", "frozen": "high", "disagrees": "high", "silent": "high"}
    SENSOR_HEALTH = True
    univariate: ClassVar[bool] = False  # a second instrument cross-checks a tank

    def __init__(self, params: InventoryIntegrityParams, sensors):
        super().__init__(params, sensors)
        p, n = params, self.n
        ids = {s.id: i for i, s in enumerate(self.sensors)}
        self.partner = np.array([ids.get(p.cross.get(s.id, ""), -1) for s in self.sensors], dtype=np.int64)
        self.scale = np.array([float(p.cross_scale.get(s.id, 1.0)) for s in self.sensors])
        self.prev = np.full(n, np.nan)
        self.diffs = np.full((n, p.window), np.nan)
        self.dpos = np.zeros(n, dtype=np.int64)
        self.fp = np.zeros((n, p.memory), dtype=np.uint64)
        self.fp_ok = np.zeros((n, p.memory), dtype=bool)
        self.fpos = np.zeros(n, dtype=np.int64)
        self.hits = np.zeros(n, dtype=np.int64)
        self.misses = np.zeros(n, dtype=np.int64)
        self.replay = np.zeros(n, dtype=bool)
        self.run_start = np.full(n, np.nan)
        self.changes = np.zeros(n, dtype=np.int64)
        self.last_t = np.full(n, np.nan)
        self.offset = np.full(n, np.nan)  # learned tank - partner
        self.gap = np.zeros(n)  # current |disagreement - offset|

    @classmethod
    def example_params(cls) -> dict[str, Any]:
        return {"window": 6, "memory": 256, "min_distinct": 3, "frozen_after": 120.0, "min_changes": 3,
                "silent_after": 900.0, "resolution": 0.5}

    @classmethod
    def example_sensors(cls, n: int = 4) -> list[SensorInfo]:
        return [SensorInfo(id=f"TK{i}", kind="level", unit="m3", range_min=0.0, range_max=100.0, area="A")
                for i in range(n)]

    def make_decider(self) -> Decider:
        return KindDecider(self.n)

    def _state_arrays(self):
        return {k: getattr(self, k) for k in ("prev", "diffs", "dpos", "fp", "fp_ok", "fpos", "hits", "misses", "replay",
                                              "run_start", "changes", "last_t", "offset", "gap")}

    def _kind(self, idx, t):
        p: InventoryIntegrityParams = self.params
        # frozen in reading time (a tick does not make a silent instrument frozen)
        frozen = (self.changes[idx] >= p.min_changes) & (self.last_t[idx] - self.run_start[idx] >= p.frozen_after)
        dis = self.gap[idx] > p.cross_tolerance
        silent = t - self.last_t[idx] > p.silent_after
        kind = np.where(self.replay[idx], 1, np.where(frozen, 2, np.where(dis, 3, np.where(silent, 4, 0))))
        return kind.astype(np.int8)

    def score_many(self, idx, t, x):
        idx = np.asarray(idx, dtype=np.int64)
        return (self._kind(idx, np.asarray(t, dtype=np.float64)) != 0).astype(np.float64)

    def update(self, idx, t, x) -> Output:
        idx = np.asarray(idx, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        self._advance(idx, t, x)
        kind = self._kind(idx, t)
        code = self.decider.step(idx, t, (kind != 0).astype(np.float64), kind)
        return Output(idx, t, (kind != 0).astype(np.float64), code)

    def learn_many(self, idx, t, x):
        self._advance(np.asarray(idx, dtype=np.int64), np.asarray(t, dtype=np.float64), np.asarray(x, dtype=np.float64))

    def tick(self, now: float) -> Output | None:
        seen = np.flatnonzero(np.isfinite(self.last_t))
        if not len(seen):
            return None
        # silent in reading time: behind the freshest reading of the detector's instruments (a
        # replay of past data is not silent; a whole site going quiet is the stale detector's)
        t = np.full(len(seen), min(float(now), float(np.max(self.last_t[seen]))))
        kind = self._kind(seen, t)
        return Output(seen, t, (kind != 0).astype(np.float64), self.decider.step(seen, t, (kind != 0).astype(np.float64), kind))

    def _advance(self, idx, t, x):
        p: InventoryIntegrityParams = self.params
        good = np.isfinite(x) & np.isfinite(t) & (np.abs(x) <= 1e12)
        idx, t, x = idx[good], t[good], x[good]
        if not len(idx):
            return
        self.seen[idx] += 1
        self.last_t[idx] = t
        d = x - self.prev[idx]
        has = np.isfinite(d)
        moved = has & (np.abs(d) > p.tolerance)
        self.changes[idx[moved]] += 1
        self.run_start[idx[moved | ~np.isfinite(self.run_start[idx])]] = t[moved | ~np.isfinite(self.run_start[idx])]
        self.prev[idx] = x
        # fingerprints of the last `window` changes
        q = np.where(has, np.round(d / p.resolution) if p.resolution > 0 else d, np.nan)
        hi, hq = idx[has], q[has]
        self.diffs[hi, self.dpos[hi] % p.window] = hq
        self.dpos[hi] += 1
        full = self.dpos[hi] >= p.window
        if full.any():
            c = hi[full]
            order = (self.dpos[c][:, None] + np.arange(p.window)[None, :]) % p.window  # oldest first
            win = np.take_along_axis(self.diffs[c], order, axis=1)
            bits = np.ascontiguousarray(win + 0.0).view(np.uint64)  # +0.0: -0.0 and 0.0 alike
            h = np.zeros(len(c), dtype=np.uint64)
            with np.errstate(over="ignore"):
                for j in range(p.window):
                    h = (h ^ bits[:, j]) * _MIX + np.uint64(j + 1)
            distinct = (np.diff(np.sort(win, axis=1), axis=1) != 0).sum(axis=1) + 1
            usable = distinct >= p.min_distinct
            seen_before = (self.fp[c] == h[:, None]) & self.fp_ok[c]
            match = usable & seen_before.any(axis=1)
            self.hits[c] = np.where(match, self.hits[c] + 1, np.where(usable, 0, self.hits[c]))
            self.misses[c] = np.where(match, 0, np.where(usable, self.misses[c] + 1, self.misses[c]))
            self.replay[c] = np.where(self.hits[c] >= p.replay_hits, True,
                                      np.where(self.misses[c] >= p.clear_after, False, self.replay[c]))
            slot = self.fpos[c] % p.memory
            self.fp[c, slot] = h
            self.fp_ok[c, slot] = usable
            self.fpos[c] += 1
        # cross-check with a second instrument
        part = self.partner[idx]
        has_p = part >= 0
        if has_p.any():
            c = idx[has_p]
            other = self.prev[part[has_p]] * self.scale[c]
            diff = x[has_p] - other
            ok = np.isfinite(diff)
            off = self.offset[c]
            self.gap[c] = np.where(ok & np.isfinite(off), np.abs(diff - off), 0.0)
            calm = ok & (self.gap[c] <= p.cross_tolerance)
            self.offset[c] = np.where(calm, np.where(np.isfinite(off), off + 0.01 * (diff - off), diff), off)
