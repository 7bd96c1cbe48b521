"""Run the configured detectors over batches of readings, vectorised across sensors.

A batch (many sensors, several readings each) is sorted by time and split into rounds in which
each sensor appears once (:func:`plantwatch.detectors.events.rounds`); each detector then scores a
round in one call. Readings not newer than what a sensor has already been scored on (a redelivery
after a crash, or a late straggler) are stored but not scored again, so detectors stay causal.

Each reading has a class (:data:`plantwatch.detectors.base.READING_CLASSES`): its quality, unless
it is over range (flagged so, or at or above the top of its sensor's range) or a signal failure
(flagged). A detector sees only the classes it declares in ``JUDGES``; over-range readings reach it
raised to at least the top of the range, signal failures as NaN.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from plantwatch.connectors.wire import FLAG_CODES
from plantwatch.detectors import REGISTRY, Detector, Output, create
from plantwatch.detectors.base import READING_CLASSES
from plantwatch.detectors.compose import Composer, CompositionConfig
from plantwatch.detectors.events import EventTracker, Transition, rounds

from plantwatch.daemon.config.model import Config, DetectorConfig
from plantwatch.daemon.config.inventory import inventory_params

log = logging.getLogger(__name__)

GOOD, UNCERTAIN, BAD, OVER_RANGE, SIGNAL_FAILURE = range(len(READING_CLASSES))


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
    pos: tuple[float, float] | None = None  # site x, y of the reading, for robot channels
    value: float | None = None  # the reading that made the change, as the detector saw it (None: time-driven)


class Watch:
    """One configured detector: the instance, the sensors it watches and its event tracker."""

    def __init__(self, cfg: DetectorConfig, cols: list[int], config: Config):
        infos = config.sensor_infos()
        self.cfg = cfg
        self.cols = np.asarray(cols, dtype=np.int64)
        self.local = np.full(len(config.sensors), -1, dtype=np.int64)
        self.local[self.cols] = np.arange(len(cols))
        # security: inventory detectors take a % tank's capacity from inventory.tanks (config_inventory)
        params = REGISTRY[cfg.type].Params.model_validate(
            inventory_params(cfg.type, cfg.params, [config.sensors[c] for c in cols], config))
        self.detector: Detector = create(cfg.type, params, [infos[c] for c in cols])
        self.tracker = EventTracker(len(cols))
        self.description = self.detector.describe()
        self.fingerprint = hashlib.sha256(json.dumps(
            [self.description, [config.sensors[c].id for c in cols]], sort_keys=True).encode()).hexdigest()
        #: per reading class: whether this detector judges it
        self.judges = np.array([c in self.detector.JUDGES for c in READING_CLASSES], dtype=bool)
        self.seconds = 0.0  # time spent scoring (for metrics)
        self.last: Output | None = None  # the latest output, in global sensor columns (for compositions)

    def _changes(self, out: Output, where: dict[int, tuple[float, float]] | None = None,
                 values: tuple[np.ndarray, np.ndarray] | None = None) -> list[Change]:
        cond = self.detector.CONDITIONS
        trs = self.tracker.feed(out)
        if not trs:
            return []
        val = dict(zip(values[0].tolist(), values[1].tolist())) if values is not None else {}
        return [Change(self, int(self.cols[tr.sensor]), tr.t, cond[tr.old], cond[tr.new], tr.score, tr.peak,
                       where.get(tr.sensor) if where else None, val.get(tr.sensor))
                for tr in trs]

    def feed(self, col: np.ndarray, t: np.ndarray, x: np.ndarray, pos: np.ndarray | None = None,
             cls: np.ndarray | None = None) -> list[Change]:
        """``cls``: each reading's class code (None: all good)."""
        lc = self.local[col]
        mine = lc >= 0
        if cls is not None:
            mine &= self.judges[cls]
        if not mine.any():
            return []
        t0 = time.perf_counter()
        if self.detector.needs_position:
            out = self.detector.update(lc[mine], t[mine], x[mine], pos=None if pos is None else pos[mine])
        else:
            out = self.detector.update(lc[mine], t[mine], x[mine])
        self.last = Output(self.cols[out.idx], out.t, out.score, out.code)
        where = None
        if pos is not None:  # a round has one reading per sensor: where each sensor's reading was taken
            # except for a site-level condition (site_shift): that alarm is not about this place
            site = {i for i, c in enumerate(self.detector.CONDITIONS) if c in self.detector.SITE_LEVEL}
            away = {int(i) for i, c in zip(out.idx, out.code) if int(c) in site}
            where = {int(i): (float(xy[0]), float(xy[1])) for i, xy in zip(lc[mine], pos[mine])
                     if np.isfinite(xy).all() and int(i) not in away}
        ch = self._changes(out, where, (lc[mine], x[mine]))
        self.seconds += time.perf_counter() - t0
        return ch

    def tick(self, now: float, active: np.ndarray | None = None) -> list[Change]:
        out = self.detector.tick(now)
        if out is None:
            self.last = None
            return []
        if active is not None:  # several instances: only the sensors of the partitions held here
            keep = active[self.cols[out.idx]]
            out = Output(out.idx[keep], out.t[keep], out.score[keep], out.code[keep])
        self.last = Output(self.cols[out.idx], out.t, out.score, out.code)
        return self._changes(out)

    def mark_stale(self, col: np.ndarray, now: float) -> list[Change]:
        """Sensors whose source announced its death (detectors with ``MARKS_STALE`` only)."""
        if not self.detector.MARKS_STALE:
            return []
        lc = self.local[col]
        lc = lc[lc >= 0]
        if len(lc) == 0:
            return []
        out = self.detector.mark_stale(lc, now)
        if out is None:
            return []
        self.last = Output(self.cols[out.idx], out.t, out.score, out.code)
        return self._changes(out)

    def get_state(self) -> dict[str, Any]:
        return {"detector": self.detector.get_state(), "tracker": self.tracker.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.detector.set_state(state["detector"])
        self.tracker.set_state(state["tracker"])


class _CompositionCfg:
    """What the alarm book needs to know of a composition (as of a detector's config)."""

    def __init__(self, c: CompositionConfig):
        self.id, self.alarm, self._severity = c.id, True, c.severity

    def severity_of(self, condition: str) -> str:
        return self._severity


class CompositionWatch:
    """A composition: votes from its input detectors' condition codes, over all sensors."""

    def __init__(self, c: CompositionConfig, config: Config):
        conds = {d.id: REGISTRY[d.type].CONDITIONS for d in config.detectors if d.enabled}
        self.cfg = _CompositionCfg(c)
        self.composer = Composer(c, config.sensor_infos(), conds)
        self.inputs = set(self.composer.inputs)
        self.tracker = EventTracker(len(config.sensors))
        self.description = {"type": "composition", "params": c.model_dump(mode="json")}
        self.fingerprint = hashlib.sha256(json.dumps(
            [self.description, [s.id for s in config.sensors]], sort_keys=True).encode()).hexdigest()

    def _changes(self, out: Output | None) -> list[Change]:
        if out is None:
            return []
        cond = self.composer.CONDITIONS
        return [Change(self, tr.sensor, tr.t, cond[tr.old], cond[tr.new], tr.score, tr.peak)
                for tr in self.tracker.feed(out)]

    def feed(self, w: "Watch") -> list[Change]:
        if w.cfg.id not in self.inputs or w.last is None or len(w.last.idx) == 0:
            return []
        o = w.last
        return self._changes(self.composer.feed(w.cfg.id, o.idx, o.t, o.code))

    def tick(self, now: float) -> list[Change]:
        return self._changes(self.composer.tick(now))

    def get_state(self) -> dict[str, Any]:
        return {"composer": self.composer.get_state(), "tracker": self.tracker.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.composer.set_state(state["composer"])
        self.tracker.set_state(state["tracker"])


class DetectorSet:
    def __init__(self, config: Config):
        self.config = config
        self.watches = [Watch(d, config.watched(d), config) for d in config.detectors if d.enabled]
        for w in self.watches:
            if w.detector.DEFERS_REFIT:
                w.detector.defer_refit = True  # the daemon fits group models in a worker thread
        self.compositions = [CompositionWatch(c, config) for c in config.compositions]
        self.last_t = np.full(len(config.sensors), -np.inf)  # newest reading scored per sensor
        self.range_top = np.array([s.range[1] for s in config.sensors], dtype=np.float64)

    def classify(self, col: np.ndarray, x: np.ndarray, quality: np.ndarray | None = None,
                 flag: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray]:
        """Each reading's class code (None when all are good) and the value detectors see: at
        least the top of the range when over range, NaN for a signal failure."""
        over = x >= self.range_top[col]
        flagged = flag is not None and flag.any()
        if not over.any() and not flagged and (quality is None or not quality.any()):
            return None, x
        cls = np.zeros(len(col), dtype=np.int8) if quality is None else np.clip(quality, GOOD, BAD).astype(np.int8)
        if flagged:
            over |= flag == FLAG_CODES["over_range"]
        cls[over] = OVER_RANGE
        x = np.where(over, np.fmax(x, self.range_top[col]), x)
        if flagged:
            failed = flag == FLAG_CODES["signal_failure"]
            cls[failed] = SIGNAL_FAILURE
            x = np.where(failed, np.nan, x)
        return cls, x

    def process(self, col: np.ndarray, t: np.ndarray, x: np.ndarray, pos: np.ndarray | None = None, *,
                quality: np.ndarray | None = None, flag: np.ndarray | None = None) -> list[Change]:
        """Score a batch (any order, any number of readings per sensor); ``pos`` is the (n, 2)
        site position of each reading, for robot channels; ``quality`` (0 good, 1 uncertain, 2 bad)
        and ``flag`` (:data:`FLAG_CODES`, 0 none) route each reading to the detectors that judge it."""
        if len(col) == 0:
            return []
        order = np.argsort(t, kind="stable")
        col, t, x = col[order], t[order], x[order]
        pos = pos[order] if pos is not None else None
        cls, x = self.classify(col, x, None if quality is None else quality[order], None if flag is None else flag[order])
        changes: list[Change] = []
        for r in rounds(col):
            c, tt, xx = col[r], t[r], x[r]
            pp = pos[r] if pos is not None else None
            cc = cls[r] if cls is not None else None
            fresh = tt > self.last_t[c]
            if not fresh.all():
                c, tt, xx = c[fresh], tt[fresh], xx[fresh]
                pp = pp[fresh] if pp is not None else None
                cc = cc[fresh] if cc is not None else None
                if len(c) == 0:
                    continue
            self.last_t[c] = tt
            for w in self.watches:
                changes.extend(w.feed(c, tt, xx, pp, cc))
                for comp in self.compositions:
                    changes.extend(comp.feed(w))
        return changes

    def refit_jobs(self) -> list[tuple["Watch", Any]]:
        """Group detectors whose model is due for a refit (run off the event loop by the daemon)."""
        out = []
        for w in self.watches:
            d = w.detector
            if d.defer_refit and d.needs_refit():
                out.append((w, d.refit_data()))
        return out

    def declare_transfer(self, tank: str, start: float, end: float, quantity: float) -> list[str]:
        """Tell every detector that tracks the tank's inventory; returns the detector ids told."""
        told = []
        for w in self.watches:
            d = w.detector
            if d.TAKES_TRANSFERS and any(s.id == tank for s in d.sensors):
                d.declare_transfer(tank, start, end, quantity)
                told.append(w.cfg.id)
        return told

    def mark_stale(self, col: np.ndarray, now: float) -> list[Change]:
        """Make sensors stale at once (their edge node or device died), through the stale
        detectors that watch them, so the usual event → alarm path raises the alarm."""
        out: list[Change] = []
        for w in self.watches:
            changes = w.mark_stale(col, now)
            if changes:
                out.extend(changes)
                for comp in self.compositions:
                    out.extend(comp.feed(w))
        return out

    def restart_clocks(self, now: float) -> None:
        """The daemon starts, or its MQTT connection is (re)established: readings may have been
        missed until ``now``, so time-driven detectors (stale) start their clocks again."""
        for w in self.watches:
            w.detector.restart_clock(now)

    def tick(self, now: float, active: np.ndarray | None = None) -> list[Change]:
        out: list[Change] = []
        for w in self.watches:
            out.extend(w.tick(now, active))
            for comp in self.compositions:
                out.extend(comp.feed(w))
        for comp in self.compositions:
            out.extend(comp.tick(now))
        return out

    def states(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(w.cfg.id, w.fingerprint, w.get_state()) for w in [*self.watches, *self.compositions]] + [
            ("__last_t__", self.sensors_fingerprint(), {"last_t": self.last_t.copy()})]

    def sensors_fingerprint(self) -> str:
        """Identifies the configured sensor list (ids, in column order): a saved ``last_t`` or
        partition state applies only to the same list."""
        return hashlib.sha256(json.dumps([s.id for s in self.config.sensors]).encode()).hexdigest()

    def restore(self, saved: dict[str, tuple[str, dict[str, Any]]]) -> list[str]:
        """Restore saved states whose fingerprint matches; returns the detector ids restored."""
        done = []
        for w in [*self.watches, *self.compositions]:
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
        if lt and lt[0] == self.sensors_fingerprint():
            self.last_t = np.asarray(lt[1]["last_t"], dtype=np.float64)
        return done
