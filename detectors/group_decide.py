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

    def step_one(self, t: float, score: float) -> int:
        """:meth:`step` for the group's one slot with plain numbers (a group steps once per row;
        the array form costs more than the rest of the row). Same rules, same state."""
        cur = int(self.code[0])
        lim1 = self.clear_ratio if cur >= 1 else 1.0
        lim2 = self.severe * self.clear_ratio if cur >= 2 else self.severe
        raw = 2 if score >= lim2 else 1 if score >= lim1 else 0
        above = int(self.above[0]) + 1 if score >= 1.0 else 0
        below = int(self.below[0]) + 1 if raw == 0 else 0
        self.above[0], self.below[0] = above, below
        if cur == 0:
            new = max(raw, 1) if above >= self.confirm else 0
        else:
            new = 0 if below >= self.clear else max(raw, 1)
        self.pending[0] = raw
        if new != cur:
            self.since[0] = t
        self.code[0] = new
        return new

    def get_state(self):
        return super().get_state() | {"above": self.above.copy(), "below": self.below.copy()}

    def set_state(self, state):
        super().set_state(state)
        self.above = np.array(state["above"], dtype=np.int64)
        self.below = np.array(state["below"], dtype=np.int64)
