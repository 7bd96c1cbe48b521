"""Robot inspection: each reading compared with the baseline learned for the same place.

Inspection robots carry gas, temperature and acoustic channels along a route. What is normal
depends on where the robot is (a hot pipe, a pump's noise, a flange that always smells a little),
so a reading is compared with the baseline of its **place**: the site map is divided into square
cells of ``cell`` metres over ``extent``; per (channel, cell) the detector keeps a small ring of
recent normal values and scores ``z = (x − median) / max(1.4826·MAD, floor)``.

* A cell's baseline is used once it holds ``cell_warmup`` values; until then (a place the robot
  has not visited often enough, a reading without a position or outside ``extent``) the reading
  is scored against the channel's **global** baseline (same statistics over the channel's recent
  values everywhere), which is broader: only gross deviations count there.
* A reading is scored against the warm cells within ``neighbourhood`` cells of its own (the
  3 x 3 block by default) and counts as anomalous only if it is anomalous against **all** of
  them: a place at the edge of a hot spot, or a small localisation error, does not alarm. The
  price: a deviation right next to a place where that value is normal is not seen.
* Consecutive readings in one pass over a cell are nearly the same value; to make the ring hold
  values from different passes, a cell (and the global ring) stores at most one value per
  ``learn_interval`` seconds of reading time.
* Everything is judged and learned **relative to the channel's site-wide reference**
  (:mod:`.robot_reference`): the median, over the last ``reference_window`` place visits, of each
  reading minus its place's offset. Ambient temperature's daily cycle or a site-wide gas rise move
  every place together and are subtracted; only what is specific to a place alarms, and places
  learn their offset relative to the site (they never stay stuck on an ambient that has moved).
* Readings not flagged are learned; a cell still warming up learns every reading (a hot pipe is
  flagged against the global baseline on the first passes and must still become that place's
  normal); a warm flagged place still learns one value per ``flagged_learn_interval``.
* A place anomalous on one visit is only suspect: it alarms when it is still anomalous
  ``confirm_after`` seconds later (the robot's next pass). At the start of a site-wide change the
  reference has moved by then and explains it.
* ``site_shift`` (a site-level condition): the reference departs from its own day-long baseline.
* ``floor`` = max(``min_scale``, ``min_scale_fraction`` × the sensor's measuring span): a cell
  whose few values happen to agree closely does not turn a small wiggle into an alarm.
* ``direction``: ``high`` (gas: only rises matter), ``low`` or ``both`` (default).

Channels are the detector's sensor columns (one robot's H2S channel is one sensor); their
baselines are independent. Storage is sparse: a cell gets a slot only when some channel learns a
value there, so memory follows the route, not the site area.

Position input (protocol extension, backwards compatible)
--------------------------------------------------------
``needs_position = True`` tells the daemon to pass each reading's site coordinates::

    out = det.update(idx, t, x, pos=xy)   # xy: float array (len(idx), 2) of x, y in metres

``score_many`` and ``learn_many`` take the same optional ``pos``. ``pos=None`` (or NaN rows) is
allowed: those readings use the global baseline, so the detector also runs under code that knows
nothing about positions (the generic conformance suite, a replay without coordinates).
:meth:`RobotBaseline.explain` gives the place and baseline behind a column's last reading.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from .base import Detector, DetectorParams, Output
from .decide import Decider, ThresholdDecider
from .registry import register
from .robot_grid import SiteGrid
from .robot_reference import SiteReference
from .rowstats import nanmedian_rows

MAD_TO_SIGMA = 1.4826
SCORE_CAP = 1e12
MAX_CELLS = 4_000_000


class RobotBaselineParams(DetectorParams):
    cell: float = Field(5.0, gt=0.1, le=1000, description="grid cell size in metres")
    extent: tuple[float, float, float, float] = Field((0.0, 0.0, 200.0, 120.0),
                                                     description="x0, y0, x1, y1 of the gridded part of the site (metres)")
    neighbourhood: int = Field(1, ge=0, le=5,
                               description="cells around a reading's cell whose baselines it may match (0: own cell only)")
    ring: int = Field(16, ge=4, le=256, description="values kept per (channel, cell)")
    cell_warmup: int = Field(6, ge=3, le=256, description="values a cell needs before its own baseline is used")
    global_ring: int = Field(256, ge=16, le=10_000, description="values kept per channel for the global baseline")
    global_warmup: int = Field(30, ge=5, le=10_000, description="values before the global baseline is used")
    learn_interval: float = Field(10.0, ge=0, le=86400,
                                  description="seconds between two values stored for the same cell (or global ring)")
    threshold: float = Field(6.0, gt=0, description="|z| at which local_anomaly starts")
    high_threshold: float | None = Field(None, gt=0, description="|z| of severe_local_anomaly (optional)")
    clear_ratio: float = Field(0.7, gt=0, le=1, description="condition clears below threshold * clear_ratio")
    direction: Literal["both", "high", "low"] = Field("both", description="which deviations count")
    min_scale: float = Field(0.0, ge=0, description="floor of the robust sigma, sensor units")
    min_scale_fraction: float = Field(0.002, ge=0, le=1, description="floor of the robust sigma, fraction of the measuring span")
    on_delay: float = Field(0.0, ge=0, le=3600, description="seconds |z| must stay high before alarming")
    off_delay: float = Field(0.0, ge=0, le=3600, description="seconds |z| must stay low before clearing")
    reference_window: int = Field(20, ge=0, le=1000,
                                  description="place visits behind the site-wide reference (about one round; 0: no reference)")
    confirm_after: float = Field(300.0, ge=0, le=86400,
                                 description="seconds a place must stay anomalous (next visit) before local_anomaly")
    flagged_learn_interval: float = Field(3600.0, ge=0, le=7 * 86400,
                                          description="seconds between two flagged values a warm place still learns")
    site_threshold: float | None = Field(6.0, gt=0, description="robust z of the reference at which site_shift starts (null: off)")
    site_interval: float = Field(1800.0, gt=0, le=86400, description="seconds between two reference values kept for site_shift")
    site_ring: int = Field(48, ge=8, le=10_000, description="reference values kept for site_shift (48 x 30 min: a day)")
    site_warmup: int = Field(12, ge=4, le=10_000, description="reference values before site_shift is judged")

    @field_validator("extent")
    @classmethod
    def _extent(cls, v):
        if not all(math.isfinite(a) for a in v) or not (v[0] < v[2] and v[1] < v[3]):
            raise ValueError("extent must be [x0, y0, x1, y1] with finite x0 < x1 and y0 < y1")
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.cell_warmup > self.ring:
            raise ValueError(f"cell_warmup ({self.cell_warmup}) must not exceed ring ({self.ring})")
        if self.site_warmup > self.site_ring:
            raise ValueError(f"site_warmup ({self.site_warmup}) must not exceed site_ring ({self.site_ring})")
        if self.global_warmup > self.global_ring:
            raise ValueError(f"global_warmup ({self.global_warmup}) must not exceed global_ring ({self.global_ring})")
        if self.high_threshold is not None and self.high_threshold <= self.threshold:
            raise ValueError("high_threshold must be above threshold")
        nx, ny = self.grid
        if nx * ny > MAX_CELLS:
            raise ValueError(f"extent / cell gives {nx} x {ny} cells, more than {MAX_CELLS}: use a larger cell")
        return self

    @property
    def grid(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.extent
        return math.ceil((x1 - x0) / self.cell), math.ceil((y1 - y0) / self.cell)


def _robust(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and robust sigma of each row (NaN = empty slot)."""
    med = nanmedian_rows(rows)
    with np.errstate(invalid="ignore"):
        mad = nanmedian_rows(np.abs(rows - med[..., None]))
    return med, MAD_TO_SIGMA * mad


