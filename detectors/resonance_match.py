"""The fuzzy ART categories of all sensors of a :class:`~.resonance_batch.ShapeBank` and their match.

The categories sit in blocks of :data:`LANES` storage places, slot-major inside a block:
``W[block, slot, dim, lane]``; the sensor at place ``p`` keeps its ``k`` categories in slots
``0 .. k-1`` of lane ``p % LANES`` of block ``p // LANES``. Places are ordered by category count,
largest first (``at[p]`` is the sensor at place ``p``, ``pos[j]`` the place of sensor ``j``), so the
sensors of a block have about the same count. A match takes each block as one rectangle (slots x
dims x lanes, as tall as the largest count in it): a plain view of the store when the matched
places fill a range of the block densely, a copy when they are few and far apart (every element
of a lane lies in its own cache line). Element operations run over rows of contiguous lanes
(the shapes of a block are one contiguous array too: a broadcast operand that is not is slower
per element); the element-wise minimum of a block is kept for its sums, its level-match
and its refinement (min(W, minimum + 0 or inf)), so the refinement reads no shape again. Reading
the store for the match and writing the refined slots back is what a match costs.

When a sensor gains a category it swaps places with the first sensor of its old count, which keeps
the order; a state loaded from outside (warm-up, restore) leaves it unordered until the padding the
disorder costs makes a full re-sort worth it. The order only saves work.

The sum of a category's elements replays numpy's own pairwise summation of a row (:func:`row_sums`,
:func:`min_sums`), so with float64 categories the matches equal the per-sensor engine's
(:class:`~.resonance_core.FuzzyArt`) to the last bit. The detector stores float32 categories (the
default): half the memory traffic, matches within float32 rounding (~1e-7) of the engine's.
"""
from __future__ import annotations

import numpy as np

SPARSE = 8  # match a block's range of places in place unless fewer than one in SPARSE is matched
LANES = 512  # places per block: a block's categories are one contiguous (slots, dim, LANES) array
RESORT = 1.3  # re-sort the places when the rectangles hold this many slots per category in use


def row_sums(a: np.ndarray) -> np.ndarray:
    """``a.sum(axis=-2)`` (the ``d`` elements of each category, which sit on the second-last axis),
    added in the order numpy's pairwise summation adds the elements of one contiguous row (blocks
    of 8 accumulators, then a tree; halves above 128 elements), so each sum equals ``row.sum()``
    of the category's row bit for bit."""
    d = a.shape[-2]
    if d < 8:
        out = a[..., 0, :] + 0.0  # numpy starts from 0.0 (so -0.0 sums to 0.0)
        for i in range(1, d):
            out += a[..., i, :]
        return out
    if d > 128:
        half = d // 2 - (d // 2) % 8
        return row_sums(a[..., :half, :]) + row_sums(a[..., half:, :])
    top = d - d % 8
    r = a[..., 0:8, :] + a[..., 8:16, :] if top >= 16 else a[..., 0:8, :].copy()
    for i in range(16, top, 8):
        r += a[..., i:i + 8, :]
    s = r[..., 0::2, :] + r[..., 1::2, :]
    t = s[..., 0::2, :] + s[..., 1::2, :]
    out = t[..., 0, :] + t[..., 1, :]
    for i in range(top, d):
        out += a[..., i, :]
    return out


def min_sums(x: np.ndarray, W: np.ndarray, em: np.ndarray | None = None) -> np.ndarray:
    """``row_sums(np.minimum(x, W))`` (``x``: (d, places), ``W``: (slots, d, places)), added in the
    same order; the minimum is kept in ``em`` (shaped like ``W``) if given, else only 8 elements of
    each category at a time are in memory."""
    d = W.shape[1]
    if d % 8 or d > 128:
        return row_sums(np.minimum(x, W, out=em))
    if em is None:
        r = np.minimum(x[0:8], W[:, 0:8])
        t = np.empty_like(r)
        for i in range(8, d, 8):
            r += np.minimum(x[i:i + 8], W[:, i:i + 8], out=t)
    else:
        np.minimum(x, W, out=em)
        r = em[:, 0:8] + em[:, 8:16] if d >= 16 else em[:, 0:8].copy()
        for i in range(16, d, 8):
            r += em[:, i:i + 8]
    s = r[:, 0::2] + r[:, 1::2]
    t = s[:, 0::2] + s[:, 1::2]
    return t[:, 0] + t[:, 1]


