"""From per-reading condition codes to events: start, change of condition, end.

An event is one continuous span in which a detector holds a sensor in a non-normal condition.
The tracker is vectorised: it compares each reading's code with the sensor's previous code and
only the (rare) transitions reach Python-level code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Output


@dataclass(slots=True)
class Transition:
    """A sensor's condition changed under one detector at time ``t``."""

    sensor: int  # column
    t: float
    old: int  # previous code (0 = normal)
    new: int  # new code (0 = normal)
    score: float  # score of the reading that caused it
    peak: float  # highest score over the span that ended (for end transitions)


class EventTracker:
    def __init__(self, n: int):
        self.code = np.zeros(n, dtype=np.int8)
        self.peak = np.zeros(n)

    def feed(self, out: Output) -> list[Transition]:
        idx, code = out.idx, out.code
        prev = self.code[idx]
        active = code != 0
        if active.any():
            ai = idx[active]
            self.peak[ai] = np.where(prev[active] != 0, np.fmax(self.peak[ai], out.score[active]), out.score[active])
        changed = np.flatnonzero(code != prev)
        if len(changed) == 0:
            return []
        self.code[idx[changed]] = code[changed]
        return [
            Transition(int(idx[i]), float(out.t[i]), int(prev[i]), int(code[i]), float(out.score[i]),
                       float(self.peak[idx[i]]))
            for i in changed
        ]

    def get_state(self) -> dict[str, Any]:
        return {"code": self.code.copy(), "peak": self.peak.copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.code = np.array(state["code"], dtype=np.int8)
        self.peak = np.array(state["peak"], dtype=np.float64)


def rounds(idx: np.ndarray) -> list[np.ndarray]:
    """Split positions of a time-ordered batch into rounds in which each sensor appears once.

    Round k holds the k-th reading of every sensor that has at least k+1 readings in the batch,
    so per-sensor order is kept while each round is scored in one vectorised call.
    """
    n = len(idx)
    if n == 0:
        return []
    order = np.argsort(idx, kind="stable")
    s = idx[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - group_start
    if rank.max() == 0:
        return [np.arange(n)]
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.flatnonzero(np.diff(rank[by_rank])) + 1
    return np.split(by_rank, bounds)
