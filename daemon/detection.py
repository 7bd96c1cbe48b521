"""Run the configured detectors over batches of readings, vectorised across sensors.

A batch (many sensors, several readings each) is sorted by time and split into rounds in which
each sensor appears once (:func:`plantwatch.detectors.events.rounds`); each detector then scores a
round in one call. Readings not newer than what a sensor has already been scored on (a redelivery
after a crash, or a late straggler) are stored but not scored again, so detectors stay causal.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from plantwatch.detectors import Detector, Output, create
from plantwatch.detectors.events import EventTracker, Transition, rounds

from .config import Config, DetectorConfig

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Change:
    """A condition transition under one configured detector, in global sensor columns."""

    det: "Watch"
    col: int  # global sensor column
    t: float
    old: str
    new: str
    score: float
    peak: float


class Watch:
    """One configured detector: the instance, the sensors it watches and its event tracker."""

    def __init__(self, cfg: DetectorConfig, cols: list[int], config: Config):
        infos = config.sensor_infos()
        self.cfg = cfg
        self.cols = np.asarray(cols, dtype=np.int64)
        self.local = np.full(len(config.sensors), -1, dtype=np.int64)
        self.local[self.cols] = np.arange(len(cols))
        self.detector: Detector = create(cfg.type, cfg.validated_params(), [infos[c] for c in cols])
        self.tracker = EventTracker(len(cols))
        self.description = self.detector.describe()
        self.fingerprint = hashlib.sha256(json.dumps(
            [self.description, [config.sensors[c].id for c in cols]], sort_keys=True).encode()).hexdigest()
        self.seconds = 0.0  # time spent scoring (for metrics)

    def _changes(self, out: Output) -> list[Change]:
        cond = self.detector.CONDITIONS
        return [Change(self, int(self.cols[tr.sensor]), tr.t, cond[tr.old], cond[tr.new], tr.score, tr.peak)
                for tr in self.tracker.feed(out)]

    def feed(self, col: np.ndarray, t: np.ndarray, x: np.ndarray) -> list[Change]:
        lc = self.local[col]
        mine = lc >= 0
        if not mine.any():
            return []
        t0 = time.perf_counter()
        out = self.detector.update(lc[mine], t[mine], x[mine])
        ch = self._changes(out)
        self.seconds += time.perf_counter() - t0
        return ch

    def tick(self, now: float, active: np.ndarray | None = None) -> list[Change]:
        out = self.detector.tick(now)
        if out is None:
            return []
        if active is not None:  # several instances: only the sensors of the partitions held here
            keep = active[self.cols[out.idx]]
            out = Output(out.idx[keep], out.t[keep], out.score[keep], out.code[keep])
        return self._changes(out)

    def get_state(self) -> dict[str, Any]:
        return {"detector": self.detector.get_state(), "tracker": self.tracker.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.detector.set_state(state["detector"])
        self.tracker.set_state(state["tracker"])


class DetectorSet:
    def __init__(self, config: Config):
        self.config = config
        self.watches = [Watch(d, config.watched(d), config) for d in config.detectors if d.enabled]
        self.last_t = np.full(len(config.sensors), -np.inf)  # newest reading scored per sensor

    def process(self, col: np.ndarray, t: np.ndarray, x: np.ndarray) -> list[Change]:
        """Score a batch (any order, any number of readings per sensor)."""
        if len(col) == 0:
            return []
        order = np.argsort(t, kind="stable")
        col, t, x = col[order], t[order], x[order]
        changes: list[Change] = []
        for r in rounds(col):
            c, tt, xx = col[r], t[r], x[r]
            fresh = tt > self.last_t[c]
            if not fresh.all():
                c, tt, xx = c[fresh], tt[fresh], xx[fresh]
                if len(c) == 0:
                    continue
            self.last_t[c] = tt
            for w in self.watches:
                changes.extend(w.feed(c, tt, xx))
        return changes

    def tick(self, now: float, active: np.ndarray | None = None) -> list[Change]:
        out: list[Change] = []
        for w in self.watches:
            out.extend(w.tick(now, active))
        return out

    def states(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(w.cfg.id, w.fingerprint, w.get_state()) for w in self.watches] + [
            ("__last_t__", self._sensors_fp(), {"last_t": self.last_t.copy()})]

    def _sensors_fp(self) -> str:
        return hashlib.sha256(json.dumps([s.id for s in self.config.sensors]).encode()).hexdigest()

    def restore(self, saved: dict[str, tuple[str, dict[str, Any]]]) -> list[str]:
        """Restore saved states whose fingerprint matches; returns the detector ids restored."""
        done = []
        for w in self.watches:
            fp_state = saved.get(w.cfg.id)
            if fp_state and fp_state[0] == w.fingerprint:
                try:
                    w.set_state(fp_state[1])
                    done.append(w.cfg.id)
                except (KeyError, ValueError) as e:  # state of an older detector version
                    log.warning("detector %s: saved state not usable (%s); starting fresh", w.cfg.id, e)
            elif fp_state:
                log.info("detector %s: configuration changed since its state was saved; starting fresh", w.cfg.id)
        lt = saved.get("__last_t__")
        if lt and lt[0] == self._sensors_fp():
            self.last_t = np.asarray(lt[1]["last_t"], dtype=np.float64)
        return done