def refine(W: np.ndarray, x: np.ndarray, up: np.ndarray, em: np.ndarray | None = None) -> None:
    """``W = min(W, x)`` in place for the categories where ``up`` ((slots, places)), 8 elements at a
    time: min(W, max(x, 0 or inf)), which is faster than a masked copy and leaves the others; with
    ``em`` (``min(x, W)``, shaped like ``W``, which it overwrites) min(W, em + (0 or inf)). Only the
    slots with a refined category are touched (a range of them, or a few gathered ones)."""
    slots = np.flatnonzero(up.any(axis=1))
    if not len(slots):
        return
    s0, s1 = int(slots[0]), int(slots[-1]) + 1
    if 2 * len(slots) < s1 - s0:  # a few slots far apart (many categories, few sensors)
        part = W[slots]
        refine(part, x, up[slots], None if em is None else em[slots])
        W[slots] = part
        return
    W, up = W[s0:s1], up[s0:s1]
    c = min(8, W.shape[1])
    pad = np.empty((len(W), c, W.shape[2]), dtype=W.dtype)  # spelled out over the 8 elements: a
    np.copyto(pad, np.where(up, 0.0, np.inf).astype(W.dtype)[:, None, :])  # broadcast one is slower
    t = np.empty_like(pad) if em is None else None
    for i in range(0, W.shape[1], 8):
        part = W[:, i:i + 8]
        m = part.shape[1]
        if em is None:
            u = np.maximum(x[i:i + m], pad[:, :m], out=t[:, :m])
        else:
            u = np.add(em[s0:s1, i:i + m], pad[:, :m], out=em[s0:s1, i:i + m])
        np.minimum(part, u, out=part)


