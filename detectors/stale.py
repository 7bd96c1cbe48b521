"""Stale sensor: no reading for ``timeout`` seconds.

Time-driven: :meth:`tick` compares the wall clock with each sensor's last reading, so a sensor
that falls silent is flagged without any reading arriving. The condition clears on the next
reading.

The stale clock starts again whenever the daemon starts or its MQTT connection is
(re)established (:meth:`restart_clock`): a daemon started before its collectors, restarted
after a while, or cut off from the broker cannot tell a silent sensor from readings it could not
receive, so a sensor that has not reported since is stale only once it stays silent for
``grace`` seconds (default: ``timeout``) after that. A sensor already stale keeps its condition.
Without a connection event (replays, the offline demo) a sensor that never reported counts from
the first tick.

A sensor's collector (from the site config) matters at those times: while its collector has not
been heard from since the start or reconnect (none of the collector's sensors watched here has
reported), its silence is the collector's, which the ``comm_lost`` detector alarms once for the
whole collector; the sensor is stale only after ``startup_grace`` seconds. Once the collector
reports, a sensor of it that stays silent gets ``grace`` seconds from that first report. So
collectors started a minute after the daemon raise no stale alarm, and one sensor silent in a
live collector raises exactly one.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from .base import MEASUREMENTS, Detector, DetectorParams, Output
from .comm_lost import collector_groups
from .decide import Decider, ThresholdDecider
from .registry import register


class StaleParams(DetectorParams):
    timeout: float = Field(60.0, gt=0, le=7 * 86400, description="seconds without a reading before a sensor is stale")
    grace: float | None = Field(None, gt=0, le=7 * 86400,
                                description="after the daemon starts or its MQTT connection is (re)established, "
                                            "seconds a sensor that has not reported since may stay silent before it "
                                            "is stale (default: timeout)")
    startup_grace: float = Field(600.0, gt=0, le=7 * 86400,
                                 description="after the daemon starts or its MQTT connection is (re)established, "
                                             "the longest a sensor whose collector has not been heard from since "
                                             "may stay silent before it is stale (the collector's comm_lost alarm "
                                             "covers it)")


@register
class StaleDetector(Detector):
    name = "stale"
    Params = StaleParams
    CONDITIONS = ("normal", "stale")
    MARKS_STALE = True
    SEVERITY = {"stale": "medium"}
    SENSOR_HEALTH = True
    JUDGES = MEASUREMENTS  # any measurement, uncertain or over range, shows the sensor is alive

    def __init__(self, params, sensors):
        super().__init__(params, sensors)
        self.last = np.full(self.n, np.nan)
        # the stale clock counts from max(last reading, clock_from); not saved: set per connection
        self.clock_from = np.full(self.n, -np.inf)
        self.group, collectors = collector_groups(self.sensors)
        #: per collector: first reading since the last restart_clock (NaN: not heard since)
        self.heard = np.full(len(collectors), np.nan)
        self.restarted = -np.inf  # time of the last restart_clock

    @classmethod
    def example_params(cls):
        return {"timeout": 30.0}

    def make_decider(self) -> Decider:
        return ThresholdDecider(self.n, [1.0])

    def _state_arrays(self):
        return {"last": self.last}

    def score_many(self, idx, t, x):
        # a reading is the opposite of stale: score it as the gap it closes, relative to timeout
        return np.zeros(len(idx))

    def learn_many(self, idx, t, x):
        super().learn_many(idx, t, x)
        self.last[idx] = np.fmax(self.last[idx], t)
        g = self.group[idx]
        ok = g >= 0
        if ok.any() and np.isnan(self.heard).any():
            first = np.full(len(self.heard), np.inf)
            np.minimum.at(first, g[ok], np.asarray(t, dtype=np.float64)[ok])
            new = np.isnan(self.heard) & np.isfinite(first)
            self.heard[new] = np.fmax(first[new], self.restarted)

    def mark_stale(self, idx: np.ndarray, now: float) -> Output:
        """The source itself said these sensors are gone (a Sparkplug DEATH): stale now, not
        after ``timeout``. Their last reading (and any start-up grace) is moved back past the
        timeout, so the ticks that follow keep them stale until a reading arrives."""
        idx = np.asarray(idx, dtype=np.int64)
        self.last[idx] = np.fmin(self.last[idx], now - self.params.timeout)
        self.clock_from[idx] = -np.inf
        age = now - self.last[idx]
        t = np.full(len(idx), float(now))
        return Output(idx, t, age / self.params.timeout, self.decider.step(idx, t, age / self.params.timeout, age))

    def restart_clock(self, now: float) -> None:
        """Readings may have been missed until ``now`` (start, reconnect): sensors not stale now
        get ``grace`` seconds from ``now`` before they can be."""
        p = self.params
        start = now + (p.grace if p.grace is not None else p.timeout) - p.timeout
        fine = self.decider.code == 0
        self.clock_from[fine] = start
        self.restarted = now
        self.heard[:] = np.nan

    def tick(self, now: float) -> Output | None:
        if self.n == 0:
            return None
        never = np.isnan(self.last) & ~np.isfinite(self.clock_from)
        self.last[never] = now  # silent since start and no connection event: start counting now
        idx = np.arange(self.n)
        since = np.fmax(self.last, self.clock_from)
        # not stale at the restart, collector known, not reported since
        waiting = np.isfinite(self.clock_from) & (self.group >= 0) & ~(self.last >= self.restarted)
        if waiting.any():
            p = self.params
            h = self.heard[self.group[waiting]]
            grace = p.grace if p.grace is not None else p.timeout
            # collector not heard since the restart: its comm_lost covers it, up to startup_grace
            wait_from = np.where(np.isnan(h), self.restarted + p.startup_grace, h + grace) - p.timeout
            since[waiting] = np.fmax(since[waiting], wait_from)
        age = now - since
        score = age / self.params.timeout
        t = np.full(self.n, float(now))
        code = self.decider.step(idx, t, score, age)
        return Output(idx, t, score, code)
