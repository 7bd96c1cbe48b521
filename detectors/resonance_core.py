"""The per-sensor engine of :mod:`.shape_novelty` (an adaptive-resonance shape memory).

It runs each sensor's warm-up and is the reference the vectorised :mod:`.resonance_batch` is
tested against (same scores); the detector itself steps all sensors together in that module.

One :class:`ShapeMemory` watches one sensor. Every ``stride`` readings it forms one *level*: the
block's extreme reading (the one furthest from a short moving average, or the block mean when the
extreme is within 10 % of it), scaled into ``[0, 1]`` by the range the sensor showed during its
warm-up (widened by ``margin`` on each side, clipped), quantised to ``levels`` steps and pulled to
the running median level when within ``chomp`` of it. The last ``window`` levels are one *shape*:
the window itself plus its Haar transform after min/max scaling (what the window looks like,
independent of where it sits).

Shapes are kept in a dual-vigilance fuzzy ART memory (Carpenter & Grossberg's fuzzy ART with two
vigilance levels): a shape matching a stored category above the upper vigilance refines it; one
between the two vigilances starts a new category of an existing cluster; one below the lower
vigilance starts a new *cluster*: a shape the sensor has never shown. That event is the anomaly.
The match of a category is ``fuzzy-match^3 * level-match^2`` (level-match: the current level
against the category's, so the same shape at a new height is also new).

The vigilances are learned: at the end of the warm-up the warm-up shapes are replayed through a
trial memory to set both, and afterwards the upper one follows the mean match and the lower one
moves toward the lowest recent match (slowly up, quickly down after novel shapes), so a sensor
whose shapes keep varying widens its tolerance. After a new cluster, further new clusters within
``mask`` shapes are muted unless they match clearly worse than the last anomaly: one excursion,
one detection.

Two stages then weigh the confidence of a detection (the memory learns the same either way):
``settle`` scales it down linearly over the first ``settle`` warm-up lengths after the warm-up
(the memory has seen only the warm-up's shapes yet), and ``extreme`` raises a detection whose
level lies outside every value seen so far (the scale had to widen) to at least ``extreme``
(a never-seen shape at a never-seen value).
"""
from __future__ import annotations

import math

import numpy as np


def haar(v: np.ndarray) -> np.ndarray:
    """Full orthonormal Haar transform of a power-of-two-length vector (approximation first)."""
    out = []
    a = v.astype(np.float64)
    while len(a) > 1:
        ev, od = a[0::2], a[1::2]
        out.append((ev - od) / math.sqrt(2.0))
        a = (ev + od) / math.sqrt(2.0)
    out.append(a)
    return np.concatenate(out[::-1])


