"""Chemical security: a tank's contents fall without a declared transfer (theft, diversion).

Watches level / inventory sensors (m³, kg, t, or % of capacity with ``capacity``). Material
legitimately leaves a tank only through declared transfers (a truck loading, a transfer to
another unit), declared over MQTT or the CLI and handed to the detector with
:meth:`UnexplainedLoss.declare_transfer`. A fall of the measured quantity that the declarations
do not explain is the signature of theft or diversion (or of a leak).

How the loss is measured
------------------------
* The level is smoothed by the median of the last ``smooth`` readings (a single glitch or
  dropout to 0 does nothing) and converted to a quantity (× ``capacity``/100 for % sensors).
* Every ``window/snapshots`` seconds a snapshot of the smoothed quantity is kept; the
  snapshots of the last ``window`` seconds are the reference points.
* For each reference point τ: ``unexplained = q(τ) − removed(τ, now) + received(τ, now) − q(now)``
  where ``removed`` counts every declared removal overlapping [τ, now] *in full* (so a transfer
  pumped faster than declared does not alarm) and ``received`` counts declared receipts lying
  entirely within it (a receipt not yet delivered does not alarm either).
  Transfer times are widened by ``transfer_margin`` on both sides (late declarations, clocks).
* Its tolerance: ``max(min_loss, noise_k × σ_noise × √(π/smooth)) + evaporation × hours +
  transfer_tolerance × |declared quantity in the window|``; σ_noise is learned from the
  readings' scatter around the smoothed level.
* score = max over reference points of ``unexplained / tolerance`` (1.0 = the tolerance).

Conditions
----------
* ``unexplained_loss`` (high): the worst window holds no declared removal.
* ``loss_during_transfer_exceeds_declared`` (medium): it does, and more left than declared.

With ``latch: true`` (default) the reference point that raised the condition is kept until the
loss is explained or recovered (a transfer declared after the fact, the material put back):
missing material stays missing, it does not "clear" when the window moves past it.

Limits: a tank with undeclared continuous in- or outflow (a process buffer) needs a flow
balance, not this detector; an undeclared fill in the same window masks a loss of the same size.

Transfer declarations (the daemon's side)::

    det.declare_transfer(col_or_sensor_id, start, end, quantity)

``start``/``end`` in Unix seconds (reading time), ``quantity`` in the tank's quantity units
(after the ``capacity`` conversion: for a tank in %, the capacity's unit): positive = removed from
the tank, negative = received. The daemon converts each declaration, which carries its unit (% of
capacity or the capacity's unit), before handing it here (daemon/config/inventory.py).
Declarations may come before, during or after the transfer; they are part of the saved state.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import numpy as np
from pydantic import Field, field_validator

from .base import Detector, Output, debounce
from .decide import Decider, KindDecider
from .registry import register
from .rowstats import nanmedian_rows

PERCENT_UNITS = {"%", "percent", "pct", "% capacity", "%cap"}


def _positive_map(v, name):
    if isinstance(v, dict):
        for k, x in v.items():
            if not (isinstance(x, (int, float)) and math.isfinite(x) and x > 0):
                raise ValueError(f"{name}[{k!r}] must be a positive number, got {x!r}")
    return v


class UnexplainedLossParams(debounce(clear_ratio=0.5, longest=86400)):
    capacity: float | dict[str, float] | None = Field(
        None, description="capacity of tanks reporting in % (one number, or per sensor id): converts % to quantity")
    min_loss: float | dict[str, float] = Field(
        1.0, description="smallest loss that counts, in quantity units (one number, or per sensor id)")
    smooth: int = Field(5, ge=1, le=101, description="median of the last this many readings is the level")
    window: float = Field(3600.0, ge=60, le=7 * 86400, description="seconds of reference levels looked back over")
    snapshots: int = Field(60, ge=4, le=1000, description="reference levels kept over the window")
    noise_k: float = Field(4.0, ge=0, le=100, description="tolerance in noise standard deviations")
    evaporation: float = Field(0.0, ge=0, description="allowed loss per hour (evaporation, breathing), quantity units")
    transfer_tolerance: float = Field(0.02, ge=0, le=1, description="allowed metering error, fraction of declared quantities")
    transfer_margin: float = Field(600.0, ge=0, le=86400, description="seconds a declared transfer is widened by, each side")
    latch: bool = Field(True, description="hold the condition until the loss is explained or recovered")

    @field_validator("capacity")
    @classmethod
    def _cap(cls, v):
        if isinstance(v, float) and not (math.isfinite(v) and v > 0):
            raise ValueError("capacity must be a positive number")
        return _positive_map(v, "capacity")

    @field_validator("min_loss")
    @classmethod
    def _min_loss(cls, v):
        if isinstance(v, float) and not (math.isfinite(v) and v > 0):
            raise ValueError("min_loss must be a positive number")
        return _positive_map(v, "min_loss")


class LossDecider(KindDecider):
    """Codes 0 normal, 1 unexplained_loss, 2 loss_during_transfer_exceeds_declared.

    ``x`` passed to :meth:`step` is the kind (1 or 2) of the worst window; the score decides.
    """

    def __init__(self, n: int, clear_ratio: float, on_delay: float, off_delay: float):
        super().__init__(n, on_delay, off_delay)
        self.clear_ratio = float(clear_ratio)

    def raw(self, idx, score, x):
        held = self.code[idx] != 0
        active = np.where(held, score >= self.clear_ratio, score >= 1.0)
        return np.where(active, x, 0).astype(np.int8)



@register
class UnexplainedLoss(Detector):
    name = "unexplained_loss"
    Params = UnexplainedLossParams
    TAKES_TRANSFERS = True
    CONDITIONS = ("normal", "unexplained_loss", "loss_during_transfer_exceeds_declared")
    SEVERITY = {"unexplained_loss": "high", "loss_during_transfer_exceeds_declared": "medium"}
    univariate: ClassVar[bool] = True  # tanks are independent

    def __init__(self, params: UnexplainedLossParams, sensors):
        super().__init__(params, sensors)
        p, n = params, self.n

        def per(v, default):
            if isinstance(v, dict):
                return np.array([float(v.get(s.id, default)) for s in self.sensors])
            return np.full(n, default if v is None else float(v))

        cap = per(p.capacity, np.nan)
        pct = np.array([s.unit.strip().lower() in PERCENT_UNITS for s in self.sensors], dtype=bool)
        self.conv = np.where(pct & np.isfinite(cap), cap / 100.0, 1.0)  # reading -> quantity
        self.min_loss = per(p.min_loss, 1.0 if isinstance(p.min_loss, dict) else p.min_loss)
        self.warmup = p.smooth + 2
        k, m = p.smooth, p.snapshots
        self.sbuf = np.full((n, k), np.nan)  # recent readings (quantity units)
        self.spos = np.zeros(n, dtype=np.int64)
        self.noise = np.full(n, np.nan)  # robust sigma of readings around the smoothed level
        self.snap_t = np.full((n, m), -np.inf)
        self.snap_q = np.full((n, m), np.nan)
        self.snap_pos = np.zeros(n, dtype=np.int64)
        self.ref = np.full((n, 2), np.nan)  # latched reference (t, q)
        self.level = np.full(n, np.nan)  # current smoothed quantity
        self.last_t = np.full(n, -np.inf)  # time of the last good reading
        self.tr = np.zeros((0, 4))  # declared transfers: col, start, end, quantity

    @classmethod
    def example_params(cls) -> dict[str, Any]:
        return {"min_loss": 0.5, "window": 1800, "smooth": 5}

    def make_decider(self) -> Decider:
        p: UnexplainedLossParams = self.params
        return LossDecider(self.n, p.clear_ratio, p.on_delay, p.off_delay)

    def _state_arrays(self):
        return {"sbuf": self.sbuf, "spos": self.spos, "noise": self.noise, "snap_t": self.snap_t,
                "snap_q": self.snap_q, "snap_pos": self.snap_pos, "ref": self.ref, "level": self.level,
                "last_t": self.last_t, "tr": self.tr}

    # --- transfers ---------------------------------------------------------------------------
    def declare_transfer(self, col: int | str, start: float, end: float, quantity: float) -> None:
        """Declare a transfer: ``quantity`` > 0 leaves the tank, < 0 enters it (quantity units)."""
        c = self.column(col)
        start, end, quantity = self.transfer_span(start, end, quantity)
        self.tr = np.vstack([self.tr, [c, start, end, quantity]])

    def transfers(self, col: int | str | None = None) -> list[tuple[float, float, float]]:
        """Declared transfers still kept (start, end, quantity), of one column or all."""
        rows = self.tr if col is None else self.tr[self.tr[:, 0] == self.column(col)]
        return [(float(r[1]), float(r[2]), float(r[3])) for r in rows]

    # --- scoring -----------------------------------------------------------------------------
    def _smoothed(self, idx, x):
        """Smoothed quantity if ``x`` (quantity units) were the newest reading."""
        k = self.params.smooth
        buf = self.sbuf[idx].copy()
        buf[np.arange(len(idx)), self.spos[idx] % k] = x
        return nanmedian_rows(buf)

    def _assess(self, idx, t, q_now):
        """Score and kind (1 unexplained, 2 during transfer) of each reading, and the reference."""
        p: UnexplainedLossParams = self.params
        m = len(idx)
        ct = np.concatenate([self.snap_t[idx], self.ref[idx, :1]], axis=1)  # (m, S+1)
        cq = np.concatenate([self.snap_q[idx], self.ref[idx, 1:]], axis=1)
        latched = np.zeros_like(ct, dtype=bool)
        latched[:, -1] = True
        valid = np.isfinite(cq) & np.isfinite(ct) & ((ct >= t[:, None] - p.window) | latched) & (ct <= t[:, None])
        removed = np.zeros_like(cq)
        received = np.zeros_like(cq)
        declared = np.zeros_like(cq)
        during = np.zeros_like(cq, dtype=bool)
        if len(self.tr):
            for col, s, e, qty in self.tr:
                rows = np.flatnonzero(idx == int(col))
                if not len(rows):
                    continue
                s0, e0 = s - p.transfer_margin, e + p.transfer_margin
                tt, tau = t[rows, None], ct[rows]
                if qty >= 0:
                    hit = (s0 <= tt) & (e0 >= tau)
                    removed[rows] += np.where(hit, qty, 0.0)
                    during[rows] |= hit
                else:
                    hit = (s0 >= tau) & (e0 <= tt)
                    received[rows] += np.where(hit, -qty, 0.0)
                declared[rows] += np.where(hit, abs(qty), 0.0)
        sigma = np.where(np.isfinite(self.noise[idx]), self.noise[idx], 0.0)
        base_tol = np.maximum(self.min_loss[idx], p.noise_k * sigma * math.sqrt(math.pi / p.smooth))
        hours = np.maximum(t[:, None] - ct, 0.0) / 3600.0
        tol = base_tol[:, None] + p.evaporation * np.where(np.isfinite(hours), hours, 0.0) + p.transfer_tolerance * declared
        with np.errstate(all="ignore"):
            ratio = (cq - removed + received - q_now[:, None]) / tol
        ratio = np.where(valid & np.isfinite(ratio), ratio, -np.inf)
        best = np.argmax(ratio, axis=1)
        k = np.arange(m)
        score = np.clip(ratio[k, best], 0.0, 1e12)
        kind = np.where(during[k, best], 2, 1).astype(np.int8)
        return score, kind, ct[k, best], cq[k, best]

    def score_many(self, idx, t, x):
        idx = np.asarray(idx, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            xq = np.asarray(x, dtype=np.float64) * self.conv[idx]
        q_now = self._smoothed(idx, np.where(np.isfinite(xq), xq, np.nan))
        score = self._assess(idx, t, q_now)[0]
        warm = (self.spos[idx] + 1 >= self.warmup) & np.isfinite(q_now)
        return np.where(warm, score, 0.0)

    def update(self, idx, t, x) -> Output:
        idx = np.asarray(idx, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            xq = x * self.conv[idx]
        xq = np.where(np.isfinite(xq), xq, np.nan)
        q_now = self._smoothed(idx, xq)
        score, kind, rt, rq = self._assess(idx, t, q_now)
        warm = (self.spos[idx] + 1 >= self.warmup) & np.isfinite(q_now)
        score = np.where(warm, score, 0.0)
        before = self.decider.code[idx].copy()
        code = self.decider.step(idx, t, score, kind)
        if self.params.latch:
            start = (before == 0) & (code != 0)
            self.ref[idx[start]] = np.stack([rt[start], rq[start]], axis=1)
            self.ref[idx[code == 0]] = np.nan
        self._learn(idx, t, xq, q_now, calm=code == 0)
        return Output(idx, t, score, code)

    def learn_many(self, idx, t, x):
        idx = np.asarray(idx, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            xq = np.asarray(x, dtype=np.float64) * self.conv[idx]
        xq = np.where(np.isfinite(xq), xq, np.nan)
        self._learn(idx, t, xq, self._smoothed(idx, xq), calm=np.ones(len(idx), dtype=bool))

    def _learn(self, idx, t, xq, q_now, calm):
        """The level history is data, not a model: always kept. Noise is learned when calm."""
        p: UnexplainedLossParams = self.params
        good = np.isfinite(xq) & np.isfinite(t)
        idx, t, xq, q_now, calm = idx[good], t[good], xq[good], q_now[good], calm[good]
        if not len(idx):
            return
        self.seen[idx] += 1
        k = p.smooth
        prev = self.sbuf[idx, (self.spos[idx] - 1) % k]  # previous reading
        self.sbuf[idx, self.spos[idx] % k] = xq
        self.spos[idx] += 1
        self.level[idx] = q_now
        self.last_t[idx] = t
        # noise sigma: EWMA of |difference of consecutive readings| / sqrt(2) (Huber-clipped), from
        # calm readings outside declared transfers, so that real level changes hardly count
        dev = np.abs(xq - prev) * (1.2533 / math.sqrt(2.0))
        ok = calm & np.isfinite(dev) & ~self._in_transfer(idx, t)
        old = self.noise[idx]
        bound = 5 * np.maximum(old, 0.01 * self.min_loss[idx])  # quantised, flat levels: never stuck at 0
        clipped = np.where(np.isfinite(old), np.minimum(dev, bound), dev)
        alpha = np.maximum(1.0 / np.maximum(self.spos[idx] - 1, 1), 0.01)
        self.noise[idx] = np.where(ok, np.where(np.isfinite(old), old + alpha * (clipped - old), dev), old)
        # snapshots
        interval = p.window / p.snapshots
        last = self.snap_t[idx, (self.snap_pos[idx] - 1) % p.snapshots]
        due = (t - last >= interval) & (self.spos[idx] >= min(k, self.warmup))
        if due.any():
            di = idx[due]
            slot = self.snap_pos[di] % p.snapshots
            self.snap_t[di, slot] = t[due]
            self.snap_q[di, slot] = q_now[due]
            self.snap_pos[di] += 1
        self._prune()

    def _in_transfer(self, idx, t) -> np.ndarray:
        out = np.zeros(len(idx), dtype=bool)
        m = self.params.transfer_margin
        for col, s, e, _ in self.tr:
            out |= (idx == int(col)) & (t >= s - m) & (t <= e + m)
        return out

    def _prune(self) -> None:
        """Forget transfers that no reference point of any tank can overlap any more."""
        if not len(self.tr):
            return
        p: UnexplainedLossParams = self.params
        seen = self.last_t[np.isfinite(self.last_t)]
        if not len(seen):
            return
        keep_from = float(seen.min()) - p.window - 2 * p.transfer_margin
        refs = self.ref[:, 0]
        if np.isfinite(refs).any():
            keep_from = min(keep_from, float(np.nanmin(refs)) - 2 * p.transfer_margin)
        self.tr = self.tr[self.tr[:, 2] >= keep_from]

    def explain(self, col: int | str) -> dict[str, Any]:
        """The tank's current level, its latched reference and the transfers considered."""
        c = self.column(col)
        return {"sensor": self.sensors[c].id, "level": float(self.level[c]),
                "reference_time": float(self.ref[c, 0]), "reference_level": float(self.ref[c, 1]),
                "noise_sigma": float(self.noise[c]), "transfers": self.transfers(c)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        self.tr = np.array(state["tr"], dtype=np.float64).reshape(-1, 4)
