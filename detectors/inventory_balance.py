"""Chemical security: a tank's mass balance with its uncertainty, and a CUSUM on the residual.

Book inventory (the measured inventory at the last reconciliation, minus declared issues, plus
declared receipts) is compared with the measured inventory. Their difference, the **residual**,
is zero within its uncertainty while everything that left the tank was declared; material that
leaves undeclared makes it grow. A one-sided CUSUM on the standardised residual finds a slow loss
(a siphon) as early as the uncertainty allows, and says how slow a loss it can find at all
(:func:`minimum_detectable_rate`).

How it works, per tank
----------------------
* Readings are converted to quantity (× ``capacity``/100 for a sensor in %) and, where the tank
  has a temperature sensor and an expansion coefficient (``temperature``, ``expansion``), to the
  quantity at ``reference_temperature``: ``q / (1 + β (T − T_ref))`` (volume expands with
  temperature, the mass does not: a thermal swing is not a loss).
* Readings are averaged over ``bucket`` seconds; each bucket mean ``m`` closes one step.
* ``residual = book − m``; its uncertainty ``σ = √(2 σ_noise² + accuracy² + Σ (transfer_tolerance ×
  declared)²)``: the scatter of a bucket mean (learned online from consecutive buckets outside
  transfers), the instrument's accuracy (``accuracy``, quantity units, from its data sheet) and
  each declaration's metering tolerance since the last reconciliation.
* ``z = (residual − evaporation × hours) / σ``; ``S_loss = max(0, S_loss + z − k)``,
  ``S_gain = max(0, S_gain − z − k)``; ``inventory_loss`` at ``S_loss ≥ h``, ``inventory_gain``
  (material arrived undeclared) at ``S_gain ≥ h``. Both clear below ``clear_ratio × h``.
* A bucket touching a declared transfer (widened by ``transfer_margin``) is not counted: the tank
  is being pumped. The first bucket wholly after it books the declaration and compares what moved
  (the bucket mean before the transfer minus the one after) with what was declared:
  ``more_than_declared`` (more left, or less arrived: skimming) or ``less_than_declared`` (less
  left, or more arrived: a cover story) when they differ by more than ``mismatch_k`` σ of that
  comparison and ``min_mismatch``; held for ``hold`` seconds, then the balance speaks.
* A declaration made after the fact books at the next bucket and restarts both CUSUMs.
* Connected tanks (``groups``: material moves between them through fixed lines): the sum of their
  residuals has its own CUSUM, stepped when the group's first tank closes a bucket and no member
  is being pumped; ``group_loss`` is raised on the first tank. A loss spread over the group, each
  part below its tank's threshold, adds up here.
* Every ``reconcile`` seconds of calm the residual becomes the new reference (the officer's
  periodic reconciliation): a loss slower than the CUSUM can see within that time is absorbed.

Declarations: :meth:`InventoryBalance.declare_transfer` (tank's quantity units, > 0 leaves).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import numpy as np

from .base import Detector, Output, SensorInfo
from .decide import Decider, KindDecider
from .inventory_balance_params import InventoryBalanceParams, minimum_detectable_rate
from .registry import register

PERCENT_UNITS = {"%", "percent", "pct", "% capacity", "%cap"}
#: bucket means kept per tank (for comparing a transfer with its declaration)
HISTORY = 96
S_CAP = 1e6

__all__ = ["InventoryBalance", "InventoryBalanceParams", "minimum_detectable_rate"]


@register
class InventoryBalance(Detector):
    name = "inventory_balance"
    Params = InventoryBalanceParams
    TAKES_TRANSFERS = True
    CONDITIONS = ("normal", "inventory_loss", "more_than_declared", "less_than_declared", "inventory_gain",
                  "group_loss")
    SEVERITY = {"inventory_loss": "high", "more_than_declared": "high", "less_than_declared": "high",
                "inventory_gain": "medium", "group_loss": "high"}
    univariate: ClassVar[bool] = False  # a tank's temperature sensor compensates its level

    def __init__(self, params: InventoryBalanceParams, sensors):
        super().__init__(params, sensors)
        p, n = params, self.n
        ids = {s.id: i for i, s in enumerate(self.sensors)}

        def per(v, default):
            if isinstance(v, dict):
                return np.array([float(v.get(s.id, default)) for s in self.sensors])
            return np.full(n, default if v is None else float(v))

        cap = per(p.capacity, np.nan)
        pct = np.array([s.unit.strip().lower() in PERCENT_UNITS for s in self.sensors], dtype=bool)
        self.conv = np.where(pct & np.isfinite(cap), cap / 100.0, 1.0)
        self.acc = per(p.accuracy, 0.0)
        self.is_temp = np.array([s.kind == "temperature" for s in self.sensors], dtype=bool)
        self.tcol = np.array([ids.get(p.temperature.get(s.id, ""), -1) for s in self.sensors], dtype=np.int64)
        self.beta = np.array([float(p.expansion.get(s.id, 0.0)) for s in self.sensors])
        self.temp = np.full(n, np.nan)  # last temperature (temperature columns)
        self.b_t0 = np.full(n, np.nan)  # current bucket: first reading time
        self.b_t1 = np.full(n, np.nan)  # its last reading time
        self.b_sum = np.zeros(n)
        self.b_n = np.zeros(n, dtype=np.int64)
        self.hist_t0 = np.full((n, HISTORY), np.nan)  # closed buckets: start, end, mean
        self.hist_t1 = np.full((n, HISTORY), np.nan)
        self.hist_m = np.full((n, HISTORY), np.nan)
        self.hist_pos = np.zeros(n, dtype=np.int64)
        self.book = np.full(n, np.nan)
        self.r_ref = np.zeros(n)
        self.ref_t = np.full(n, np.nan)
        self.r_prev = np.full(n, np.nan)
        self.sigma = np.full(n, np.nan)  # learned sigma of a bucket mean
        self.dvar = np.zeros(n)  # declaration variance since the reconciliation
        self.s_loss = np.zeros(n)
        self.s_gain = np.zeros(n)
        self.nb = np.zeros(n, dtype=np.int64)  # buckets closed
        self.prev_t0 = np.full(n, np.nan)  # start of the previous closed bucket
        self.held = np.zeros(n, dtype=np.int8)  # held mismatch condition
        self.held_until = np.full(n, -np.inf)
        self.mismatch = np.full(n, np.nan)  # last moved - declared
        self.kind = np.zeros(n, dtype=np.int8)  # condition of the balance
        self.tr = np.zeros((0, 5))  # col, start, end, quantity, booked
        # connected tanks: their summed residual has its own CUSUM, raised on the group's first tank
        self.g_cols = [np.array([ids[m] for m in ms if m in ids], dtype=np.int64) for ms in p.groups.values()]
        self.g_cols = [g for g in self.g_cols if len(g) >= 2]
        self.g_dev = np.full(n, np.nan)  # each tank's latest deviation of its residual (nan: being pumped)
        self.g_s = np.zeros(len(self.g_cols))
        self.g_on = np.zeros(len(self.g_cols), dtype=bool)

    @classmethod
    def example_params(cls) -> dict[str, Any]:
        return {"bucket": 60.0, "h": 5.0, "warmup_buckets": 3, "accuracy": 0.05, "reconcile": 3600.0}

    @classmethod
    def example_sensors(cls, n: int = 4) -> list[SensorInfo]:
        return [SensorInfo(id=f"TK{i}", kind="level", unit="m3", range_min=0.0, range_max=100.0, area="A")
                for i in range(n)]

    def make_decider(self) -> Decider:
        return KindDecider(self.n, self.params.on_delay, self.params.off_delay)  # the CUSUMs decide the kind

    def _state_arrays(self):
        return {k: getattr(self, k) for k in (
            "temp", "b_t0", "b_t1", "b_sum", "b_n", "hist_t0", "hist_t1", "hist_m", "hist_pos", "book", "r_ref",
            "ref_t", "r_prev", "sigma", "dvar", "s_loss", "s_gain", "nb", "prev_t0", "held", "held_until",
            "mismatch", "kind", "tr", "g_dev", "g_s", "g_on")}

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        self.tr = np.array(state["tr"], dtype=np.float64).reshape(-1, 5)

    # --- transfers ---------------------------------------------------------------------------
    def declare_transfer(self, col: int | str, start: float, end: float, quantity: float) -> None:
        """Declare a transfer: ``quantity`` > 0 leaves the tank, < 0 enters it (quantity units)."""
        c = self.column(col)
        start, end, quantity = self.transfer_span(start, end, quantity)
        self.tr = np.vstack([self.tr, [c, start, end, quantity, 0.0]])

    # --- the balance ---------------------------------------------------------------------------
    def sigma_of(self, cols: np.ndarray) -> np.ndarray:
        """Uncertainty of the residual (quantity units)."""
        s = np.where(np.isfinite(self.sigma[cols]), self.sigma[cols], 0.0)
        out = np.sqrt(2.0 * s * s + self.acc[cols] ** 2 + self.dvar[cols])
        return np.maximum(out, 1e-9 * (1.0 + np.abs(np.nan_to_num(self.book[cols]))))

    def minimum_detectable(self, col: int | str, horizon: float = 6 * 3600.0) -> float:
        """Smallest loss rate (quantity units per hour) this tank's balance finds within ``horizon``."""
        c = self.column(col)
        p: InventoryBalanceParams = self.params
        return minimum_detectable_rate(float(self.sigma_of(np.array([c]))[0]), p.bucket, p.k, p.h, horizon)

    def _quantity(self, idx, x):
        with np.errstate(all="ignore"):
            q = x * self.conv[idx]
            tc = self.tcol[idx]
            temp = np.where(tc >= 0, self.temp[np.maximum(tc, 0)], np.nan)
            comp = (tc >= 0) & (self.beta[idx] > 0) & np.isfinite(temp)
            q = np.where(comp, q / (1.0 + self.beta[idx] * (temp - self.params.reference_temperature)), q)
        return q

    def _status(self, idx, t):
        h = self.params.h
        with np.errstate(all="ignore"):
            score = np.maximum(self.s_loss[idx], self.s_gain[idx]) / h
        held = (self.held[idx] != 0) & (t <= self.held_until[idx])
        kind = np.where(held, self.held[idx], self.kind[idx])
        score = np.where(held, np.maximum(score, 1.0), score)
        return np.clip(np.nan_to_num(score, nan=0.0, posinf=S_CAP), 0.0, S_CAP), kind.astype(np.int8)

    def score_many(self, idx, t, x):
        idx = np.asarray(idx, dtype=np.int64)
        return self._status(idx, np.asarray(t, dtype=np.float64))[0]

    def update(self, idx, t, x) -> Output:
        idx = np.asarray(idx, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        self._advance(idx, t, x)
        score, kind = self._status(idx, t)
        code = self.decider.step(idx, t, score, kind)
        return Output(idx, t, score, code)

    def learn_many(self, idx, t, x):
        idx = np.asarray(idx, dtype=np.int64)
        self._advance(idx, np.asarray(t, dtype=np.float64), np.asarray(x, dtype=np.float64))

    def _advance(self, idx, t, x):
        good = np.isfinite(x) & np.isfinite(t) & (np.abs(x) <= 1e12)
        tmp = good & self.is_temp[idx]
        self.temp[idx[tmp]] = x[tmp]
        lv = good & ~self.is_temp[idx]
        if not lv.any():
            return
        idx, t, x = idx[lv], t[lv], x[lv]
        self.seen[idx] += 1
        q = self._quantity(idx, x)
        ok = np.isfinite(q)
        idx, t, q = idx[ok], t[ok], q[ok]
        p: InventoryBalanceParams = self.params
        close = (self.b_n[idx] > 0) & (t - self.b_t0[idx] >= p.bucket)
        if close.any():
            c = idx[close]
            self._close(c, self.b_t0[c].copy(), self.b_t1[c].copy(), self.b_sum[c] / self.b_n[c])
            self.b_n[c] = 0
            self.b_sum[c] = 0.0
        new = self.b_n[idx] == 0
        self.b_t0[idx[new]] = t[new]
        self.b_sum[idx] += q
        self.b_n[idx] += 1
        self.b_t1[idx] = t

    def _close(self, c, t0, t1, m):
        p: InventoryBalanceParams = self.params
        slot = self.hist_pos[c] % HISTORY
        self.hist_t0[c, slot], self.hist_t1[c, slot], self.hist_m[c, slot] = t0, t1, m
        self.hist_pos[c] += 1
        self.nb[c] += 1
        first = ~np.isfinite(self.book[c])
        self.book[c[first]] = m[first]
        self.ref_t[c[first]] = t1[first]
        in_tr = np.zeros(len(c), dtype=bool)
        restart = np.zeros(len(c), dtype=bool)
        for r in range(len(self.tr)):
            col, s, e, qty, booked = self.tr[r]
            rows = np.flatnonzero(c == int(col))
            if not len(rows) or booked:
                continue
            k = rows[0]
            s0, e0 = s - p.transfer_margin, e + p.transfer_margin
            if t0[k] < e0:
                in_tr[k] |= t1[k] >= s0
                continue
            if first[k]:  # nothing to compare with: the book starts here, after the transfer
                self.tr[r, 4] = 1.0
                continue
            self.tr[r, 4] = 1.0
            self.book[c[k]] -= qty
            self.dvar[c[k]] += (p.transfer_tolerance * qty) ** 2
            restart[k] |= bool(np.isfinite(self.prev_t0[c[k]]) and self.prev_t0[c[k]] >= e0)  # declared late
            self._compare(int(c[k]), s0, qty, float(m[k]), float(t1[k]))
        if len(self.tr):
            self.tr = self.tr[self.tr[:, 4] == 0]  # booked: part of the book now, no longer needed
        self.prev_t0[c] = t0
        live = ~first & ~in_tr
        self.r_prev[c[in_tr]] = np.nan
        self.g_dev[c[in_tr]] = np.nan
        self.s_loss[c[restart]] = 0.0
        self.s_gain[c[restart]] = 0.0
        if not live.any():
            self._decide(c)
            return
        cl, ml, tl = c[live], m[live], t1[live]
        r = self.book[cl] - ml
        # sigma of a bucket mean, from consecutive calm buckets (Huber-clipped EWMA)
        calm = (self.kind[cl] == 0) & np.isfinite(self.r_prev[cl])
        with np.errstate(all="ignore"):
            dev = np.abs(r - self.r_prev[cl]) / math.sqrt(2.0)
            old = self.sigma[cl]
            clipped = np.where(np.isfinite(old), np.minimum(dev, 5 * np.maximum(old, self.acc[cl] + 1e-12)), dev)
            alpha = np.maximum(1.0 / np.maximum(self.nb[cl] - 1, 1), 0.05)
            self.sigma[cl] = np.where(calm, np.where(np.isfinite(old), old + alpha * (clipped - old), dev), old)
        self.r_prev[cl] = r
        sig = self.sigma_of(cl)
        hours = np.maximum(tl - self.ref_t[cl], 0.0) / 3600.0
        with np.errstate(all="ignore"):
            z = np.clip((r - self.r_ref[cl] - p.evaporation * hours) / sig, -S_CAP, S_CAP)
        warm = self.nb[cl] >= p.warmup_buckets
        with np.errstate(all="ignore"):
            self.g_dev[cl] = np.where(warm, r - self.r_ref[cl] - p.evaporation * hours, np.nan)
        self.s_loss[cl] = np.where(warm, np.clip(self.s_loss[cl] + z - p.k, 0.0, S_CAP), 0.0)
        self.s_gain[cl] = np.where(warm, np.clip(self.s_gain[cl] - z - p.k, 0.0, S_CAP), 0.0)
        # the periodic reconciliation: calm for `reconcile` seconds -> the residual is the new reference
        due = (tl - self.ref_t[cl] >= p.reconcile) & (self.s_loss[cl] < p.h / 2) & (self.s_gain[cl] < p.h / 2) \
            & (self.kind[cl] == 0)
        d = cl[due]
        self.r_ref[d] = r[due]
        self.ref_t[d] = tl[due]
        self.dvar[d] = 0.0
        for g, members in enumerate(self.g_cols):  # a group steps when its first tank closes a bucket
            if members[0] in cl and np.isfinite(self.g_dev[members]).all():
                sg = float(np.sqrt(np.sum(self.sigma_of(members) ** 2)))
                zg = min(max(float(np.sum(self.g_dev[members])) / sg, -S_CAP), S_CAP)
                self.g_s[g] = min(max(self.g_s[g] + zg - p.k, 0.0), S_CAP)
        self._decide(c)

    def _compare(self, col: int, s0: float, qty: float, after: float, t: float) -> None:
        """What moved (the last bucket before the widened transfer minus the first after it) vs declared."""
        p: InventoryBalanceParams = self.params
        before = np.flatnonzero(np.isfinite(self.hist_m[col]) & (self.hist_t1[col] < s0))
        if not len(before):
            return
        j = before[np.argmax(self.hist_t1[col, before])]
        moved = float(self.hist_m[col, j]) - after
        diff = moved - qty
        self.mismatch[col] = diff
        noise = float(self.sigma[col]) if math.isfinite(self.sigma[col]) else 0.0
        s = math.sqrt(2 * noise * noise + self.acc[col] ** 2 + (p.transfer_tolerance * qty) ** 2)
        if abs(diff) > p.mismatch_k * s and abs(diff) >= p.min_mismatch:
            self.held[col] = 2 if diff > 0 else 3
            self.held_until[col] = t + p.hold

    def _decide(self, c):
        p: InventoryBalanceParams = self.params
        cur = self.kind[c]
        lim_loss = np.where(cur == 1, p.clear_ratio * p.h, p.h)
        lim_gain = np.where(cur == 4, p.clear_ratio * p.h, p.h)
        self.kind[c] = np.where(self.s_loss[c] >= lim_loss, 1, np.where(self.s_gain[c] >= lim_gain, 4, 0)).astype(np.int8)
        for g, members in enumerate(self.g_cols):
            lead = members[0]
            if lead not in c:
                continue
            self.g_on[g] = self.g_s[g] >= (p.clear_ratio * p.h if self.g_on[g] else p.h)
            if self.g_on[g] and self.kind[lead] == 0:
                self.kind[lead] = 5

    def explain(self, col: int | str) -> dict[str, Any]:
        """The balance of one tank: book, measured, residual, its sigma, CUSUMs, minimum detectable rate."""
        c = self.column(col)
        last = self.hist_m[c, (self.hist_pos[c] - 1) % HISTORY] if self.hist_pos[c] else float("nan")
        return {"sensor": self.sensors[c].id, "book": float(self.book[c]), "measured": float(last),
                "residual": float(self.book[c] - last - self.r_ref[c]), "sigma": float(self.sigma_of(np.array([c]))[0]),
                "cusum_loss": float(self.s_loss[c]), "cusum_gain": float(self.s_gain[c]),
                "last_mismatch": float(self.mismatch[c]), "min_detectable_per_hour_6h": self.minimum_detectable(c)}