def unit_scale(v: np.ndarray) -> np.ndarray:
    v = v - v.min()
    top = v.max()
    return v / top if top > 0 else v


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity matrix of the rows of ``a``; a zero row matches by 1 - |other|."""
    na = np.linalg.norm(a, axis=1)
    sim = a @ a.T / np.maximum(np.outer(na, na), 1e-300)
    zero = na == 0
    if zero.any():
        sim[zero, :] = 1 - na[None, :]
        sim[:, zero] = 1 - na[:, None]
    return sim


class FuzzyArt:
    """Dual-vigilance fuzzy ART over complement-coded vectors of dimension ``dim``."""

    def __init__(self, dim: int, capacity: int):
        self.dim = dim
        self.W = np.zeros((capacity, 2 * dim))
        self.k = 0  # categories in use
        self.rho_lb = 0.0
        self.rho_ub = 0.0

    def match(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        x = np.concatenate([f, 1.0 - f])
        W = self.W[: self.k]
        em = np.minimum(x, W)
        nW = W.sum(axis=1)
        feat = em.sum(axis=1) / np.where(nW == 0, 1e-3, nW)
        e = self.dim - 1
        energy = (em[:, e] + em[:, -1]) / np.maximum(W[:, e] + W[:, -1], 1e-300)
        return x, em, feat**3 * energy**2, energy

    def train(self, f: np.ndarray, learn: bool = True) -> tuple[bool, float, float]:
        """(new cluster?, best match, its level-match) of shape ``f``; learns unless told not to."""
        if self.k == 0:
            if learn:
                self._add(np.concatenate([f, 1.0 - f]))
            return False, 0.0, 0.0
        x, em, m, energy = self.match(f)
        best = int(np.argmax(m))
        a, ae = float(m[best]), float(energy[best])
        if not learn:
            return False, a, ae
        up = m >= self.rho_ub
        if up.any():
            self.W[: self.k][up] = em[up]
            return False, a, ae
        if a >= self.rho_lb:
            self._add(x)
            return False, a, ae
        self._add(x)
        return True, a, ae

    def _add(self, x: np.ndarray) -> None:
        if self.k == len(self.W):
            self.W = np.vstack([self.W, np.zeros_like(self.W)])
        self.W[self.k] = x
        self.k += 1


class ShapeMemory:
    """One sensor's state; ``push(x)`` returns the anomaly score of reading ``x``."""

    def __init__(self, *, learn: int, stride: int, window: int, levels: int, margin: float, chomp: float,
                 rho0: float, rho_cap: float, mask: int, grow: bool = True, settle: float = 0.0,
                 extreme: float = 0.0):
        self.learn, self.stride, self.window, self.levels = learn, stride, window, levels
        self.margin, self.chomp, self.rho0, self.rho_cap, self.mask = margin, chomp, rho0, rho_cap, mask
        self.grow, self.settle, self.extreme = grow, settle, extreme
        self.widened = False  # the level just formed lay outside the scale
        self.first_scored = 0  # step of the first shape scored after the warm-up (0: none yet)
        self.count = 0
        self.buf: list[float] = []  # warm-up readings
        self.block: list[float] = []
        self.lo = self.span = float("nan")
        self.ma = float("nan")
        self.hist = np.zeros(levels + 1, dtype=np.int64)
        self.shape: list[float] = []
        self.art = FuzzyArt(2 * window, 64)
        self.step = 0  # shapes formed
        self.trend = max(2 * window, learn // stride)
        self.sims: list[float] = []
        self.sim_diffs: list[float] = []
        self.sim_sum = 0.0
        self.sim_n = 0
        self.last_anomaly = -10**9
        self.last_anomaly_sim = 0.0
        self.anomaly_sims: list[float] = []
        self.last_rho = 0
        self.mask_after_new = False
        self.quiet = 0

    # --- levels and shapes -------------------------------------------------------------------
    def _level(self, block: list[float]) -> float:
        b = np.asarray(block)
        mean, hi, lo = float(b.mean()), float(b.max()), float(b.min())
        self.ma = mean if math.isnan(self.ma) else (self.ma + mean) / 2
        v = lo if abs(hi - self.ma) < abs(lo - self.ma) else hi
        if not abs(v - mean) >= 0.1 * abs(mean):
            v = mean
        self.widened = bool(self.span > 0 and math.isfinite(v) and not self.lo <= v <= self.lo + self.span)
        if self.grow and self.widened:
            self._widen(v)
        u = (v - self.lo) / self.span if self.span > 0 else 0.5
        u = min(1.0, max(0.0, u)) if math.isfinite(u) else 0.5
        q = int(round(u * self.levels))
        self.hist[q] += 1
        cum = np.cumsum(self.hist)
        med = int(np.searchsorted(cum, (cum[-1] + 1) // 2)) / self.levels
        u = q / self.levels
        return med if abs(u - med) < self.chomp else u

    def _widen(self, v: float) -> None:
        """Widen the value scale to take ``v``; stored shapes, categories and the level histogram
        are mapped onto the new scale (an increasing affine map keeps fuzzy min/max exact)."""
        lo, hi = min(self.lo, v), max(self.lo + self.span, v)
        if not math.isfinite(hi - lo) or hi <= lo:
            return
        a, b = self.span / (hi - lo), (self.lo - lo) / (hi - lo)
        self.lo, self.span = lo, hi - lo
        self.shape = [u * a + b for u in self.shape]
        w, k = self.window, self.art.k
        W = self.art.W
        W[:k, w:2 * w] = W[:k, w:2 * w] * a + b
        W[:k, 3 * w:] = 1.0 - ((1.0 - W[:k, 3 * w:]) * a + b)
        q = np.rint((np.arange(self.levels + 1) * a + b * self.levels)).astype(np.int64)
        hist = np.zeros_like(self.hist)
        np.add.at(hist, np.clip(q, 0, self.levels), self.hist)
        self.hist = hist

    def _shape(self, level: float) -> np.ndarray | None:
        self.shape.append(level)
        if len(self.shape) > self.window:
            self.shape.pop(0)
        if len(self.shape) < self.window:
            return None
        w = np.asarray(self.shape)
        return np.concatenate([unit_scale(haar(unit_scale(w))), w])

    # --- vigilance ---------------------------------------------------------------------------
    def _initial_rho(self, shapes: list[np.ndarray]) -> float:
        F = np.asarray(shapes)
        order = np.argsort(cosine(F, F).sum(axis=0), kind="stable")
        trial = FuzzyArt(F.shape[1], 64)
        trial.rho_lb = trial.rho_ub = self.rho0
        sims = [trial.train(F[j])[1] for j in order]
        return float(np.mean(sims[len(sims) // 2:]))

    def _adapt(self, i: int) -> None:
        lo_sim = min(self.sims)
        ub = min(self.rho_cap, self.sim_sum / self.sim_n)
        lb = self.art.rho_lb
        if lb <= lo_sim:
            lb += (lo_sim - lb) * 0.19
        else:
            d = [min(0.37, v) for v in self.sim_diffs if v > 0.05] if i > 2 * self.trend else []
            lb -= max(0.01, float(np.mean(d)) if d else 0.0) / 2
            if self.anomaly_sims:
                lb = max(float(np.mean(self.anomaly_sims)), lb)
        self.art.rho_lb, self.art.rho_ub = min(ub, lb), ub
        self.last_rho = i
        self.mask_after_new = True

    def _detect(self, f: np.ndarray, scoring: bool) -> float:
        i = self.step
        since = i - self.last_anomaly
        if self.mask_after_new and i > self.trend + self.mask and self.quiet >= self.mask:
            self.mask_after_new = False
        new, a, ae = self.art.train(f)
        self.quiet = 0 if new else self.quiet + 1
        self.sim_sum += a
        self.sim_n += 1
        self.sims.append(a)
        self.sim_diffs.append(self.art.rho_ub - a)
        if len(self.sims) > self.trend // 2 + 1:
            self.sims.pop(0)
        if len(self.sim_diffs) > self.trend + 1:
            self.sim_diffs.pop(0)
        if since < self.mask and self.anomaly_sims and a < self.anomaly_sims[-1]:
            self.anomaly_sims[-1] = a
        masked = self.mask_after_new or since <= self.mask
        worse = a < self.last_anomaly_sim * (0.9 if since <= self.mask else 0.7)
        score = 0.0
        if scoring and not self.first_scored:
            self.first_scored = i
        if scoring and new and (not masked or worse):
            score = self._weigh(self._confidence(a, ae), i)
            self.anomaly_sims.append(a)
            self.last_anomaly_sim, self.last_anomaly = a, i
        self.mask_after_new = self.mask_after_new or new
        if scoring and (since + 0 == self.mask or i - self.last_rho >= self.trend // 2):
            self._adapt(i)
        return score

    def _confidence(self, a: float, ae: float) -> float:
        a = min(0.999, a)
        ub = ((1 - a) - (1 - self.art.rho_ub)) / (1 - a)
        lb = ((1 - a) - (1 - self.art.rho_lb)) / (1 - a)
        return min(1.0, 0.35 * ub + 0.65 * lb + 1.5 * (1.0 - ae))

    def _weigh(self, score: float, i: int) -> float:
        """The ``settle`` and ``extreme`` stages (module docstring) on a detection's confidence."""
        if self.settle > 0:
            score *= min(1.0, (i - self.first_scored + 1) / (self.settle * self.trend))
        if self.extreme > 0 and self.widened:
            score = max(score, self.extreme)
        return score

    # --- stream ------------------------------------------------------------------------------
    def push(self, x: float) -> float:
        if not math.isfinite(x):
            return 0.0
        self.count += 1
        if self.count <= self.learn:
            self.buf.append(x)
            if self.count == self.learn:
                self._warm_up()
            return 0.0
        self.block.append(x)
        if len(self.block) < self.stride:
            return 0.0
        level = self._level(self.block)
        self.block = []
        f = self._shape(level)
        if f is None:
            return 0.0
        self.step += 1
        return self._detect(f, True)

    def _warm_up(self) -> None:
        b = np.asarray(self.buf)
        lo, hi = float(b.min()), float(b.max())
        span = hi - lo if hi > lo else max(abs(lo), 1.0)
        self.lo, self.span = lo - self.margin * span, span * (1 + 2 * self.margin)
        shapes = []
        for k in range(0, len(b) - self.stride + 1, self.stride):
            f = self._shape(self._level(list(b[k:k + self.stride])))
            if f is not None:
                shapes.append(f)
        self.buf = []
        if len(shapes) < 2:
            return
        rho = self._initial_rho(shapes)
        self.art.rho_lb = self.art.rho_ub = rho
        for f in shapes:
            self.step += 1
            self._detect(f, False)

    # --- state as plain arrays ---------------------------------------------------------------
    _SCALARS = ("count", "lo", "span", "ma", "step", "sim_sum", "sim_n", "last_anomaly", "last_anomaly_sim",
                "last_rho", "mask_after_new", "quiet")
    _LISTS = ("buf", "block", "shape", "sims", "sim_diffs", "anomaly_sims")

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"scalars": np.array([float(getattr(self, k)) for k in self._SCALARS]
                                   + [float(self.art.k), self.art.rho_lb, self.art.rho_ub]),
               "hist": self.hist.copy(), "W": self.art.W[: self.art.k].copy(),
               "first_scored": np.array([float(self.first_scored)])}
        out.update({k: np.array(getattr(self, k), dtype=np.float64) for k in self._LISTS})
        return out

    def from_arrays(self, a: dict[str, np.ndarray]) -> None:
        sc = [float(v) for v in np.asarray(a["scalars"])]
        for k, v in zip(self._SCALARS, sc):
            setattr(self, k, v if k in ("lo", "span", "ma", "sim_sum", "last_anomaly_sim") else int(v))
        self.mask_after_new = bool(self.mask_after_new)
        k, self.art.rho_lb, self.art.rho_ub = int(sc[-3]), sc[-2], sc[-1]
        W = np.asarray(a["W"], dtype=np.float64).reshape(k, 2 * self.art.dim)
        self.art.W = np.zeros((max(64, k), 2 * self.art.dim))
        self.art.W[:k], self.art.k = W, k
        self.hist = np.asarray(a["hist"], dtype=np.int64).copy()
        self.first_scored = int(np.asarray(a.get("first_scored", [0.0]))[0])  # absent in older states
        for name in self._LISTS:
            setattr(self, name, [float(v) for v in np.asarray(a[name], dtype=np.float64)])
