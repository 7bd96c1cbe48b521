"""Reconnect delays for the daemon's MQTT intake (single and per partition).

Capped at a few seconds, so that a broker back after an outage sees the daemon within a few
seconds, however long the outage was; jittered ("equal jitter": a random point in the upper
half of the current step), so that the daemon's sessions, and several daemons, do not all come
back in the same instant.
"""
from __future__ import annotations

import random

#: first delay (s), doubled per failed attempt up to ``RECONNECT_CAP``
RECONNECT_FIRST = 0.25
RECONNECT_CAP = 3.0


class Backoff:
    def __init__(self, first: float = RECONNECT_FIRST, cap: float = RECONNECT_CAP, rng: random.Random | None = None):
        self.first = first
        self.cap = cap
        self.rng = rng or random.Random()
        self._step = first

    def reset(self) -> None:
        """After a successful connection."""
        self._step = self.first

    def next(self) -> float:
        """The delay before the next attempt (and advance)."""
        step = self._step
        self._step = min(self._step * 2, self.cap)
        return step / 2 + self.rng.uniform(0, step / 2)
