"""All sensors of one ``shape_novelty`` detector in one set of arrays (vectorised :mod:`.resonance_core`).

:class:`ShapeBank` holds, for ``n`` sensors, what one :class:`~.resonance_core.ShapeMemory` holds
for one: the reading block, the value scale, the level histogram (with its running median), the
last ``window`` levels, the fuzzy ART categories (a :class:`~.resonance_match.CategoryStore`) and
the vigilance bookkeeping. ``push(idx, x)`` takes one round of distinct sensors: the readings are
buffered with array operations, and the sensors whose block is full form their level, shape and
ART step together (:meth:`.CategoryStore.match`, blocks of sensors sorted by category count). The
results equal the per-sensor engine's (``tests/test_shape_novelty_batch.py`` compares them on
random and NAB-like series).

Rare steps run per sensor on the sensor's slice of the arrays, with the reference code's
arithmetic: the warm-up (once per sensor, by the reference engine itself, whose result is then
loaded), widening the scale to a never-seen value, the means of the vigilance update where the
lower vigilance falls (the rest of it runs on all due sensors at once) and the list of anomaly matches.
"""
from __future__ import annotations

import math

import numpy as np

from .resonance_core import ShapeMemory
from .resonance_match import LANES, CategoryStore, row_sums

_SQ2 = math.sqrt(2.0)


def _unit_scale(v: np.ndarray) -> np.ndarray:
    """Column-wise :func:`.resonance_core.unit_scale` (one shape per column)."""
    v = v - v.min(axis=0)
    top = v.max(axis=0)
    return v / np.where(top > 0, top, 1.0)


def _haar(v: np.ndarray) -> np.ndarray:
    """Column-wise :func:`.resonance_core.haar`."""
    out, a = [], v
    while a.shape[0] > 1:
        ev, od = a[0::2], a[1::2]
        out.append((ev - od) / _SQ2)
        a = (ev + od) / _SQ2
    out.append(a)
    return np.concatenate(out[::-1], axis=0)


class _Ring:
    """The last ``cap`` values of a list per sensor (what the reference keeps with append + pop(0))."""

    def __init__(self, n: int, cap: int, fill: float):
        self.v = np.full((n, cap), fill)
        self.pos = np.zeros(n, dtype=np.int64)
        self.len = np.zeros(n, dtype=np.int64)
        self.cap = cap

    def push(self, rows: np.ndarray, vals: np.ndarray) -> None:
        self.v[rows, self.pos[rows]] = vals
        self.pos[rows] = (self.pos[rows] + 1) % self.cap
        self.len[rows] = np.minimum(self.len[rows] + 1, self.cap)

    def ordered(self, j: int) -> list[float]:
        n, p = int(self.len[j]), int(self.pos[j])
        row = self.v[j]
        vals = row[:n] if n < self.cap else np.concatenate([row[p:], row[:p]])
        return [float(u) for u in vals]

    def load(self, j: int, vals: list[float]) -> None:
        vals = vals[-self.cap:]
        self.v[j, : len(vals)] = vals
        self.len[j] = len(vals)
        self.pos[j] = len(vals) % self.cap


