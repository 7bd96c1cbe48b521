"""The row-by-row checker: the collectors' ledger against the database, and the injected limit
crossings against the alarm changes seen on MQTT and recorded in the database.

Readings: every stored row of the run is read back (binary COPY: sensor, time) and placed on the
ledger's grid by its key ``tick * n_sensors + sensor``; a row whose time is not exactly its tick's
time, or whose sensor or tick is not the ledger's, is *unexpected*. Per phase (the fault the run
was in when the collectors published the reading): sent, stored, lost (published, acknowledged by
the broker and not stored), unacknowledged and missing (the broker never acknowledged it: a real
collector would still hold it in its buffer and send it again), duplicated (stored more than once).

Alarms: an injected crossing (a gas sensor reading above its high limit for a few ticks) is
*raised* when an ``unack`` change of the limit detector for that sensor, stamped with a reading
time inside the crossing, arrived on ``alarms/changes``; its delay is the first arrival minus the
time of the crossing's first reading; a second raise of the same crossing is a duplicate. It is
*recorded* when the database holds that raise, and *left active* (stale) when the last change of
its alarm seen on MQTT, or its row in ``alarms``, is still active after the sensor returned to normal.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from plantwatch.connectors.rig_db import RigDb

from plantwatch.daemon.lab.faults.ledger import Ledger

async def stored_rows(dsn: str, since: float) -> tuple[np.ndarray, np.ndarray]:
    """(sensor id, epoch time) of every reading stored at or after ``since``."""
    async with await RigDb.connect(dsn) as db:
        return await db.stored_times(since)


async def sensor_index(dsn: str) -> dict[int, int]:
    """Database sensor id -> index in the generated site (tags G12, P13, T14 -> 12, 13, 14)."""
    async with await RigDb.connect(dsn) as db:
        ids = await db.sensor_ids()
    return {i: int(tag[1:]) for tag, i in ids.items() if tag[:1] in "GPT" and tag[1:].isdigit()}


@dataclass
class ReadingCheck:
    phases: dict[int, dict] = field(default_factory=dict)
    unexpected: int = 0
    examples_lost: list[dict] = field(default_factory=list)

    @property
    def total(self) -> dict:
        keys = ("sent", "stored", "lost", "unacked_missing", "duplicated")
        return {k: sum(p[k] for p in self.phases.values()) for k in keys} | {"unexpected": self.unexpected}


def check_readings(ledger: Ledger, sid: np.ndarray, t: np.ndarray, index: dict[int, int]) -> ReadingCheck:
    K, N = ledger.ticks, ledger.n_sensors
    lut = np.full(max(index, default=0) + 1, -1, dtype=np.int64)
    for db_id, i in index.items():
        lut[db_id] = i
    idx = np.where(sid < len(lut), lut[np.minimum(sid, len(lut) - 1)], -1)
    k = ledger.tick_of(t)
    ok = (idx >= 0) & (idx < N) & (k >= 0) & (k < K)
    ok &= np.abs(t - ledger.time_of(np.clip(k, 0, max(0, K - 1)))) < 2e-6
    out = ReadingCheck(unexpected=int((~ok).sum()))
    counts = np.bincount(k[ok] * N + idx[ok], minlength=K * N).reshape(K, N) if K else np.zeros((0, N), np.int64)
    acked = np.repeat(ledger.acked, ledger.per_collector, axis=1)  # (K, N)
    present = counts > 0
    for p in np.unique(ledger.tick_phase):
        rows = ledger.tick_phase == p
        c, a = counts[rows], acked[rows]
        pres = present[rows]
        out.phases[int(p)] = {"sent": int(rows.sum()) * N, "stored": int(pres.sum()),
                              "lost": int((a & ~pres).sum()), "unacked_missing": int((~a & ~pres).sum()),
                              "duplicated": int(np.maximum(c - 1, 0).sum())}
    lost_k, lost_i = np.nonzero(acked & ~present)
    for kk, ii in zip(lost_k[:20], lost_i[:20]):
        out.examples_lost.append({"tick": int(kk), "sensor": int(ii), "collector": int(ii) // ledger.per_collector,
                                  "seq": int(kk), "time": float(ledger.time_of(kk)), "phase": int(ledger.tick_phase[kk])})
    return out


@dataclass
class Crossing:
    sensor: int  # index in the generated site
    t_first: float  # reading time of its first high reading
    t_last: float
    phase: int
    raised: int = 0  # raises seen on MQTT
    delay: float | None = None  # first raise's arrival minus t_first
    recorded: int = 0  # raises in the database
    left_active: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def crossings_of(ledger: Ledger) -> list[Crossing]:
    out = []
    for s, k0, k1 in zip(ledger.inj_sensor, ledger.inj_k0, ledger.inj_k1):
        k0 = int(k0)
        phase = int(ledger.tick_phase[k0]) if k0 < ledger.ticks else -1
        out.append(Crossing(int(s), float(ledger.time_of(k0)), float(ledger.time_of(int(k1))), phase))
    return out


def match_alarms(crossings: list[Crossing], changes: list[tuple[float, dict]], db_id: dict[int, int], *,
                 detector: str) -> None:
    """Fill ``raised``, ``delay`` and ``left_active`` (as seen on MQTT) of each crossing."""
    by_sensor: dict[int, list[tuple[float, dict]]] = {}
    for arrived, ch in changes:
        if ch.get("detector") == detector:
            by_sensor.setdefault(ch.get("sensor_id"), []).append((arrived, ch))
    nxt: dict[int, float] = {}  # the next crossing of the same sensor starts a new window
    ends: dict[int, float] = {}
    for c in sorted(crossings, key=lambda c: c.t_first, reverse=True):
        ends[id(c)] = nxt.get(c.sensor, float("inf"))
        nxt[c.sensor] = c.t_first
    for c in crossings:
        mine = by_sensor.get(db_id.get(c.sensor), [])
        raises = [a for a, ch in mine if ch.get("to") == "unack" and c.t_first - 1e-6 <= ch.get("time", -1) <= c.t_last + 1e-6]
        c.raised = len(raises)
        c.delay = (min(raises) - c.t_first) if raises else None
        later = [ch for _, ch in mine if c.t_first - 1e-6 <= ch.get("time", -1) < ends[id(c)] - 1e-6]
        if later:
            last = max(later, key=lambda ch: ch.get("time", 0))
            c.left_active = bool(last.get("active"))


async def record_alarms(dsn: str, crossings: list[Crossing], db_id: dict[int, int], *, detector: str) -> None:
    """Fill ``recorded`` and add the database's view to ``left_active``."""
    async with await RigDb.connect(dsn) as db:
        raises = await db.alarm_raises(detector)
        active = await db.active_alarm_sensors(detector)
    by_sensor: dict[int, list[float]] = {}
    for sensor_id, t in raises:
        by_sensor.setdefault(sensor_id, []).append(t)
    last_crossing: dict[int, Crossing] = {}
    for c in crossings:
        sid = db_id.get(c.sensor)
        c.recorded = sum(1 for t in by_sensor.get(sid, []) if c.t_first - 1e-6 <= t <= c.t_last + 1e-6)
        if sid is not None and (sid not in last_crossing or c.t_first > last_crossing[sid].t_first):
            last_crossing[sid] = c
    for sid, c in last_crossing.items():
        if sid in active:
            c.left_active = True


async def self_check(dsn: str, ledger: Ledger, index: dict[int, int], before: ReadingCheck, n: int = 5) -> dict:
    """Delete ``n`` stored readings of the run and check again: the checker must count exactly
    ``n`` more readings missing. Proves, in every run, that a loss would have been seen."""
    async with await RigDb.connect(dsn) as db:
        deleted = await db.delete_newest_readings(ledger.t0 + 1.0 + 0.5 * ledger.ticks * ledger.period, n)
    sid, t = await stored_rows(dsn, ledger.t0)
    after = check_readings(ledger, sid, t, index)

    def missing(c: ReadingCheck) -> int:
        return c.total["lost"] + c.total["unacked_missing"]

    return {"deleted": deleted, "missing_before": missing(before), "missing_after": missing(after),
            "ok": missing(after) - missing(before) == deleted > 0}
