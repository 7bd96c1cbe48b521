"""Shared machinery of the group (multivariate) detectors ``pca_monitor`` and ``pyod_group``.

Not a detector itself (nothing here is registered). A group detector watches a *group* of
sensors (the ones its config selector picks: an area, a process unit) and scores them jointly.

Rows
----
The daemon feeds readings one sensor at a time as ``(idx, t, x)``. The detector keeps the latest
good value of every member and forms a *row* (one value per member) at a cadence set by ``step``:

* ``step: null`` (default, "complete" mode): a row is formed by the call in which the last member
  reports since the previous row, i.e. every member has something new. Members reporting at
  different rates make rows at the rate of the slowest member.
* ``step: S`` ("clocked" mode): a row is formed by the first call whose reading time reaches the
  next multiple of ``S`` seconds; members that have not reported since the previous row carry
  their last value. Use this when some members report only on change.

In both modes the row time is the latest reading time of the call that forms it, and a row uses
only values received up to then (causal). A non-finite reading (NaN, inf) counts as "reported"
but its value is not used: the member carries its last good value. A row in which some member
has no good value, or only one older than ``max_age`` seconds, is skipped (neither scored nor
learned, counted in ``rows_skipped``): a silent member blinds the group, so pair the group with a
``stale`` detector on the same sensors.

Scores, conditions and attribution
----------------------------------
Row scores are normalised so that **1.0 is the control limit** (the 99 % limit of PCA's T² or
SPE, the contamination threshold of a PyOD model). Every reading of the call that forms a row is
reported with that row's score; readings of other calls are reported with the score of the last
row (the group's current score), so each member's score series shows the group's state.

The group has ONE condition (``anomaly``; ``severe_anomaly`` when the score reaches ``severe``
times the limit), decided per row with ``confirm_rows`` consecutive rows over the limit to raise
it and ``clear_rows`` consecutive rows below ``clear_ratio`` times the limit to clear it. To give
one alarm per group incident rather than one per member, the condition is held on a single
member: the one with the largest contribution to the row that raised it (SPE or T² contribution
for PCA, standardised deviation for PyOD models). That member's readings carry the condition's
code until it clears; every other member's readings carry code 0. If that member is not in the
call that raised the condition, its event starts with its next reading (at most one row later).
:meth:`GroupDetector.explain` tells which member holds the condition, the statistic that fired
and the top contributors, for the event's description.

Learning and refits
-------------------
Rows whose decided condition is normal go into a ring of the last ``window`` rows; the model is
fitted once ``min_rows`` rows are there and refitted on the ring every ``refit_every`` learned
rows (0: fit once and keep that model). Rows held in an alarm are not learned, so an incident
does not become the new normal.

Refit off the event loop (the daemon's side)::

    det.defer_refit = True                   # once, after creating the detector
    ...                                      # after each update():
    if det.needs_refit():
        job = det.refit_data()               # snapshot of the training rows (copies)
        fut = loop.run_in_executor(pool, fit_group_model, job)   # thread or process pool
        ...                                  # when it completes:
        det.install_model(fut.result())      # or det.abandon_refit(job.token) if it raised

Scoring continues with the old model while the fit runs. ``fit_group_model`` is a module-level
pure function and ``RefitJob``/``FittedModel`` are picklable, so a ``ProcessPoolExecutor`` works.
``install_model`` ignores a result whose token is not the one in flight (e.g. after
``set_state``). With ``defer_refit = False`` (the default: evaluation, tests, replay) refits run
inline as soon as they are due, so results are deterministic.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np
from pydantic import Field, model_validator

from .base import Detector, DetectorParams, Output, debounce
from .group_decide import RowDecider

#: standardised values are clipped to this, so hostile input (1e308) keeps scores finite
Z_CLIP = 1e6
#: scores are capped here (finite)
SCORE_CAP = 1e12


class GroupParams(debounce(on_delay=None, off_delay=None, clear_ratio=0.8)):
    step: float | None = Field(None, gt=0, le=86400,
                               description="seconds between rows (clocked mode); null: a row whenever every member has reported")
    max_age: float = Field(3600.0, gt=0, le=30 * 86400,
                           description="a row is skipped if some member's last good value is older than this (seconds)")
    window: int = Field(2000, ge=10, le=200_000, description="normal rows kept for (re)fitting the model")
    min_rows: int = Field(200, ge=5, le=200_000, description="rows learned before the first fit (no scores before)")
    refit_every: int = Field(200, ge=0, le=1_000_000, description="refit after this many newly learned rows; 0: never refit")
    confirm_rows: int = Field(3, ge=1, le=1000, description="consecutive rows over the limit before the condition is raised")
    clear_rows: int = Field(2, ge=1, le=1000, description="consecutive rows below clear_ratio*limit before it clears")
    severe: float = Field(3.0, gt=1, le=1e6, description="score (multiples of the limit) of the severe condition")
    min_scale: float = Field(1e-9, gt=0, description="floor of a member's standard deviation (sensor units)")

    @model_validator(mode="after")
    def _rows(self):
        if self.min_rows > self.window:
            raise ValueError(f"min_rows ({self.min_rows}) must not exceed window ({self.window})")
        return self


@dataclass(frozen=True)
class RefitJob:
    """What a model fit needs; picklable. ``X`` holds training rows (raw units), oldest first."""

    token: int
    detector: str  # registry name of the detector type
    params: DetectorParams
    X: np.ndarray


@dataclass
class FittedModel:
    """Result of :func:`fit_group_model`, to hand to ``install_model``."""

    token: int
    X: np.ndarray
    model: Any


def fit_group_model(job: RefitJob) -> FittedModel:
    """Fit the model for a refit job. Pure (no detector state touched): safe in any executor."""
    from .registry import get  # late import: avoids a cycle when a worker process unpickles

    cls = get(job.detector)
    return FittedModel(job.token, job.X, cls.fit_model(job.X, job.params))


class GroupDetector(Detector):
    """Base of group detectors; subclasses implement the model (fit_model / _install / _score)."""

    univariate: ClassVar[bool] = False
    DEFERS_REFIT = True
    CONDITIONS = ("normal", "anomaly", "severe_anomaly")
    SEVERITY = {"anomaly": "medium", "severe_anomaly": "high"}
    _tokens = itertools.count(1)
    decider: RowDecider

    def __init__(self, params: GroupParams, sensors):
        super().__init__(params, sensors)
        n = self.n
        self.defer_refit = False  # the daemon sets True to run fits in an executor
        self._inflight: int | None = None
        self.last = np.full(n, np.nan)  # latest good value per member
        self.last_t = np.full(n, -np.inf)  # its time
        self.fresh = np.zeros(n, dtype=bool)  # reported since the last row
        self.clock = np.array([-np.inf, -np.inf])  # [last row time, next clocked boundary]
        self.counts = np.zeros(4, dtype=np.int64)  # rows formed, rows skipped, rows learned, learned since fit
        self.buf = np.full((params.window, self._row_width()), np.nan)  # ring of learned (normal) rows
        self.last_score = np.zeros(1)
        self.member_code = np.zeros(n, dtype=np.int8)  # code each member's readings carry
        self.owner = np.array([-1], dtype=np.int64)  # member holding the group condition
        self.contrib = np.zeros(n)  # contributions of the row that raised the condition
        self.stat = np.zeros(4)  # subclass statistics of the last row (see explain)

    # --- model hooks (subclasses) ------------------------------------------------------------
    @staticmethod
    def fit_model(X: np.ndarray, params: GroupParams) -> Any:
        """Fit on training rows ``X`` (raw units); pure, runs in an executor when deferred."""
        raise NotImplementedError

    def _install(self, fitted: FittedModel) -> None:
        raise NotImplementedError

    @property
    def fitted(self) -> bool:
        raise NotImplementedError

    def _score(self, row: np.ndarray, commit: bool) -> tuple[float, np.ndarray, np.ndarray]:
        """(normalised score, statistics for ``stat``, per-member contributions) of one prepared
        row; ``commit``: the row is the group's next one (stateful stages advance), not a preview."""
        raise NotImplementedError

    def _row_width(self) -> int:
        """Width of a prepared row (what the ring keeps and the model is fitted on)."""
        return self.n

    def _prepare(self, row: np.ndarray, commit: bool) -> np.ndarray:
        """Stages before the model, run on every formed row (fitted or not, normal or not); the
        default keeps the row as it is. ``commit`` advances their state."""
        return row

    def _stat_names(self) -> tuple[str, ...]:
        return ()

    # --- protocol ----------------------------------------------------------------------------
    def make_decider(self) -> RowDecider:
        p: GroupParams = self.params
        return RowDecider(1, p.severe, p.clear_ratio, p.confirm_rows, p.clear_rows)

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {"last": self.last, "last_t": self.last_t, "fresh": self.fresh, "clock": self.clock,
                "counts": self.counts, "buf": self.buf, "last_score": self.last_score,
                "member_code": self.member_code, "owner": self.owner, "contrib": self.contrib,
                "stat": self.stat}

    def _assemble(self, idx, t, x, commit: bool):
        """Apply readings; return the row formed by this call (or None) and its time."""
        idx = np.asarray(idx, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        last, last_t, fresh = (self.last, self.last_t, self.fresh) if commit else (
            self.last.copy(), self.last_t.copy(), self.fresh.copy())
        # a magnitude whose square overflows is no measurement: treat it like a missing value
        good = np.isfinite(x) & np.isfinite(t) & (np.abs(x) < 1e150)
        if good.all():
            last[idx], last_t[idx] = x, t
        else:
            last[idx[good]] = x[good]
            last_t[idx[good]] = t[good]
        fresh[idx] = True
        if commit:
            self.seen[idx] += 1
        tmax = float(t.max()) if len(t) else -math.inf
        if not math.isfinite(tmax) or self.n == 0:
            return None, tmax
        step = self.params.step
        due = bool(fresh.all()) if step is None else tmax >= self.clock[1]
        if not due:
            return None, tmax
        complete = bool((tmax - last_t <= self.params.max_age).all())
        if commit:
            fresh[:] = False
            if step is not None:
                self.clock[1] = (math.floor(tmax / step) + 1) * step
            if complete:
                self.clock[0] = tmax
                self.counts[0] += 1
            elif np.all(np.isfinite(last_t)):
                self.counts[1] += 1
        return (last.copy() if complete else None), tmax

    def score_many(self, idx, t, x):
        row, _ = self._assemble(idx, t, x, commit=False)
        s = self.last_score[0]
        if row is not None and self.fitted:
            s = self._score(self._prepare(row, commit=False), commit=False)[0]
        return np.full(len(idx), s)

    def learn_many(self, idx, t, x):
        row, _ = self._assemble(idx, t, x, commit=True)
        if row is not None:
            self._learn_row(self._prepare(row, commit=True))

    def update(self, idx, t, x):
        idx = np.asarray(idx, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        row, tmax = self._assemble(idx, t, x, commit=True)
        if row is not None:
            row = self._prepare(row, commit=True)
            if self.fitted:
                s, stat, contrib = self._score(row, commit=True)
                self.stat[:len(stat)] = stat
            else:
                s, contrib = 0.0, None
            self.last_score[0] = s
            before = int(self.decider.code[0])
            code = self.decider.step_one(float(self.counts[0]), float(s))
            self._attribute(before, code, contrib)
            if code == 0:
                self._learn_row(row)
        n = len(idx)
        return Output(idx, t, np.full(n, self.last_score[0]), self.member_code[idx].copy())

    def _attribute(self, before: int, code: int, contrib: np.ndarray | None) -> None:
        if before == 0 and code != 0:
            c = np.nan_to_num(np.asarray(contrib, dtype=np.float64), nan=0.0, posinf=SCORE_CAP)
            self.contrib[:] = c
            self.owner[0] = int(np.argmax(c))
        if self.owner[0] >= 0:
            self.member_code[self.owner[0]] = code
        if code == 0:
            self.owner[0] = -1

    def explain(self) -> dict[str, Any] | None:
        """Who holds the group condition and why (for the event text), or None when normal."""
        o = int(self.owner[0])
        if o < 0:
            return None
        c = np.clip(self.contrib, 0.0, None)
        tot = float(c.sum()) or 1.0
        top = np.argsort(-c)[:3]
        out: dict[str, Any] = {"sensor": self.sensors[o].id, "score": float(self.last_score[0]),
                               "condition": self.CONDITIONS[int(self.decider.code[0])],
                               "top": [(self.sensors[i].id, round(float(c[i]) / tot, 3)) for i in top if c[i] > 0]}
        out.update({k: float(v) for k, v in zip(self._stat_names(), self.stat)})
        return out

    # --- training ring and refits -------------------------------------------------------------
    def _learn_row(self, row: np.ndarray) -> None:
        w = self.params.window
        self.buf[self.counts[2] % w] = row
        self.counts[2] += 1
        self.counts[3] += 1
        if not self.defer_refit and self._refit_due():
            self.install_model(fit_group_model(self.refit_data()))

    def _refit_due(self) -> bool:
        p: GroupParams = self.params
        if not self.fitted:
            return self.counts[2] >= p.min_rows
        return p.refit_every > 0 and self.counts[3] >= p.refit_every

    def training_rows(self) -> np.ndarray:
        """The learned rows in the ring, oldest first (a copy)."""
        w = self.params.window
        k = int(min(self.counts[2], w))
        if k < w:
            return self.buf[:k].copy()
        start = int(self.counts[2] % w)
        return np.concatenate([self.buf[start:], self.buf[:start]])

    def needs_refit(self) -> bool:
        """A refit is due and none is in flight (deferred mode)."""
        return self._inflight is None and self._refit_due()

    def refit_data(self) -> RefitJob:
        """Snapshot the training rows for a fit; marks a refit as in flight."""
        token = next(self._tokens)
        self._inflight = token
        self.counts[3] = 0
        return RefitJob(token, self.name, self.params, self.training_rows())

    def install_model(self, fitted: FittedModel) -> bool:
        """Install a fitted model; False (ignored) if it is not the refit in flight."""
        if fitted.token != self._inflight:
            return False
        self._inflight = None
        self._install(fitted)
        return True

    def abandon_refit(self, token: int) -> None:
        """The fit for ``token`` failed: allow a new attempt."""
        if token == self._inflight:
            self._inflight = None
            self.counts[3] = max(int(self.counts[3]), self.params.refit_every)

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        self._inflight = None

    def relearn(self) -> None:
        """Forget the model and the training rows (an operator confirmed a new normal): the
        group's condition clears (the holding member's next reading carries 0) and the detector
        learns again from scratch (``min_rows`` rows before scores)."""
        self.buf[:] = np.nan
        self.counts[2:] = 0
        self.last_score[0] = 0.0
        self.member_code[:] = 0
        self.owner[0] = -1
        self.decider.set_state({k: np.zeros_like(v) if k != "since" else np.full_like(v, -np.inf)
                                for k, v in self.decider.get_state().items()})
        self._inflight = None
        self._forget_model()

    def _forget_model(self) -> None:
        raise NotImplementedError