@register
class RobotBaseline(Detector):
    name = "robot_baseline"
    Params = RobotBaselineParams
    CONDITIONS = ("normal", "local_anomaly", "severe_local_anomaly", "site_shift")
    SEVERITY = {"local_anomaly": "medium", "severe_local_anomaly": "high", "site_shift": "medium"}
    SITE_SHIFT: ClassVar[int] = 3
    SITE_LEVEL = ("site_shift",)
    #: the daemon passes ``pos=`` (site x, y per reading) to update/score_many/learn_many
    needs_position: ClassVar[bool] = True
    univariate: ClassVar[bool] = True  # channels are independent

    def __init__(self, params: RobotBaselineParams, sensors):
        super().__init__(params, sensors)
        n, p = self.n, params
        nx, ny = p.grid
        span = np.array([s.range_max - s.range_min for s in self.sensors], dtype=np.float64)
        span = np.where(np.isfinite(span), span, 0.0)
        self.floor = np.maximum(p.min_scale, p.min_scale_fraction * span)
        self.slot_of = np.full(nx * ny, -1, dtype=np.int32)  # cell -> slot
        self.cell_of = np.zeros(0, dtype=np.int64)  # slot -> cell
        self.cbuf = np.full((n, 0, p.ring), np.nan)
        self.cpos = np.zeros((n, 0), dtype=np.int64)
        self.clast = np.full((n, 0), -np.inf)
        self.cmed = np.full((n, 0), np.nan)
        self.cscale = np.full((n, 0), np.nan)
        self.csince = np.full((n, 0), np.nan)  # since when a place reads anomalous (not yet confirmed)
        self.cflag = np.full((n, 0), -np.inf)  # last flagged value a place learned
        self.reference = SiteReference(n, p.reference_window, p.site_ring, p.site_interval, p.site_warmup)
        self.gbuf = np.full((n, p.global_ring), np.nan)
        self.gpos = np.zeros(n, dtype=np.int64)
        self.glast = np.full(n, -np.inf)
        self.gmed = np.full(n, np.nan)
        self.gscale = np.full(n, np.nan)
        self.last_xy = np.full((n, 2), np.nan)  # position of each channel's last reading
        self.grid = SiteGrid(p.extent, p.cell, p.neighbourhood, p.grid)

    @classmethod
    def example_params(cls) -> dict[str, Any]:
        return {"cell": 5.0, "extent": [0.0, 0.0, 100.0, 100.0], "global_warmup": 20, "threshold": 6.0}

    def make_decider(self) -> Decider:
        p: RobotBaselineParams = self.params
        th = [p.threshold] + ([p.high_threshold] if p.high_threshold else [])
        return ThresholdDecider(self.n, th, clear_ratio=p.clear_ratio, on_delay=p.on_delay, off_delay=p.off_delay)

    def _state_arrays(self):
        return {"slot_of": self.slot_of, "cell_of": self.cell_of, "cbuf": self.cbuf, "cpos": self.cpos,
                "clast": self.clast, "cmed": self.cmed, "cscale": self.cscale, "gbuf": self.gbuf,
                "gpos": self.gpos, "glast": self.glast, "gmed": self.gmed, "gscale": self.gscale,
                "csince": self.csince, "cflag": self.cflag, "last_xy": self.last_xy}

    def get_state(self) -> dict[str, Any]:
        return super().get_state() | {f"reference.{k}": np.copy(v) for k, v in self.reference.arrays().items()}

    def set_state(self, state) -> None:
        """Restore; a state saved before places tracked suspicion and the reference starts those fresh."""
        state = dict(state)
        slots = np.shape(state["cbuf"])[1]
        state.setdefault("csince", np.full((self.n, slots), np.nan))
        state.setdefault("cflag", np.full((self.n, slots), -np.inf))
        super().set_state(state)
        for k, v in self.reference.arrays().items():
            if f"reference.{k}" in state:
                setattr(self.reference, k, np.array(state[f"reference.{k}"], dtype=v.dtype))

    # --- places ------------------------------------------------------------------------------
    def cells(self, pos: np.ndarray | None, k: int) -> np.ndarray:
        """Grid cell of each position (-1: no position, or outside ``extent``)."""
        return self.grid.cells(pos, k)

    def _z(self, x, med, scale):
        with np.errstate(all="ignore"):
            z = np.where(x == med, 0.0, (x - med) / scale)
        d = self.params.direction
        return np.abs(z) if d == "both" else (z if d == "high" else -z)

    def _assess(self, idx, x, cell):
        """Score, median, sigma, baseline kind (1 place, 2 global, 0 none) and cell used.

        The place score is the *least* anomalous over the warm cells of the neighbourhood, so a
        reading near the edge of a hot spot (or with a little localisation error) is compared
        with the baseline it is consistent with.
        """
        p: RobotBaselineParams = self.params
        m = len(idx)
        floor = self.floor[idx]
        gwarm = self.gpos[idx] >= p.global_warmup
        gscale = np.maximum(self.gscale[idx], floor)
        score = np.where(gwarm, self._z(x, self.gmed[idx], gscale), np.nan)
        med, scale, which = self.gmed[idx].copy(), gscale, np.where(gwarm, 2, 0)
        used = np.full(m, -1, dtype=np.int64)
        if self.cpos.shape[1] and (cell >= 0).any():
            nb = self.grid.neighbours(cell)
            slot = np.where(nb >= 0, self.slot_of[np.maximum(nb, 0)], -1).astype(np.int64)
            s = np.maximum(slot, 0)
            rows = idx[:, None]
            warm = (slot >= 0) & (self.cpos[rows, s] >= p.cell_warmup)
            cmed = self.cmed[rows, s]
            cscale = np.maximum(self.cscale[rows, s], floor[:, None])
            cz = np.where(warm, self._z(x[:, None], cmed, cscale), np.inf)
            cz = np.where(np.isnan(cz), np.inf, cz)
            best = np.argmin(cz, axis=1)
            any_warm = warm.any(axis=1)
            k = np.arange(m)
            score = np.where(any_warm, cz[k, best], score)
            med = np.where(any_warm, cmed[k, best], med)
            scale = np.where(any_warm, cscale[k, best], scale)
            which = np.where(any_warm, 1, which)
            used = np.where(any_warm, nb[k, best], -1)
        return score, med, scale, which, used

    # --- protocol ----------------------------------------------------------------------------
    def score_many(self, idx, t, x, pos=None):
        idx = np.asarray(idx, dtype=np.int64)
        x = np.asarray(x, dtype=np.float64)
        score = self._assess(idx, x - self.reference.ref[idx], self.cells(pos, len(idx)))[0]
        return np.clip(score, -SCORE_CAP, SCORE_CAP)

    def learn_many(self, idx, t, x, pos=None):
        idx = np.asarray(idx, dtype=np.int64)
        x = np.asarray(x, dtype=np.float64)
        t = np.asarray(t, dtype=np.float64)
        self._learn(idx, t, x, pos, None)
        cell = self.cells(pos, len(idx))
        _, med, _, which, _ = self._assess(idx, x - self.reference.ref[idx], cell)
        self._observe(idx, t, x, med, which, cell)

    def _observe(self, idx, t, x, med, which, cell) -> None:
        """Each reading judged against a place gives one estimate of the site-wide level."""
        level = np.where(which == 1, x - med, np.nan)
        self.reference.observe(idx, t, level, cell, self.params.learn_interval)

    def _learn(self, idx, t, x, pos, calm: np.ndarray | None) -> None:
        """Learn readings relative to the site-wide reference; with ``calm`` given, flagged ones
        (False) feed cold cells, and warm ones once per ``flagged_learn_interval``."""
        idx = np.asarray(idx, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        self.seen[idx] += 1
        if pos is not None:
            pos = np.asarray(pos, dtype=np.float64).reshape(len(idx), 2)
            self.last_xy[idx] = pos
        good = np.isfinite(x) & np.isfinite(t)
        if not good.any():
            return
        calm = np.ones(len(idx), dtype=bool) if calm is None else np.asarray(calm, dtype=bool)
        idx, t, x, calm = idx[good], t[good], x[good], calm[good]
        x = x - self.reference.ref[idx]
        cell = self.cells(None if pos is None else pos[good], len(idx))
        p: RobotBaselineParams = self.params
        # global ring: normal readings only
        g = calm & (t - self.glast[idx] >= p.learn_interval)
        if g.any():
            gi = idx[g]
            self.gbuf[gi, self.gpos[gi] % p.global_ring] = x[g]
            self.gpos[gi] += 1
            self.glast[gi] = t[g]
            self.gmed[gi], self.gscale[gi] = _robust(self.gbuf[gi])
        # cell rings: normal readings, and every reading while the cell is still warming up (a
        # place is learned as it is found: a hot pipe is flagged against the global baseline on
        # the first passes, and must still become that cell's normal)
        c = cell >= 0
        if not c.any():
            return
        self._allocate(np.unique(cell[c]))
        slot = np.where(c, self.slot_of[np.maximum(cell, 0)], 0).astype(np.int64)
        late = ~calm & (t - self.cflag[idx, slot] >= p.flagged_learn_interval)  # a flagged place still moves, slowly
        c &= calm | late | (self.cpos[idx, slot] < p.cell_warmup)
        c &= t - self.clast[idx, slot] >= p.learn_interval
        if c.any():
            ci, si = idx[c], slot[c]
            self.cflag[ci, si] = np.where(late[c], t[c], self.cflag[ci, si])
            self.cbuf[ci, si, self.cpos[ci, si] % p.ring] = x[c]
            self.cpos[ci, si] += 1
            self.clast[ci, si] = t[c]
            self.cmed[ci, si], self.cscale[ci, si] = _robust(self.cbuf[ci, si])

    def _allocate(self, cells: np.ndarray) -> None:
        new = cells[self.slot_of[cells] < 0]
        if not len(new):
            return
        used = len(self.cell_of)
        cap = self.cpos.shape[1]
        if used + len(new) > cap:
            grow = max(cap, used + len(new) - cap, 16)
            n, r = self.n, self.params.ring
            self.cbuf = np.concatenate([self.cbuf, np.full((n, grow, r), np.nan)], axis=1)
            self.cpos = np.concatenate([self.cpos, np.zeros((n, grow), dtype=np.int64)], axis=1)
            self.clast = np.concatenate([self.clast, np.full((n, grow), -np.inf)], axis=1)
            self.cmed = np.concatenate([self.cmed, np.full((n, grow), np.nan)], axis=1)
            self.cscale = np.concatenate([self.cscale, np.full((n, grow), np.nan)], axis=1)
            self.csince = np.concatenate([self.csince, np.full((n, grow), np.nan)], axis=1)
            self.cflag = np.concatenate([self.cflag, np.full((n, grow), -np.inf)], axis=1)
        self.slot_of[new] = np.arange(used, used + len(new), dtype=np.int32)
        self.cell_of = np.concatenate([self.cell_of, new.astype(np.int64)])

    def update(self, idx, t, x, pos=None) -> Output:
        p: RobotBaselineParams = self.params
        idx = np.asarray(idx, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        cell = self.cells(pos, len(idx))
        score, med, _, which, _ = self._assess(idx, x - self.reference.ref[idx], cell)
        score = np.clip(np.where(np.isfinite(score), score, 0.0), -SCORE_CAP, SCORE_CAP)
        judged = self._confirmed(idx, t, score, which, cell)
        code = self.decider.step(idx, t, judged, x)
        self._learn(idx, t, x, pos, (code == 0) & (score < p.threshold))
        self._observe(idx, t, x, med, which, cell)
        zs = self.reference.site(idx, t, self.floor[idx], self._z, p.site_threshold, p.clear_ratio)
        site = (code == 0) & self.reference.site_on[idx]
        code = np.where(site, np.int8(self.SITE_SHIFT), code).astype(np.int8)
        return Output(idx, t, np.where(site, zs, score), code)

    def _confirmed(self, idx, t, score, which, cell) -> np.ndarray:
        """The score the decider sees: a place anomalous on one visit only is held just below the
        clearing level until it is still anomalous ``confirm_after`` seconds later (its next visit);
        a site-wide change has moved the reference by then and explains it."""
        p: RobotBaselineParams = self.params
        at_place = (which == 1) & (cell >= 0)
        if p.confirm_after <= 0 or not at_place.any():
            return score
        self._allocate(np.unique(cell[at_place]))  # suspicion is kept by the reading's own cell
        slot = np.where(at_place, self.slot_of[np.maximum(cell, 0)], 0).astype(np.int64)
        high = at_place & (score >= p.threshold)
        since = self.csince[idx, slot]
        since = np.where(high & np.isnan(since), t, since)
        since = np.where(at_place & (score < p.threshold * p.clear_ratio), np.nan, since)
        self.csince[idx[at_place], slot[at_place]] = since[at_place]
        waiting = high & ~(t - since >= p.confirm_after)
        return np.where(waiting, np.minimum(score, 0.999 * p.threshold * p.clear_ratio), score)

    def explain(self, col: int) -> dict[str, Any]:
        """Where the column's last reading was and which baseline it is compared with there."""
        xy = self.last_xy[col]
        cell = self.cells(xy[None, :], 1)
        _, med, scale, which, used = self._assess(np.array([col]), np.array([np.nan]), cell)
        out: dict[str, Any] = {"sensor": self.sensors[col].id, "x": float(xy[0]), "y": float(xy[1]),
                               "baseline": ("none", "place", "global")[int(which[0])],
                               "median": float(med[0]), "sigma": float(scale[0]),
                               "reference": float(self.reference.ref[col]),
                               "site_shift": bool(self.reference.site_on[col])}
        if used[0] >= 0:
            out["cell"] = self.grid.centre(int(used[0]))
        return out
