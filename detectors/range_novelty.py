"""Range novelty: a reading in a value region the sensor has never visited before.

The first ``learn`` readings of a sensor fix a grid: their range ``[lo, hi]`` split into ``bins``
equal bins, extended without limit on both sides. Every reading falls in one bin; a reading in a
bin never visited before (since the sensor started) is *novel*. This is the core of
context-based detectors such as CAD OSE (Smirnov 2016, coarse value bins + novelty + rest
period), reduced to its first-order part, and it matches what an operator calls "a value we have
never seen on this tag".

Two refinements make it usable as an alarm and are what lifts it on NAB:

* **rate gating**: a sensor that keeps finding new regions (a drift or trend) is not surprising;
  a novel reading scores ``1 - r / rate_scale`` where ``r`` counts the novel readings among the
  sensor's previous ``rate_window`` readings, so sustained novelty fades out;
* **rest period** (as in CAD OSE): after a score reaches ``rest_threshold`` the sensor's next
  ``rest`` scores are 0: one excursion, one alarm.

Every reading is remembered, flagged or not (the regions a value *has* visited are a fact, not a
baseline to protect), so :meth:`update` is overridden to record all readings.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from .base import Detector, Output, debounce
from .decide import Decider, ThresholdDecider
from .registry import register


class RangeNoveltyParams(debounce()):
    learn: int = Field(250, ge=2, le=1_000_000, description="readings whose min/max fix the bin grid")
    bins: int = Field(16, ge=1, le=10_000, description="bins across the learned range")
    rate_window: int = Field(1000, ge=1, le=1_000_000, description="readings over which novel readings are counted")
    rate_scale: float = Field(400.0, gt=0, description="novel readings in rate_window at which the score reaches 0")
    rest: int = Field(50, ge=0, le=1_000_000, description="readings muted after a score reaches rest_threshold")
    rest_threshold: float = Field(0.3, gt=0, le=1, description="score that starts a rest period")
    threshold: float = Field(0.79, gt=0, le=1, description="score at which the anomaly condition starts")


@register
class RangeNovelty(Detector):
    name = "range_novelty"
    Params = RangeNoveltyParams
    CONDITIONS = ("normal", "novel_range")
    SEVERITY = {"novel_range": "medium"}

    def __init__(self, params: RangeNoveltyParams, sensors):
        super().__init__(params, sensors)
        p = params
        self.warmup = p.learn
        self.first = np.full((self.n, p.learn), np.nan)  # the readings that fix the grid
        self.lo = np.full(self.n, np.nan)
        self.step = np.full(self.n, np.nan)
        self.visited: list[set[int]] = [set() for _ in range(self.n)]
        self.flags = np.zeros((self.n, p.rate_window), dtype=np.int8)  # novel or not, last readings (ring)
        self.nflags = np.zeros(self.n, dtype=np.int64)  # novel readings in the ring
        self.count = np.zeros(self.n, dtype=np.int64)  # readings seen
        self.last_fire = np.full(self.n, -(10**12), dtype=np.int64)

    def make_decider(self) -> Decider:
        p: RangeNoveltyParams = self.params
        return ThresholdDecider(self.n, [p.threshold], on_delay=p.on_delay, off_delay=p.off_delay)

    def _state_arrays(self):
        return {"first": self.first, "lo": self.lo, "step": self.step, "flags": self.flags,
                "nflags": self.nflags, "count": self.count, "last_fire": self.last_fire}

    _NO_BIN = np.iinfo(np.int64).min

    def get_state(self):
        state = super().get_state()
        # visited bins as one rectangular array (padded), so the state is plain numpy like the rest
        width = max((len(v) for v in self.visited), default=0)
        vis = np.full((self.n, width), self._NO_BIN, dtype=np.int64)
        for j, v in enumerate(self.visited):
            vis[j, :len(v)] = sorted(v)
        state["visited"] = vis
        return state

    def set_state(self, state):
        super().set_state(state)
        self.visited = [set(int(b) for b in row if b != self._NO_BIN) for row in np.asarray(state["visited"])]

    # --- helpers ---------------------------------------------------------------------------------
    def _bin(self, idx: np.ndarray, x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            b = np.floor((x - self.lo[idx]) / self.step[idx])
        return np.where(np.isfinite(b), b, np.iinfo(np.int64).min).astype(np.int64)

    def _novel(self, idx: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bin, novel?) of each reading; readings before the grid is fixed are never novel."""
        b = self._bin(idx, x)
        ready = self.count[idx] >= self.params.learn
        novel = np.array([bool(r) and int(k) not in self.visited[j] for j, k, r in zip(idx, b, ready)], dtype=bool)
        return b, novel & np.isfinite(x)

    def _raw(self, idx: np.ndarray, novel: np.ndarray) -> np.ndarray:
        return np.where(novel, np.maximum(0.0, 1.0 - self.nflags[idx] / self.params.rate_scale), 0.0)

    def _muted(self, idx: np.ndarray) -> np.ndarray:
        return (self.count[idx] - self.last_fire[idx]) <= self.params.rest

    # --- protocol --------------------------------------------------------------------------------
    def score_many(self, idx, t, x):
        _b, novel = self._novel(idx, x)
        return np.where(self._muted(idx), 0.0, self._raw(idx, novel))

    def update(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> Output:
        """Score, decide, then record every reading (see the module docstring)."""
        b, novel = self._novel(idx, x)
        score = np.where(self._muted(idx), 0.0, self._raw(idx, novel))
        code = self.decider.step(idx, t, score, x)
        self._record(idx, x, b, novel, score)
        return Output(idx, t, score, code)

    def learn_many(self, idx, t, x):
        b, novel = self._novel(idx, x)
        self._record(idx, x, b, novel, np.where(self._muted(idx), 0.0, self._raw(idx, novel)))

    def _record(self, idx: np.ndarray, x: np.ndarray, b: np.ndarray, novel: np.ndarray, score: np.ndarray) -> None:
        p: RangeNoveltyParams = self.params
        self.seen[idx] += 1
        learning = self.count[idx] < p.learn
        if learning.any():
            li = idx[learning]
            self.first[li, self.count[li]] = x[learning]
        fire = score >= p.rest_threshold
        self.count[idx] += 1
        if fire.any():
            self.last_fire[idx[fire]] = self.count[idx[fire]] - 1
        col = (self.count[idx] - 1) % p.rate_window
        self.nflags[idx] += novel.astype(np.int64) - self.flags[idx, col]
        self.flags[idx, col] = novel
        for j, k, r in zip(idx, b, ~learning):
            if r:
                self.visited[j].add(int(k))
        done = idx[self.count[idx] == p.learn]
        if len(done):
            self._fix_grid(done)

    def _fix_grid(self, cols: np.ndarray) -> None:
        """Grid from the first readings; their bins count as visited."""
        p: RangeNoveltyParams = self.params
        first = self.first[cols]
        lo, hi = np.nanmin(first, axis=1), np.nanmax(first, axis=1)
        step = np.where(hi > lo, (hi - lo) / p.bins, np.maximum(np.abs(lo), 1.0) / p.bins)
        self.lo[cols], self.step[cols] = lo, step
        for j, row in zip(cols, first):
            b = self._bin(np.full(len(row), j), row)
            self.visited[j].update(int(k) for k in b[np.isfinite(row)])
