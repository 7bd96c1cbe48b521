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

    def _raw(self, cur: int, score: float) -> int:
        lim1 = self.clear_ratio if cur >= 1 else 1.0
        lim2 = self.severe * self.clear_ratio if cur >= 2 else self.severe
        return 2 if score >= lim2 else 1 if score >= lim1 else 0

    def raw(self, idx, score, x):
        return np.array([self._raw(int(self.code[i]), float(s)) for i, s in zip(idx, score)], dtype=np.int8)

    def step(self, idx, t, score, x):
        return np.array([self.step_one(float(ti), float(s), int(i)) for i, ti, s in zip(idx, t, score)],
                        dtype=np.int8)

    def step_one(self, t: float, score: float, slot: int = 0) -> int:
        """One slot's step with plain numbers (a group steps its one slot once per row; numpy on
        one-element arrays cost more than the rest of the row)."""
        cur = int(self.code[slot])
        raw = self._raw(cur, score)
        above = int(self.above[slot]) + 1 if score >= 1.0 else 0
        below = int(self.below[slot]) + 1 if raw == 0 else 0
        self.above[slot], self.below[slot] = above, below
        if cur == 0:
            new = max(raw, 1) if above >= self.confirm else 0
        else:
            new = 0 if below >= self.clear else max(raw, 1)
        self.pending[slot] = raw
        if new != cur:
            self.since[slot] = t
        self.code[slot] = new
        return new

    def get_state(self):
        return super().get_state() | {"above": self.above.copy(), "below": self.below.copy()}

    def set_state(self, state):
        super().set_state(state)
        self.above = np.array(state["above"], dtype=np.int64)
        self.below = np.array(state["below"], dtype=np.int64)
