"""The group detectors' decision: one condition per group, stepped once per row (see :mod:`.group`)."""
from __future__ import annotations

import numpy as np

from .decide import Decider


class RowDecider(Decider):
    """One slot per group; stepped once per row. Codes 0 normal, 1 anomaly, 2 severe.

    Raised after ``confirm`` consecutive rows at or over the limit (at the level of the latest
    row), escalated/de-escalated between 1 and 2 at once, cleared after ``clear`` consecutive
    rows below ``clear_ratio`` times the limit.
    """

    def __init__(self, n: int, severe: float, clear_ratio: float, confirm: int, clear: int):
        super().__init__(n)
        self.severe, self.clear_ratio = float(severe), float(clear_ratio)
        self.confirm, self.clear = int(confirm), int(clear)
        self.above = np.zeros(n, dtype=np.int64)
        self.below = np.zeros(n, dtype=np.int64)

    def raw(self, idx, score, x):
        cur = self.code[idx]
        held = cur >= 1
        lim1 = np.where(held, self.clear_ratio, 1.0)
        lim2 = np.where(cur >= 2, self.severe * self.clear_ratio, self.severe)
        return np.select([score >= lim2, score >= lim1], [2, 1], 0).astype(np.int8)

    def step(self, idx, t, score, x):
        raw = self.raw(idx, score, x)
        over = score >= 1.0
        self.above[idx] = np.where(over, self.above[idx] + 1, 0)
        self.below[idx] = np.where(raw == 0, self.below[idx] + 1, 0)
        cur = self.code[idx]
        new = np.where(cur == 0,
                       np.where(self.above[idx] >= self.confirm, np.maximum(raw, 1), 0),
                       np.where(self.below[idx] >= self.clear, 0, np.maximum(raw, 1))).astype(np.int8)
        self.pending[idx] = raw
        self.since[idx] = np.where(new != cur, t, self.since[idx])
        self.code[idx] = new
        return new

    def get_state(self):
        return super().get_state() | {"above": self.above.copy(), "below": self.below.copy()}

    def set_state(self, state):
        super().set_state(state)
        self.above = np.array(state["above"], dtype=np.int64)
        self.below = np.array(state["below"], dtype=np.int64)