class ShapeBank:
    """``n`` sensors' shape memories; ``push(idx, x)`` scores one round of distinct sensors."""

    def __init__(self, n: int, lanes: int = LANES, dtype: type = np.float32, **kw):
        self.kw = kw
        self.n, self.learn, self.stride, self.w = n, kw["learn"], kw["stride"], kw["window"]
        self.levels, self.chomp, self.rho_cap, self.mask = kw["levels"], kw["chomp"], kw["rho_cap"], kw["mask"]
        self.grow, self.settle, self.extreme = kw.get("grow", True), kw.get("settle", 0.0), kw.get("extreme", 0.0)
        self.trend = max(2 * self.w, self.learn // self.stride)
        w = self.w
        self.count = np.zeros(n, dtype=np.int64)
        self.buf: list[list[float]] = [[] for _ in range(n)]  # warm-up readings
        self.block = np.zeros((n, self.stride))
        self.blen = np.zeros(n, dtype=np.int64)
        self.lo, self.span, self.ma = (np.full(n, np.nan) for _ in range(3))
        self.hist = np.zeros((n, self.levels + 1), dtype=np.int64)
        self.med, self.below, self.tot = (np.zeros(n, dtype=np.int64) for _ in range(3))  # see _median
        self.shape = np.zeros((n, w))
        self.slen = np.zeros(n, dtype=np.int64)
        self.cats = CategoryStore(n, 4 * w, lanes=lanes, dtype=dtype)
        self.rho_lb, self.rho_ub = np.zeros(n), np.zeros(n)
        self.step, self.sim_n, self.last_rho, self.quiet, self.first_scored = (
            np.zeros(n, dtype=np.int64) for _ in range(5))
        self.last_anomaly = np.full(n, -10**9, dtype=np.int64)
        self.sim_sum, self.last_anomaly_sim = np.zeros(n), np.zeros(n)
        self.mask_after_new = np.zeros(n, dtype=bool)
        self.sims = _Ring(n, self.trend // 2 + 1, np.inf)
        self.diffs = _Ring(n, self.trend + 1, 0.0)
        self.anomaly_sims: list[list[float]] = [[] for _ in range(n)]

    # --- one round ---------------------------------------------------------------------------
    def push(self, idx: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Scores of readings ``x`` of the distinct sensors ``idx`` (learned either way)."""
        idx = np.asarray(idx, dtype=np.int64)
        x = np.asarray(x, dtype=np.float64)
        score = np.zeros(len(idx))
        fin = np.isfinite(x)
        warming = fin & (self.count[idx] < self.learn)
        for p in np.flatnonzero(warming):
            self._warm_one(int(idx[p]), float(x[p]))
        live = np.flatnonzero(fin & ~warming)
        if not len(live):
            return score
        rows = idx[live]
        self.count[rows] += 1
        self.block[rows, self.blen[rows]] = x[live]
        self.blen[rows] += 1
        full = self.blen[rows] >= self.stride
        if full.any():
            R = rows[full]
            self.blen[R] = 0
            score[live[full]] = self._level_step(R)
        return score

    def _warm_one(self, j: int, v: float) -> None:
        self.count[j] += 1
        self.buf[j].append(v)
        if self.count[j] == self.learn:
            m = ShapeMemory(**self.kw)
            m.count, m.buf = self.learn, self.buf[j]
            m._warm_up()
            self.load(j, m)

    def _level_step(self, R: np.ndarray) -> np.ndarray:
        """Form the level of the full blocks of sensors ``R``, then their shapes and ART step."""
        B = self.block[R].T[None]  # (1, stride, sensors)
        mean, hi, lo = row_sums(B)[0] / self.stride, B[0].max(axis=0), B[0].min(axis=0)
        ma = self.ma[R]
        ma = np.where(np.isnan(ma), mean, (ma + mean) / 2)
        self.ma[R] = ma
        v = np.where(np.abs(hi - ma) < np.abs(lo - ma), lo, hi)
        v = np.where(np.abs(v - mean) >= 0.1 * np.abs(mean), v, mean)
        slo, span = self.lo[R], self.span[R]
        with np.errstate(invalid="ignore"):
            widened = (span > 0) & np.isfinite(v) & ~((slo <= v) & (v <= slo + span))
        if self.grow and widened.any():
            for r in np.flatnonzero(widened):
                self._widen(int(R[r]), float(v[r]))
            slo, span = self.lo[R], self.span[R]
        with np.errstate(invalid="ignore", divide="ignore"):
            u = np.where(span > 0, (v - slo) / np.where(span > 0, span, 1.0), 0.5)
        u = np.where(np.isfinite(u), np.minimum(1.0, np.maximum(0.0, u)), 0.5)
        q = np.rint(u * self.levels).astype(np.int64)
        med = self._median(R, q) / self.levels
        u = q / self.levels
        level = np.where(np.abs(u - med) < self.chomp, med, u)
        # the last `window` levels
        sl = self.slen[R]
        short = sl < self.w
        if short.any():
            self.shape[R[short], sl[short]] = level[short]
            self.slen[R[short]] += 1
        fullw = ~short
        if fullw.any():
            Rf = R[fullw]
            self.shape[Rf, :-1] = self.shape[Rf, 1:]
            self.shape[Rf, -1] = level[fullw]
        ready = self.slen[R] >= self.w
        out = np.zeros(len(R))
        if ready.any():
            D = R[ready]
            win = np.ascontiguousarray(self.shape[D].T)  # one shape per column
            f = np.concatenate([_unit_scale(_haar(_unit_scale(win))), win], axis=0)
            self.step[D] += 1
            out[ready] = self._detect(D, f, widened[ready])
        return out

    def _widen(self, j: int, v: float) -> None:
        """:meth:`.ShapeMemory._widen` on sensor ``j``'s slice."""
        lo0, span0 = float(self.lo[j]), float(self.span[j])
        lo, hi = min(lo0, v), max(lo0 + span0, v)
        if not math.isfinite(hi - lo) or hi <= lo:
            return
        a, b = span0 / (hi - lo), (lo0 - lo) / (hi - lo)
        self.lo[j], self.span[j] = lo, hi - lo
        s = int(self.slen[j])
        self.shape[j, :s] = [float(u) * a + b for u in self.shape[j, :s]]
        w, Wj = self.w, self.cats.get(j)
        Wj[:, w:2 * w] = Wj[:, w:2 * w] * a + b
        Wj[:, 3 * w:] = 1.0 - ((1.0 - Wj[:, 3 * w:]) * a + b)
        self.cats.put(j, Wj)
        q = np.rint((np.arange(self.levels + 1) * a + b * self.levels)).astype(np.int64)
        hist = np.zeros(self.levels + 1, dtype=np.int64)
        np.add.at(hist, np.clip(q, 0, self.levels), self.hist[j])
        self.hist[j] = hist
        self._median_reset(j)

    # --- the running median level --------------------------------------------------------------
    def _median(self, R: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Count level ``q`` of the sensors ``R`` and return their median bins: the first bin whose
        cumulative count reaches half the total (what the reference finds by searchsorted). Kept
        incrementally: ``below`` counts the levels under the median bin, which moves a few bins at most."""
        hist, nb = self.hist.reshape(-1), self.levels + 1  # flat: one index per sensor and bin
        hist[R * nb + q] += 1
        self.tot[R] += 1
        self.below[R] += q < self.med[R]
        todo = R
        while len(todo):
            m, bl, half = self.med[todo], self.below[todo], (self.tot[todo] + 1) // 2
            left = bl >= half  # a lower bin reaches half already
            m = m - left
            h = hist[todo * nb + m]
            bl = bl - np.where(left, h, 0)
            right = ~left & (bl + h < half)  # this bin does not reach half yet
            bl = bl + np.where(right, h, 0)
            m = m + right
            self.med[todo], self.below[todo] = m, bl
            todo = todo[left | right]
        return self.med[R]

    def _median_reset(self, j: int) -> None:
        cum = np.cumsum(self.hist[j])
        self.tot[j] = cum[-1]
        self.med[j] = int(np.searchsorted(cum, (cum[-1] + 1) // 2))
        self.below[j] = cum[self.med[j] - 1] if self.med[j] > 0 else 0

    # --- fuzzy ART, all ready sensors at once --------------------------------------------------
    def _train(self, D: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(new cluster?, best match, its level-match) per sensor (shape ``f[:, i]`` of sensor ``D[i]``),
        as :meth:`.FuzzyArt.train`."""
        x = np.concatenate([f, 1.0 - f], axis=0)
        empty = self.cats.k[D] == 0
        a, ae, add = self.cats.match(D, x, self.rho_ub[D], self.w)
        self.cats.add(D[add], x[:, add].T)
        return add & ~empty & (a < self.rho_lb[D]), a, ae

    def _detect(self, D: np.ndarray, f: np.ndarray, widened: np.ndarray) -> np.ndarray:
        """:meth:`.ShapeMemory._detect` (scoring) for the sensors ``D`` with shapes ``f`` (one per column)."""
        i = self.step[D]
        since = i - self.last_anomaly[D]
        clear = self.mask_after_new[D] & (i > self.trend + self.mask) & (self.quiet[D] >= self.mask)
        self.mask_after_new[D[clear]] = False
        new, a, ae = self._train(D, f)
        self.quiet[D] = np.where(new, 0, self.quiet[D] + 1)
        self.sim_sum[D] += a
        self.sim_n[D] += 1
        self.sims.push(D, a)
        self.diffs.push(D, self.rho_ub[D] - a)
        for r in np.flatnonzero(since < self.mask):
            an = self.anomaly_sims[D[r]]
            if an and a[r] < an[-1]:
                an[-1] = float(a[r])
        masked = self.mask_after_new[D] | (since <= self.mask)
        worse = a < self.last_anomaly_sim[D] * np.where(since <= self.mask, 0.9, 0.7)
        fs = self.first_scored[D]
        self.first_scored[D] = np.where(fs == 0, i, fs)
        hit = new & (~masked | worse)
        score = np.zeros(len(D))
        if hit.any():
            H = D[hit]
            score[hit] = self._weigh(self._confidence(H, a[hit], ae[hit]), H, i[hit], widened[hit])
            for j, v in zip(H, a[hit]):
                self.anomaly_sims[j].append(float(v))
            self.last_anomaly_sim[H], self.last_anomaly[H] = a[hit], i[hit]
        self.mask_after_new[D] |= new
        due = (since == self.mask) | (i - self.last_rho[D] >= self.trend // 2)
        if due.any():
            self._adapt(D[due], i[due])
        return score

    def _confidence(self, H: np.ndarray, a: np.ndarray, ae: np.ndarray) -> np.ndarray:
        a = np.minimum(0.999, a)
        ub = ((1 - a) - (1 - self.rho_ub[H])) / (1 - a)
        lb = ((1 - a) - (1 - self.rho_lb[H])) / (1 - a)
        return np.minimum(1.0, 0.35 * ub + 0.65 * lb + 1.5 * (1.0 - ae))

    def _weigh(self, score: np.ndarray, H: np.ndarray, i: np.ndarray, widened: np.ndarray) -> np.ndarray:
        if self.settle > 0:
            score = score * np.minimum(1.0, (i - self.first_scored[H] + 1) / (self.settle * self.trend))
        if self.extreme > 0:
            score = np.where(widened, np.maximum(score, self.extreme), score)
        return score

    def _adapt(self, J: np.ndarray, i: np.ndarray) -> None:
        """:meth:`.ShapeMemory._adapt` on the sensors ``J`` (at their steps ``i``)."""
        v = self.sims.v[J]
        lo_sim = np.where(np.arange(v.shape[1]) < self.sims.len[J][:, None], v, np.inf).min(axis=1)  # no order
        ub = np.minimum(self.rho_cap, self.sim_sum[J] / self.sim_n[J])
        lb = self.rho_lb[J].copy()
        rise = lb <= lo_sim
        lb[rise] = lb[rise] + (lo_sim[rise] - lb[rise]) * 0.19
        for r in np.flatnonzero(~rise):  # the means of lists, in the reference's order
            j, lbr = int(J[r]), float(lb[r])
            d = [min(0.37, u) for u in self.diffs.ordered(j) if u > 0.05] if i[r] > 2 * self.trend else []
            lbr -= max(0.01, float(np.mean(d)) if d else 0.0) / 2
            if self.anomaly_sims[j]:
                lbr = max(float(np.mean(self.anomaly_sims[j])), lbr)
            lb[r] = lbr
        self.rho_lb[J], self.rho_ub[J] = np.minimum(ub, lb), ub
        self.last_rho[J] = i
        self.mask_after_new[J] = True

    # --- one sensor as a reference memory (state, what-if scores) ----------------------------
    _SCALARS = ("count", "lo", "span", "ma", "step", "sim_sum", "sim_n", "last_anomaly", "last_anomaly_sim",
                "last_rho", "quiet", "first_scored")

    def export(self, j: int) -> ShapeMemory:
        """Sensor ``j``'s state as a :class:`ShapeMemory` (a copy)."""
        m = ShapeMemory(**self.kw)
        for name in self._SCALARS:
            val = getattr(self, name)[j]
            setattr(m, name, float(val) if val.dtype.kind == "f" else int(val))
        m.mask_after_new = bool(self.mask_after_new[j])
        m.buf = list(self.buf[j])
        m.block = [float(u) for u in self.block[j, : self.blen[j]]]
        m.hist = self.hist[j].copy()
        m.shape = [float(u) for u in self.shape[j, : self.slen[j]]]
        k = int(self.cats.k[j])
        m.art.W = np.zeros((max(64, k), 4 * self.w))
        m.art.W[:k], m.art.k = self.cats.get(j), k
        m.art.rho_lb, m.art.rho_ub = float(self.rho_lb[j]), float(self.rho_ub[j])
        m.sims, m.sim_diffs = self.sims.ordered(j), self.diffs.ordered(j)
        m.anomaly_sims = list(self.anomaly_sims[j])
        return m

    def load(self, j: int, m: ShapeMemory) -> None:
        """Put a :class:`ShapeMemory`'s state into sensor ``j``'s slice."""
        for name in self._SCALARS:
            getattr(self, name)[j] = getattr(m, name)
        self.mask_after_new[j] = bool(m.mask_after_new)
        self.buf[j] = list(m.buf)
        self.blen[j] = len(m.block)
        self.block[j, : len(m.block)] = m.block
        self.hist[j] = m.hist
        self._median_reset(j)
        self.slen[j] = len(m.shape)
        self.shape[j, : len(m.shape)] = m.shape
        self.cats.put(j, m.art.W[: m.art.k])
        self.rho_lb[j], self.rho_ub[j] = m.art.rho_lb, m.art.rho_ub
        self.sims.load(j, m.sims)
        self.diffs.load(j, m.sim_diffs)
        self.anomaly_sims[j] = list(m.anomaly_sims)
