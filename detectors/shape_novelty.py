"""Shape novelty: a stretch of signal whose shape the sensor has never shown (adaptive resonance).

The engine is :class:`~.resonance_core.ShapeMemory` (read its docstring for the steps): the
first ``learn`` readings fix the value scale and are replayed to learn the vigilance; then every
``stride`` readings one level is formed, the last ``window`` levels are one shape, and a shape
that resonates with no stored category starts a new cluster, which is scored by how far below
the vigilances it matched (0 = known shape). New clusters within ``mask`` shapes of the last
detection are muted unless clearly worse: one excursion, one detection. Two stages weigh a detection's score: ``settle`` ramps it up over the time after the
warm-up (the memory has seen only the warm-up yet), ``extreme`` gives a new shape at a value never
seen full weight.

It complements :mod:`.range_novelty` (a value region never visited): shape novelty also sees a
changed pattern inside the known range (a lost daily cycle, a new oscillation, a step that stays
inside the range), and it is blind where the warm-up range was too narrow to resolve (``margin``
widens it). Every reading is remembered, flagged or not, like range novelty: the shapes a
signal *has* shown are a fact, so :meth:`update` is overridden to record all readings.
Cost: all sensors of the detector step together (:mod:`.resonance_batch`: the readings of a round
are buffered with array operations; the sensors whose block is full form their shapes and match
them against their categories, kept in blocks of sensors with similar category counts by
:mod:`.resonance_match`), so the cost per reading falls with the number of sensors; it is bound by
reading and refining the categories (``4 x window`` float32 values each, every ``stride`` readings;
float32 halves that traffic and moves a score by ~1e-6 from the float64 engine's). The per-sensor
engine :class:`~.resonance_core.ShapeMemory` is the reference it is tested against and runs each
sensor's warm-up.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from .base import Detector, Output, debounce
from .decide import Decider, ThresholdDecider
from .registry import register
from .resonance_batch import ShapeBank


class ShapeNoveltyParams(debounce()):
    learn: int = Field(600, ge=16, le=100_000, description="warm-up readings: value scale and vigilance")
    stride: int = Field(0, ge=0, le=10_000,
                        description="readings per level (block extreme); 0: learn // (window * warmup_shapes)")
    warmup_shapes: int = Field(13, ge=2, le=10_000, description="shape windows in the warm-up when stride is 0")
    window: int = Field(8, ge=2, le=64, description="levels per shape (power of two)")
    levels: int = Field(80, ge=2, le=10_000, description="quantisation steps of the value scale")
    margin: float = Field(0.3, ge=0, le=100, description="widening of the warm-up range on each side, in ranges")
    chomp: float = Field(0.075, ge=0, le=1, description="levels this close to the running median become the median")
    rho0: float = Field(0.8, gt=0, lt=1, description="trial vigilance used to learn the vigilance at warm-up")
    rho_cap: float = Field(0.97, gt=0, le=1, description="upper bound of the upper vigilance")
    mask: int = Field(12, ge=0, le=100_000, description="shapes after a detection in which new clusters are muted")
    grow: bool = Field(True, description="widen the value scale (and map what is stored) when a level falls outside it")
    settle: float = Field(0.5, ge=0, le=100,
                          description="warm-up lengths after the warm-up over which detections ramp up to full score; 0: off")
    extreme: float = Field(1.0, ge=0, le=1,
                           description="least score of a detection at a value outside the scale (never seen); 0: off")
    threshold: float = Field(0.4, gt=0, le=1, description="score at which the anomaly condition starts")

    def model_post_init(self, _ctx) -> None:
        if self.window & (self.window - 1):
            raise ValueError(f"window must be a power of two, got {self.window}")


@register
class ShapeNovelty(Detector):
    name = "shape_novelty"
    Params = ShapeNoveltyParams
    CONDITIONS = ("normal", "novel_shape")
    SEVERITY = {"novel_shape": "medium"}

    def __init__(self, params: ShapeNoveltyParams, sensors):
        super().__init__(params, sensors)
        self.warmup = params.learn
        p = params
        stride = p.stride or max(1, p.learn // (p.window * p.warmup_shapes))
        self.bank = ShapeBank(self.n, learn=p.learn, stride=stride, window=p.window, levels=p.levels,
                              margin=p.margin, chomp=p.chomp, rho0=p.rho0, rho_cap=p.rho_cap, mask=p.mask,
                              grow=p.grow, settle=p.settle, extreme=p.extreme)

    def make_decider(self) -> Decider:
        p: ShapeNoveltyParams = self.params
        return ThresholdDecider(self.n, [p.threshold], on_delay=p.on_delay, off_delay=p.off_delay)

    def get_state(self):
        state = super().get_state()
        for j in range(self.n):
            state.update({f"memory.{j}.{k}": v for k, v in self.bank.export(j).to_arrays().items()})
        return state

    def set_state(self, state):
        super().set_state({k: v for k, v in state.items() if not k.startswith("memory.")})
        for j in range(self.n):
            pre = f"memory.{j}."
            m = self.bank.export(j)
            m.from_arrays({k[len(pre):]: v for k, v in state.items() if k.startswith(pre)})
            self.bank.load(j, m)

    def score_many(self, idx, t, x):
        return np.array([self.bank.export(j).push(float(v)) for j, v in zip(idx, x)], dtype=np.float64)

    def _push(self, idx: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Scores of the readings, in rounds of distinct sensors (a sensor's readings in order)."""
        idx = np.asarray(idx, dtype=np.int64)
        mark = np.zeros(self.n, dtype=bool)
        mark[idx] = True
        if int(mark.sum()) == len(idx):
            return self.bank.push(idx, x)
        order = np.argsort(idx, kind="stable")
        first = np.r_[True, idx[order][1:] != idx[order][:-1]]
        starts = np.flatnonzero(first)
        rank = np.empty(len(idx), dtype=np.int64)
        rank[order] = np.arange(len(idx)) - np.repeat(starts, np.diff(np.r_[starts, len(idx)]))
        score = np.zeros(len(idx))
        for r in range(int(rank.max()) + 1):
            sel = np.flatnonzero(rank == r)
            score[sel] = self.bank.push(idx[sel], np.asarray(x)[sel])
        return score

    def update(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> Output:
        """Score, decide and record every reading (see the module docstring)."""
        score = self._push(idx, x)
        self.seen[idx] += 1
        code = self.decider.step(idx, t, score, x)
        return Output(idx, t, score, code)

    def learn_many(self, idx, t, x):
        self.seen[idx] += 1
        self._push(idx, x)

    @classmethod
    def example_params(cls):
        return {"learn": 64, "stride": 2, "threshold": 0.4}