class CategoryStore:
    """``n`` sensors' fuzzy ART categories of ``dim`` elements (complement-coded shapes)."""

    def __init__(self, n: int, dim: int, cap: int = 4, lanes: int = LANES, dtype: type = np.float32):
        self.n, self.dim, self.dtype = n, dim, np.dtype(dtype)
        self.L = min(lanes, max(8, 1 << (n - 1).bit_length()))  # a few sensors: short rows, close together
        self.nb = -(-n // self.L)
        self.W = np.zeros((self.nb, cap, dim, self.L), dtype=self.dtype)
        self.nW = np.zeros((self.nb, cap, self.L), dtype=self.dtype)  # each category's sum (a match reads W once)
        self.k = np.zeros(n, dtype=np.int64)
        self.at = np.arange(n, dtype=np.int64)
        self.pos = np.arange(n, dtype=np.int64)
        self.ordered = True  # places sorted by k, largest first

    # --- one sensor -------------------------------------------------------------------------
    def get(self, j: int) -> np.ndarray:
        """Sensor ``j``'s categories as ``(k, dim)`` rows (a copy)."""
        b, lane = divmod(int(self.pos[j]), self.L)
        return np.ascontiguousarray(self.W[b, : self.k[j], :, lane])

    def put(self, j: int, rows: np.ndarray) -> None:
        """Make ``rows`` (``(k, dim)``) sensor ``j``'s categories."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype).reshape(-1, self.dim)
        k = len(rows)
        if k > self.W.shape[1]:
            self._capacity(k)
        b, lane = divmod(int(self.pos[j]), self.L)
        self.W[b, :, :, lane] = 0.0
        self.W[b, :k, :, lane] = rows
        self.nW[b, :, lane] = 0.0
        self.nW[b, :k, lane] = rows.sum(axis=1)
        if k != self.k[j]:
            self.ordered = False
        self.k[j] = k

    # --- many sensors -----------------------------------------------------------------------
    def add(self, rows: np.ndarray, x: np.ndarray) -> None:
        """Append category ``x[i]`` to sensor ``rows[i]`` (distinct sensors)."""
        if not len(rows):
            return
        k = self.k[rows]
        if int(k.max()) + 1 > self.W.shape[1]:
            self._capacity(int(k.max()) + 1)
        b, lane = np.divmod(self.pos[rows], self.L)
        x = x.astype(self.dtype)
        self.W[b, k, :, lane] = x
        self.nW[b, k, lane] = x.sum(axis=1)
        if self.ordered:
            self._lift(self.pos[rows])
        self.k[rows] += 1

    def _lift(self, p: np.ndarray) -> None:
        """Before the sensors at places ``p`` gain one category each: move them to the front of
        their count's run of places (swapping with the sensors there), which keeps the order."""
        ks = self.k[self.at]  # counts by place, descending
        top = int(ks[0]) + 2
        start = self.n - np.cumsum(np.bincount(ks, minlength=top))  # first place of each count
        gain = np.bincount(ks[p], minlength=top)
        front = np.arange(self.n) < (start + gain)[ks]  # the places the gaining sensors will take
        mover = np.zeros(self.n, dtype=bool)
        mover[p] = True
        src = np.flatnonzero(mover & ~front)  # gaining sensors outside the front ...
        dst = np.flatnonzero(front & ~mover)  # ... swap with the others in it (both by place: runs pair up)
        if not len(src):
            return
        both, swap = np.r_[src, dst], np.r_[dst, src]
        # a pair has one count: its slots in use, with the one being added, and no more (each
        # element of a lane lies in its own cache line)
        K = self.k[self.at[both]] + 1
        rep = np.repeat(np.arange(len(both)), K)
        slot = np.arange(len(rep)) - np.repeat(np.cumsum(K) - K, K)
        (bb, lb), (bs, ls) = np.divmod(both[rep], self.L), np.divmod(swap[rep], self.L)
        self.W[bb, slot, :, lb] = self.W[bs, slot, :, ls]
        self.nW[bb, slot, lb] = self.nW[bs, slot, ls]
        self.at[both] = self.at[swap]
        self.pos[self.at[both]] = both

    def _capacity(self, need: int) -> None:
        cap = max(need, 2 * self.W.shape[1])
        W = np.zeros((self.nb, cap, self.dim, self.L), dtype=self.dtype)
        W[:, : self.W.shape[1]] = self.W
        nW = np.zeros((self.nb, cap, self.L), dtype=self.dtype)
        nW[:, : self.nW.shape[1]] = self.nW
        self.W, self.nW = W, nW

    def _resort(self) -> None:
        order = np.argsort(-self.k[self.at], kind="stable")
        nb, cap = self.nb, self.W.shape[1]
        W = np.zeros((nb * self.L, cap, self.dim), dtype=self.dtype)  # by place (unused places at the end stay empty)
        W[: self.n] = self.W.transpose(0, 3, 1, 2).reshape(nb * self.L, cap, self.dim)[order]
        nW = np.zeros((nb * self.L, cap), dtype=self.dtype)
        nW[: self.n] = self.nW.transpose(0, 2, 1).reshape(nb * self.L, cap)[order]
        self.W = np.ascontiguousarray(W.reshape(nb, self.L, cap, self.dim).transpose(0, 2, 3, 1))
        self.nW = np.ascontiguousarray(nW.reshape(nb, self.L, cap).transpose(0, 2, 1))
        self.at = self.at[order]
        self.pos[self.at] = np.arange(self.n)
        self.ordered = True

    def match(self, D: np.ndarray, x: np.ndarray, rho_ub: np.ndarray, w: int):
        """Match shape ``x[:, i]`` (complement-coded) against every category of sensor ``D[i]``, as
        :meth:`.FuzzyArt.match`/``train``: refine the categories matched at or above ``rho_ub[i]``
        (with the element-wise minimum). Returns (best match, its level-match, none refined?)."""
        if len(D) == self.n and bool((D == np.arange(self.n)).all()):
            order = self.at  # every sensor: by place is the order of the places
        else:
            order = np.argsort(self.pos[D], kind="stable")
        Ps, ks = self.pos[D[order]], self.k[D[order]]
        blk = Ps // self.L
        edges = np.r_[0, np.flatnonzero(np.diff(blk)) + 1, len(Ps)]
        if not self.ordered:
            slots = np.maximum.reduceat(np.maximum(ks, 1), edges[:-1]) * self.L
            if int(slots.sum()) > RESORT * int(ks.sum()) + 4 * self.L:
                self._resort()
                return self.match(D, x, rho_ub, w)
        xs, ub = np.take(x.astype(self.dtype), order, axis=1, mode="clip"), rho_ub[order]
        a, ae, none = np.zeros(len(D)), np.zeros(len(D)), np.ones(len(D), dtype=bool)
        for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist()):
            b = int(blk[lo])
            lanes = Ps[lo:hi] - b * self.L
            K = max(1, int(ks[lo:hi].max()))
            l0, l1 = int(lanes[0]), int(lanes[-1]) + 1
            copied = l1 - l0 > SPARSE * (hi - lo)
            if copied:  # few places far apart: copies (one cache line per element)
                sel = slice(None)
                Wb, nW = self.W[b, :K][:, :, lanes], self.nW[b, :K][:, lanes]
                xb, kb, ubb = np.ascontiguousarray(xs[:, lo:hi]), ks[lo:hi], ub[lo:hi]
            else:  # a view of the places' range (the others masked)
                Wb, nW = self.W[b, :K, :, l0:l1], self.nW[b, :K, l0:l1]
                if l1 - l0 == hi - lo:  # all of them
                    sel, xb, kb, ubb = slice(None), np.ascontiguousarray(xs[:, lo:hi]), ks[lo:hi], ub[lo:hi]
                else:
                    sel = lanes - l0
                    xb, kb, ubb = (np.zeros((self.dim, l1 - l0), dtype=self.dtype),
                                   np.zeros(l1 - l0, dtype=np.int64), np.zeros(l1 - l0))
                    xb[:, sel], kb[sel], ubb[sel] = xs[:, lo:hi], ks[lo:hi], ub[lo:hi]
            ab, aeb, hit = self._block(xb, Wb, nW, kb, ubb, 2 * w - 1)
            a[lo:hi], ae[lo:hi], none[lo:hi] = ab[sel], aeb[sel], ~hit[sel]
            if copied and hit.any():
                self.W[b, :K, :, lanes[hit]] = Wb[:, :, hit].transpose(2, 0, 1)
                self.nW[b, :K, lanes[hit]] = nW[:, hit].T
        empty = ks == 0
        a[empty], ae[empty] = 0.0, 0.0
        out = np.empty((3, len(D)))
        out[0, order], out[1, order], out[2, order] = a, ae, none
        return out[0], out[1], out[2].astype(bool)

    @staticmethod
    def _block(x: np.ndarray, W: np.ndarray, nW: np.ndarray, k: np.ndarray, ub: np.ndarray, e: int):
        """One block: shapes ``x`` (dim, places) against categories ``W`` (slots, dim, places), which
        it refines in place (and their sums ``nW``). Returns the best match and its level-match per
        place, and whether any category of the place was refined."""
        em = np.empty_like(W)  # the minimum, kept for the refinement
        esum = min_sums(x, W, em)
        nWs = nW.copy()
        nWs[nW == 0] = 1e-3
        feat = esum / nWs
        energy = (em[:, e] + em[:, -1]) / np.maximum(W[:, e] + W[:, -1], 1e-300 if W.dtype == np.float64 else 1e-30)
        m = feat**3 * energy**2
        valid = np.arange(len(W))[:, None] < k
        up = valid & (m >= ub)
        hit = up.any(axis=0)
        if hit.any():
            refine(W, x, up, em)
            np.copyto(nW, esum, where=up)
        best = np.argmax(np.where(valid, m, -np.inf), axis=0)
        r = np.arange(len(k))
        return m[best, r], energy[best, r], hit
