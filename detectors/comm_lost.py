"""Communication lost with an edge collector: one condition per collector, not one per sensor.

Time-driven like ``stale``: :meth:`tick` compares the wall clock with the newest reading of
*any* of a collector's watched sensors (the collector comes from the site config: a sensor's own
``collector``, else its area's). When none of them has reported for ``timeout`` seconds the
collector is ``comm_lost``. A source that announces its own death (a Sparkplug NDEATH, every
sensor of the collector marked at once) makes it ``comm_lost`` at once. Any reading of any of
its sensors clears it (at the next tick).

The condition is held on one member per collector, its *anchor* (the first of its sensors in
the detector's selection), so the daemon raises exactly one alarm per collector; the alarm's
cause names the collector. While it is active the daemon suppresses (ISA-18.2 designed
suppression, recorded as ``suppressed``) the ``stale`` alarms of that collector's sensors
(daemon/alarms/lifecycle.py), so a dead collector is one alarm and a ``stale`` alarm means one sensor
silent while its collector is alive.

Start-up and reconnects (:meth:`restart_clock`): readings may have been missed until then, so a
collector not heard from since gets ``startup_grace`` seconds before it is ``comm_lost`` (a
collector started a minute after the daemon raises nothing); once it reports, its plain
``timeout`` applies. Sensors without a known collector are not watched here.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from pydantic import Field

from .base import READING_CLASSES, Detector, DetectorParams, Output, SensorInfo
from .decide import Decider, ThresholdDecider
from .registry import register


def collector_groups(sensors) -> tuple[np.ndarray, list[str]]:
    """Per sensor its collector's group index (-1: no collector known), and the collector ids."""
    names: list[str] = []
    pos: dict[str, int] = {}
    group = np.full(len(sensors), -1, dtype=np.int64)
    for i, s in enumerate(sensors):
        if s.collector:
            group[i] = pos.setdefault(s.collector, len(names))
            if group[i] == len(names):
                names.append(s.collector)
    return group, names


class CommLostParams(DetectorParams):
    timeout: float = Field(60.0, gt=0, le=7 * 86400,
                           description="seconds without a reading from any of a collector's sensors before the "
                                       "collector is comm_lost")
    startup_grace: float = Field(600.0, gt=0, le=7 * 86400,
                                 description="after the daemon starts or its MQTT connection is (re)established, "
                                             "seconds a collector not heard from since may stay silent before it "
                                             "is comm_lost")


@register
class CommLostDetector(Detector):
    name = "comm_lost"
    Params = CommLostParams
    CONDITIONS = ("normal", "comm_lost")
    MARKS_STALE = True
    SEVERITY = {"comm_lost": "high"}
    SENSOR_HEALTH = True
    JUDGES = frozenset(READING_CLASSES)  # any message from a sensor shows its collector is alive
    univariate = False  # a sensor's output depends on the other sensors of its collector

    def __init__(self, params, sensors):
        super().__init__(params, sensors)
        self.group, self.collectors = collector_groups(self.sensors)
        g = len(self.collectors)
        #: per collector: its anchor member (holds the condition)
        self.anchor = np.array([int(np.flatnonzero(self.group == k)[0]) for k in range(g)], dtype=np.int64)
        self.last = np.full(g, np.nan)  # newest reading time of any member
        # per collector: the clock counts from max(last, clock_from); not saved: set per connection
        self.clock_from = np.full(g, -np.inf)

    @classmethod
    def example_params(cls):
        return {"timeout": 30.0, "startup_grace": 60.0}

    @classmethod
    def example_sensors(cls, n: int = 4) -> list[SensorInfo]:
        base = super().example_sensors(n)
        return [replace(s, collector=f"edge{i % 2}") for i, s in enumerate(base)]

    def make_decider(self) -> Decider:
        return ThresholdDecider(self.n, [1.0])

    def _state_arrays(self):
        return {"last": self.last}

    def score_many(self, idx, t, x):
        return np.zeros(len(idx))  # a reading shows the collector alive

    def learn_many(self, idx, t, x):
        super().learn_many(idx, t, x)
        self._heard(idx, t)

    def observe_many(self, idx, t, x, learn):
        self._heard(idx[~learn], t[~learn])  # (an anchor's reading while comm_lost is held)

    def _heard(self, idx, t) -> None:
        g = self.group[idx]
        ok = g >= 0
        if not ok.any():
            return
        newest = np.full(len(self.collectors), -np.inf)
        np.maximum.at(newest, g[ok], np.asarray(t, dtype=np.float64)[ok])
        got = np.isfinite(newest)
        self.last[got] = np.fmax(self.last[got], newest[got])
        self.clock_from[got] = -np.inf  # heard: from now on its plain timeout applies

    def mark_stale(self, idx: np.ndarray, now: float) -> Output:
        """The source said these sensors are gone (a Sparkplug DEATH): a collector all of whose
        watched sensors are among them is comm_lost now."""
        idx = np.asarray(idx, dtype=np.int64)
        hit = np.zeros(self.n, dtype=bool)
        hit[idx] = True
        dead = np.array([bool(hit[self.group == k].all()) for k in range(len(self.collectors))], dtype=bool)
        self.last[dead] = np.fmin(self.last[dead], now - self.params.timeout)
        self.clock_from[dead] = -np.inf
        a = self.anchor[dead]
        score = np.ones(len(a))
        t = np.full(len(a), float(now))
        return Output(a, t, score, self.decider.step(a, t, score, score))

    def restart_clock(self, now: float) -> None:
        """Readings may have been missed until ``now``: collectors not comm_lost now get
        ``startup_grace`` seconds from ``now`` (until they report) before they can be."""
        fine = self.decider.code[self.anchor] == 0
        self.clock_from[fine] = now + self.params.startup_grace - self.params.timeout

    def tick(self, now: float) -> Output | None:
        if len(self.collectors) == 0:
            return None
        never = np.isnan(self.last) & ~np.isfinite(self.clock_from)
        self.last[never] = now  # silent since start and no connection event: start counting now
        age = now - np.fmax(self.last, self.clock_from)
        score = age / self.params.timeout
        t = np.full(len(self.anchor), float(now))
        return Output(self.anchor.copy(), t, score, self.decider.step(self.anchor, t, score, age))
