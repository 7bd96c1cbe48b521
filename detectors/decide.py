"""Decision stages: from scores to condition codes, vectorised across sensors.

ISA-18.2 practice for an alarm on a measured value:

* **limits** in levels (low-low < low < high < high-high);
* a **deadband**: once in a condition, the value must come back past the limit by the deadband
  before the condition clears, so a value hovering at the limit does not chatter;
* an **on-delay**: a new, more severe condition must persist this long before it is declared;
* an **off-delay**: a return to a less severe condition (or normal) must persist this long.

Delays are in seconds of reading time (not wall-clock time), so a replay of past data gives the
same decisions as the live run did.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Mapping

import numpy as np


class Decider(ABC):
    """Turns scores into condition codes, one state slot per sensor."""

    def __init__(self, n: int):
        self.code = np.zeros(n, dtype=np.int8)  # condition in force
        self.pending = np.zeros(n, dtype=np.int8)  # condition the raw values point to
        self.since = np.full(n, -np.inf)  # since when ``pending`` has held

    @abstractmethod
    def raw(self, idx: np.ndarray, score: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Condition each reading points to, before delays (deadband already applied)."""

    def delays(self, idx: np.ndarray, cur: np.ndarray, new: np.ndarray) -> np.ndarray:
        """Seconds the new condition must persist. Default: none."""
        return np.zeros(len(idx))

    def step(self, idx: np.ndarray, t: np.ndarray, score: np.ndarray, x: np.ndarray) -> np.ndarray:
        raw = self.raw(idx, score, x)
        pend = self.pending[idx]
        since = np.where(raw != pend, t, self.since[idx])
        self.pending[idx] = raw
        self.since[idx] = since
        cur = self.code[idx]
        change = (raw != cur) & (t - since >= self.delays(idx, cur, raw))
        new = np.where(change, raw, cur).astype(np.int8)
        self.code[idx] = new
        return new

    def get_state(self) -> dict[str, Any]:
        return {"code": self.code.copy(), "pending": self.pending.copy(), "since": self.since.copy()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.code = np.array(state["code"], dtype=np.int8)
        self.pending = np.array(state["pending"], dtype=np.int8)
        self.since = np.array(state["since"], dtype=np.float64)


def _level(values: np.ndarray, cur_level: np.ndarray, limits: np.ndarray, deadband: np.ndarray) -> np.ndarray:
    """Level reached on one side (0 = none, 1 = first limit, 2 = second ...), with deadband.

    ``limits`` has shape (k, n_readings), ordered from the least to the most severe, already
    oriented so that "beyond" means ``values >= limit`` (low-side callers negate both). A level
    that is currently held is kept while the value stays beyond ``limit - deadband``.
    """
    level = np.zeros(len(values), dtype=np.int8)
    for k in range(limits.shape[0]):
        lim = limits[k]
        held = cur_level >= k + 1
        beyond = np.where(held, values > lim - deadband, values >= lim)
        level = np.where(beyond & ~np.isnan(lim), np.int8(k + 1), level)
    return level


class LimitDecider(Decider):
    """Multi-level limits per sensor with deadband and on/off delays.

    Codes: 0 normal, 1 low, 2 low_low, 3 high, 4 high_high. Limits are arrays with one entry per
    sensor (NaN where a sensor has no such limit), so one detector instance can hold each
    sensor's own limits.
    """

    CONDITIONS = ("normal", "low", "low_low", "high", "high_high")

    def __init__(self, n: int, *, high=np.nan, high_high=np.nan, low=np.nan, low_low=np.nan,
                 deadband=0.0, on_delay: float = 0.0, off_delay: float = 0.0):
        super().__init__(n)
        b = lambda v: np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)).copy()  # noqa: E731
        self.high, self.high_high, self.low, self.low_low = b(high), b(high_high), b(low), b(low_low)
        self.deadband = b(deadband)
        self.on_delay, self.off_delay = float(on_delay), float(off_delay)

    def raw(self, idx, score, x):
        cur = self.code[idx]
        hi_cur = np.where(cur >= 3, cur - 2, 0)
        lo_cur = np.where((cur == 1) | (cur == 2), cur, 0)
        db = self.deadband[idx]
        hi = _level(score, hi_cur, np.stack([self.high[idx], self.high_high[idx]]), db)
        lo = _level(-score, lo_cur, np.stack([-self.low[idx], -self.low_low[idx]]), db)
        out = np.where(hi > 0, hi + 2, lo).astype(np.int8)
        return np.where(np.isnan(score), cur, out).astype(np.int8)

    def delays(self, idx, cur, new):
        return np.where(_severity(new) > _severity(cur), self.on_delay, self.off_delay)


def _severity(code: np.ndarray) -> np.ndarray:
    # low (1) and high (3) are one step from normal, low_low (2) and high_high (4) two
    return np.select([code == 0, (code == 1) | (code == 3)], [0, 1], 2)


class ThresholdDecider(Decider):
    """Levels on one score: code k when score >= thresholds[k-1] (ascending), with hysteresis.

    ``clear_ratio`` sets the deadband as a fraction of each threshold (0.8: a condition entered
    at score 5 clears below 4).
    """

    def __init__(self, n: int, thresholds: list[float], *, clear_ratio: float = 1.0,
                 on_delay: float = 0.0, off_delay: float = 0.0):
        super().__init__(n)
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.clear_ratio = float(clear_ratio)
        self.on_delay, self.off_delay = float(on_delay), float(off_delay)

    def raw(self, idx, score, x):
        cur = self.code[idx]
        level = np.zeros(len(idx), dtype=np.int8)
        for k, th in enumerate(self.thresholds):
            beyond = np.where(cur >= k + 1, score >= th * self.clear_ratio, score >= th)
            level = np.where(beyond, np.int8(k + 1), level)
        return level

    def delays(self, idx, cur, new):
        return np.where(new > cur, self.on_delay, self.off_delay)
