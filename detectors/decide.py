"""Decision stages: from scores to condition codes, vectorised across sensors.

ISA-18.2 practice for an alarm on a measured value:

* **limits** in levels (low-low < low < high < high-high);
* a **deadband**: once in a condition, the value must come back past the limit by the deadband
  before the condition clears, so a value hovering at the limit does not chatter;
* an **on-delay**: a new, more severe condition must persist this long before it is declared;
* an **off-delay**: a return to a less severe condition (or normal) must persist this long.

Delays are in seconds of reading time (not wall-clock time), so a replay of past data gives the
same decisions as the live run did.

Deciders receive the score and, in place of ``x``, the detector's *decision signal*
(:meth:`~.base.Detector.evaluate_many`; by default the readings themselves):

* :class:`LimitDecider` -- ISA limits on the score (or, with ``source="x"``, on the signal);
* :class:`ThresholdDecider` -- ascending thresholds on the score;
* :class:`LevelsDecider` -- one ratio-to-limit per condition (TWA / STEL / IDLH, rising / falling);
* :class:`BandDecider` -- which band of the signal a reading is in (4-20 mA fault bands);
* :class:`QuantileDecider` -- above a factor times each sensor's own running quantile of scores.
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
                 deadband=0.0, on_delay: float = 0.0, off_delay: float = 0.0, source: str = "score"):
        super().__init__(n)
        if source not in ("score", "x"):
            raise ValueError("source must be 'score' or 'x'")
        #: which input the limits apply to: the score, or the signal passed as ``x``
        self.source = source
        b = lambda v: np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)).copy()  # noqa: E731
        self.high, self.high_high, self.low, self.low_low = b(high), b(high_high), b(low), b(low_low)
        self.deadband = b(deadband)
        self.on_delay, self.off_delay = float(on_delay), float(off_delay)

    def raw(self, idx, score, x):
        if self.source == "x":
            score = np.asarray(x, dtype=np.float64)
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


class KindDecider(Decider):
    """The detector names the condition in ``x`` (its own statistics have their deadband); the
    decider adds ``on_delay`` to an onset and ``off_delay`` to a return to normal (a change
    between two conditions needs no delay)."""

    def __init__(self, n: int, on_delay: float, off_delay: float):
        super().__init__(n)
        self.on_delay, self.off_delay = float(on_delay), float(off_delay)

    def raw(self, idx, score, x):
        return np.asarray(x, dtype=np.int8)

    def delays(self, idx, cur, new):
        return np.where(cur == 0, self.on_delay, np.where(new == 0, self.off_delay, 0.0))


class LevelsDecider(Decider):
    """One ratio-to-limit per condition: the signal ``x`` has shape (K, m), row k for code k+1.

    A condition is entered when its ratio reaches 1 and, while held, kept until the ratio falls
    below ``clear_ratio``. NaN ratios count as "not exceeded" (the detector passes NaN or 0 where
    a sensor is not warm).

    ``ordered=True``: codes rise with severity and each implies the milder ones are irrelevant
    (IDLH > STEL > TWA): the highest exceeded code wins, and a held code keeps every milder
    condition at the clear ratio too. ``ordered=False``: mutually exclusive conditions such as
    rising / falling; a held condition only keeps itself.

    On-delay: entering a more severe condition (ordered) or any condition from another one
    (unordered); off-delay: everything else.
    """

    def __init__(self, n: int, k: int, *, ordered: bool = True, clear_ratio: float = 1.0,
                 on_delay: float = 0.0, off_delay: float = 0.0):
        super().__init__(n)
        self.k = int(k)
        self.ordered = bool(ordered)
        self.clear_ratio = float(clear_ratio)
        self.on_delay, self.off_delay = float(on_delay), float(off_delay)

    def raw(self, idx, score, x):
        r = np.asarray(x, dtype=np.float64).reshape(self.k, len(idx))
        cur = self.code[idx]
        level = np.zeros(len(idx), dtype=np.int8)
        for k in range(self.k):
            held = cur >= k + 1 if self.ordered else cur == k + 1
            beyond = r[k] >= np.where(held, self.clear_ratio, 1.0)
            level = np.where(beyond, np.int8(k + 1), level)
        return level

    def delays(self, idx, cur, new):
        worse = new > cur if self.ordered else new != 0
        return np.where(worse, self.on_delay, self.off_delay)


class BandDecider(Decider):
    """Which band of the signal ``x`` a reading falls in: codes per interval between ``edges``.

    ``edges`` (ascending, length K) split the line into K+1 intervals ``[edges[j-1], edges[j])``;
    ``codes[j]`` is the condition of interval j (0 = normal). A held condition is kept while the
    signal stays within ``deadband`` of its interval. NaN keeps the current condition. Codes are
    expected in order of severity: moving to a higher code waits ``on_delay``, to a lower one
    ``off_delay``.
    """

    def __init__(self, n: int, edges, codes, *, deadband: float = 0.0, on_delay: float = 0.0,
                 off_delay: float = 0.0):
        super().__init__(n)
        self.edges = np.asarray(edges, dtype=np.float64)
        self.codes = np.asarray(codes, dtype=np.int8)
        if len(self.codes) != len(self.edges) + 1:
            raise ValueError("BandDecider needs len(codes) == len(edges) + 1")
        if np.any(np.diff(self.edges) <= 0):
            raise ValueError("BandDecider edges must be strictly ascending")
        self.lo = np.r_[-np.inf, self.edges]
        self.hi = np.r_[self.edges, np.inf]
        self.deadband = float(deadband)
        self.on_delay, self.off_delay = float(on_delay), float(off_delay)

    def raw(self, idx, score, x):
        v = np.asarray(x, dtype=np.float64)
        cur = self.code[idx]
        band = self.codes[np.searchsorted(self.edges, v, side="right")]
        if self.deadband > 0:
            held = np.zeros(len(idx), dtype=bool)
            for j, c in enumerate(self.codes):
                if c != 0:
                    held |= (cur == c) & (v >= self.lo[j] - self.deadband) & (v < self.hi[j] + self.deadband)
            band = np.where(held, cur, band)
        return np.where(np.isnan(v), cur, band).astype(np.int8)

    def delays(self, idx, cur, new):
        return np.where(new > cur, self.on_delay, self.off_delay)


class P2Quantile:
    """Streaming quantile per sensor: the P-square algorithm (Jain & Chlamtac, CACM 1985).

    Five markers per sensor track the minimum, the q/2, q and (1+q)/2 quantiles and the maximum,
    adjusted by piecewise-parabolic interpolation: O(1) memory and time per observation, no
    stored history. Vectorised over the sensors of one call (``idx`` distinct).
    """

    def __init__(self, n: int, q: float):
        if not 0 < q < 1:
            raise ValueError("quantile q must be in (0, 1)")
        self.q = float(q)
        self.h = np.zeros((n, 5))  # marker heights
        self.pos = np.tile(np.arange(1.0, 6.0), (n, 1))  # marker positions (1-based ranks)
        self.want = np.tile(np.array([1, 1 + 2 * q, 1 + 4 * q, 3 + 2 * q, 5.0]), (n, 1))  # desired positions
        self.count = np.zeros(n, dtype=np.int64)
        self._dwant = np.array([0, q / 2, q, (1 + q) / 2, 1.0])

    def get(self, idx: np.ndarray) -> np.ndarray:
        """Current estimate (NaN until a sensor has 5 observations)."""
        return np.where(self.count[idx] >= 5, self.h[idx, 2], np.nan)

    def update(self, idx: np.ndarray, x: np.ndarray) -> None:
        if len(idx) == 0:
            return
        c = self.count[idx]
        init = c < 5
        if init.any():
            ii = idx[init]
            self.h[ii, c[init]] = x[init]
            full = ii[c[init] == 4]
            if len(full):
                self.h[full] = np.sort(self.h[full], axis=1)
        main = ~init
        if main.any():
            self._step(idx[main], x[main])
        self.count[idx] += 1

    def _step(self, ii: np.ndarray, x: np.ndarray) -> None:
        h, p, w = self.h[ii], self.pos[ii], self.want[ii]
        h[:, 0] = np.minimum(h[:, 0], x)
        h[:, 4] = np.maximum(h[:, 4], x)
        k = (x[:, None] >= h[:, 1:4]).sum(axis=1)  # cell of x: h[k] <= x < h[k+1]
        p += np.arange(5)[None, :] > k[:, None]
        w += self._dwant
        for i in (1, 2, 3):
            d = w[:, i] - p[:, i]
            up = (d >= 1) & (p[:, i + 1] - p[:, i] > 1)
            down = (d <= -1) & (p[:, i - 1] - p[:, i] < -1)
            adj = up | down
            if not adj.any():
                continue
            s = np.where(up, 1.0, -1.0)
            hm, hi, hp = h[:, i - 1], h[:, i], h[:, i + 1]
            pm, pi, pp = p[:, i - 1], p[:, i], p[:, i + 1]
            par = hi + s / (pp - pm) * ((pi - pm + s) * (hp - hi) / (pp - pi) + (pp - pi - s) * (hi - hm) / (pi - pm))
            lin = np.where(up, hi + (hp - hi) / (pp - pi), hi - (hm - hi) / (pm - pi))
            new = np.where((hm < par) & (par < hp), par, lin)
            h[:, i] = np.where(adj, new, hi)
            p[:, i] = pi + np.where(adj, s, 0.0)
        self.h[ii], self.pos[ii], self.want[ii] = h, p, w

    def get_state(self) -> dict[str, Any]:
        return {"h": self.h.copy(), "pos": self.pos.copy(), "want": self.want.copy(), "count": self.count.copy()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.h = np.array(state["h"], dtype=np.float64)
        self.pos = np.array(state["pos"], dtype=np.float64)
        self.want = np.array(state["want"], dtype=np.float64)
        self.count = np.array(state["count"], dtype=np.int64)


class QuantileDecider(Decider):
    """Alarm when a score exceeds ``factor`` times the sensor's own running ``q``-quantile.

    Modelled on river's ``QuantileFilter``, with two differences that matter for alarms: the
    quantile is learned only from scores whose reading ended up *normal* (an incident does not
    raise its own bar), and only from positive finite scores (a detector reports 0 while it warms
    up, and a pile of zeros says nothing about the tail). Each sensor gets its own bar, so one
    detector entry can watch noisy and quiet sensors alike.

    ``factors`` (ascending) give one level per code: code k when ``score >= factors[k-1] * Q``.
    No alarm until a sensor has ``min_count`` learned scores; ``floor`` is an absolute minimum
    bar (a sensor whose scores are all tiny must not alarm on a slightly less tiny one).
    Hysteresis: a held level clears below its bar times ``clear_ratio``.
    """

    def __init__(self, n: int, q: float, factors=(1.0,), *, min_count: int = 100, floor: float = 0.0,
                 clear_ratio: float = 1.0, on_delay: float = 0.0, off_delay: float = 0.0):
        super().__init__(n)
        self.quantile = P2Quantile(n, q)
        self.factors = np.asarray(factors, dtype=np.float64)
        self.min_count = max(5, int(min_count))
        self.floor = float(floor)
        self.clear_ratio = float(clear_ratio)
        self.on_delay, self.off_delay = float(on_delay), float(off_delay)

    def bars(self, idx: np.ndarray) -> np.ndarray:
        """Current bar per level and sensor, shape (levels, len(idx)); inf while not enough history."""
        qv = self.quantile.get(idx)
        ready = self.quantile.count[idx] >= self.min_count
        base = np.where(ready, qv, np.inf)
        return np.maximum(self.factors[:, None] * base[None, :], self.floor)

    def raw(self, idx, score, x):
        cur = self.code[idx]
        bars = self.bars(idx)
        level = np.zeros(len(idx), dtype=np.int8)
        for k in range(len(self.factors)):
            beyond = np.where(cur >= k + 1, score >= bars[k] * self.clear_ratio, score >= bars[k])
            level = np.where(beyond, np.int8(k + 1), level)
        return level

    def delays(self, idx, cur, new):
        return np.where(new > cur, self.on_delay, self.off_delay)

    def step(self, idx, t, score, x):
        code = super().step(idx, t, score, x)
        learn = (code == 0) & np.isfinite(score) & (score > 0)
        if learn.any():
            self.quantile.update(idx[learn], score[learn])
        return code

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state.update({f"quantile.{k}": v for k, v in self.quantile.get_state().items()})
        return state

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        self.quantile.set_state({k[len("quantile."):]: v for k, v in state.items() if k.startswith("quantile.")})
