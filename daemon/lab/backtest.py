"""Backtesting: what would a candidate config have done on past data, beside the active one?

Stored readings of ``[start, end)`` are read back with binary COPY in time chunks and replayed
through the same detector and alarm code the daemon runs (``DetectorSet``, ``AlarmBook``), with
time-driven detectors (stale data) ticked in reading time. Nothing is written. A warm-up period
before ``start`` lets statistical detectors learn without their alarms being counted.

Everything the live daemon sees is replayed: fixed readings, robot readings with their positions
and declared transfers (connectors/replay.py). A declaration is handed to the detectors when the
replay reaches the earlier of its declaration time and its start: a transfer declared in advance
explains its readings as it did live; one declared after it started (a late declaration) counts
from when it was declared, so the alarm the late declaration cleared live is raised here too.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from plantwatch.connectors.replay import DeclaredTransfer, RobotChunk, read_robot, read_transfers
from plantwatch.connectors.store import AlarmWrite, Store

from plantwatch.daemon.alarms.stats import Activation, AlarmFigures, figures
from plantwatch.daemon.alarms.book import AlarmBook
from plantwatch.daemon.config.model import Config
from plantwatch.daemon.detection import DetectorSet


@dataclass(slots=True)
class LabelResult:
    id: str
    kind: str
    detected: bool
    delay: float | None  # seconds from the incident's start to the first alarm on its sensors
    first_alarm: str | None  # "sensor/detector"


@dataclass(slots=True)
class Replay:
    name: str
    figures: AlarmFigures
    labels: list[LabelResult] = field(default_factory=list)
    activations: list[Activation] = field(default_factory=list)


@dataclass(slots=True)
class BacktestResult:
    start: float
    end: float
    readings: int
    seconds: float
    runs: list[Replay]

    @property
    def rate(self) -> float:
        return self.readings / self.seconds if self.seconds else 0.0


class _Run:
    def __init__(self, name: str, cfg: Config, tag_of: dict[int, str], max_id: int):
        self.name, self.cfg = name, cfg
        self.col_of = np.full(max_id + 1, -1, dtype=np.int64)
        index = {s.id: i for i, s in enumerate(cfg.sensors)}
        for sid, tag in tag_of.items():
            if tag in index:
                self.col_of[sid] = index[tag]
        db_ids = np.zeros(len(cfg.sensors), dtype=np.int32)
        for sid, tag in tag_of.items():
            if tag in index:
                db_ids[index[tag]] = sid
        self.detectors = DetectorSet(cfg)
        for w in self.detectors.watches:  # nothing fits group models off-loop here: refit inline when due
            w.detector.defer_refit = False
        self.book = AlarmBook(db_ids)
        self.tag_of = tag_of
        self.area_of = {s.id: s.area for s in cfg.sensors}
        self.acts: list[Activation] = []

    def feed(self, sid: np.ndarray, t: np.ndarray, v: np.ndarray, q: np.ndarray, count_from: float) -> None:
        col = self.col_of[sid]
        ok = col >= 0  # each detector judges the reading classes it declares, as in the daemon
        self._record(self.book.apply(self.detectors.process(col[ok], t[ok], v[ok], quality=q[ok])), count_from)

    def feed_robot(self, rb: RobotChunk, count_from: float) -> None:
        col = self.col_of[rb.sensor_id]
        ok = col >= 0
        self._record(self.book.apply(self.detectors.process(col[ok], rb.t[ok], rb.value[ok], rb.pos[ok],
                                                            quality=rb.quality[ok])), count_from)

    def declare(self, tr: DeclaredTransfer) -> None:
        tag = self.tag_of.get(tr.sensor_id)
        if tag is not None and tag in self.area_of:
            self.detectors.declare_transfer(tag, tr.start, tr.end, tr.quantity)

    def tick(self, now: float, count_from: float) -> None:
        self._record(self.book.apply(self.detectors.tick(now)), count_from)

    def _record(self, ops, count_from: float) -> None:
        for op in ops:
            if isinstance(op, AlarmWrite) and op.raised and op.t >= count_from:
                tag = self.tag_of[op.sensor_id]
                self.acts.append(Activation(op.t, tag, self.area_of.get(tag, ""), op.detector_id, op.severity))


def match_labels(acts: list[Activation], labels: list[dict[str, Any]]) -> list[LabelResult]:
    """Which labelled incidents (the simulator's ground-truth format) the alarms caught, and how early."""
    out = []
    for inc in labels:
        sensors = set(inc.get("sensors") or [])
        lo = float(inc["start"])
        hi = float(inc.get("end") or lo) + float(inc.get("settle") or 0.0)
        hits = sorted((a for a in acts if a.sensor in sensors and lo <= a.t <= hi), key=lambda a: a.t)
        first = hits[0] if hits else None
        out.append(LabelResult(str(inc.get("id")), str(inc.get("kind", "")), first is not None,
                               first.t - lo if first else None, f"{first.sensor}/{first.detector}" if first else None))
    return out


async def backtest(store: Store, configs: dict[str, Config], start: float, end: float, *,
                   labels: list[dict[str, Any]] | None = None, warmup: float = 3600.0, chunk: float = 3600.0,
                   tick_every: float = 5.0, operator_positions: int = 1) -> BacktestResult:
    tag_of = await store.sensor_tags()
    max_id = max(tag_of, default=0)
    runs = [_Run(name, cfg, tag_of, max_id) for name, cfg in configs.items()]
    t_begin = time.perf_counter()
    n = 0
    chunks = []
    a = start - warmup
    while a < end:
        chunks.append((a, min(a + chunk, end)))
        a += chunk
    state = {"next_tick": start - warmup + tick_every}
    transfers = sorted(await read_transfers(store.pool, start - warmup, end),
                       key=lambda x: (min(x.declared_at, x.start), x.declared_at))

    def declare_until(t_end: float) -> None:
        while transfers and min(transfers[0].declared_at, transfers[0].start) < t_end:
            tr = transfers.pop(0)
            for r in runs:
                r.declare(tr)

    def segment(sid, t, v, q, rb: RobotChunk, lo, hi, rlo, rhi, t_end) -> None:
        declare_until(t_end)  # declarations first: live, a declaration explains the readings behind it
        for r in runs:
            if hi > lo:
                r.feed(sid[lo:hi], t[lo:hi], v[lo:hi], q[lo:hi], start)
            if rhi > rlo:
                r.feed_robot(RobotChunk(rb.sensor_id[rlo:rhi], rb.t[rlo:rhi], rb.value[rlo:rhi], rb.quality[rlo:rhi],
                                        rb.pos[rlo:rhi]), start)

    def replay(sid, t, v, q, rb: RobotChunk, b) -> None:
        # split at tick boundaries so that stale-data detectors see the silence as it happened
        edges = np.arange(state["next_tick"], b + 1e-9, tick_every)
        cuts = np.searchsorted(t, edges, side="left")
        rcuts = np.searchsorted(rb.t, edges, side="left")
        lo = rlo = 0
        for edge, hi, rhi in zip(edges, cuts, rcuts):
            segment(sid, t, v, q, rb, lo, hi, rlo, rhi, float(edge))
            for r in runs:
                r.tick(float(edge), start)
            lo, rlo = hi, rhi
        if lo < len(t) or rlo < len(rb):
            segment(sid, t, v, q, rb, lo, len(t), rlo, len(rb), b)
        if len(edges):
            state["next_tick"] = float(edges[-1] + tick_every)

    async def read(a: float, b: float):
        return await store.read_readings(a, b), await read_robot(store.pool, a, b)

    # read chunk k+1 from the database while chunk k is replayed in a worker thread (numpy
    # releases the GIL in its kernels, asyncpg reads on the event loop)
    pending = asyncio.ensure_future(read(*chunks[0])) if chunks else None
    for k, (a, b) in enumerate(chunks):
        (sid, t, v, q), rb = await pending
        pending = asyncio.ensure_future(read(*chunks[k + 1])) if k + 1 < len(chunks) else None
        n += len(t) + len(rb)
        await asyncio.to_thread(replay, sid, t, v, q, rb, b)
    seconds = time.perf_counter() - t_begin
    replays = [Replay(r.name, figures(r.acts, start, end, operator_positions=operator_positions),
                      match_labels(r.acts, labels or []), r.acts) for r in runs]
    return BacktestResult(start, end, n, seconds, replays)


def parse_time(s: str) -> float:
    """Unix seconds from a number, or an ISO 8601 date/time (UTC if no offset is given)."""
    try:
        return float(s)
    except ValueError:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
        return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def to_json(res: BacktestResult) -> dict[str, Any]:
    return {
        "start": res.start, "end": res.end, "readings": res.readings, "seconds": res.seconds,
        "readings_per_second": res.rate,
        "configs": {r.name: {
            "alarms": r.figures.total, "per_day": r.figures.per_day, "per_10min_mean": r.figures.per_10min_mean,
            "per_10min_max": r.figures.per_10min_max, "per_operator_10min": r.figures.per_operator_10min,
            "within_eemua_191": r.figures.within_eemua, "flood_percent": r.figures.flood_percent,
            "by_area": r.figures.by_area, "by_severity": r.figures.by_severity, "top10": r.figures.top10,
            "chattering": r.figures.chattering,
            "labels": [{"id": x.id, "kind": x.kind, "detected": x.detected, "delay_s": x.delay,
                        "first_alarm": x.first_alarm} for x in r.labels]} for r in res.runs}}


def render(res: BacktestResult, console) -> None:
    from rich.table import Table

    names = [r.name for r in res.runs]
    t = Table(title=f"backtest {datetime.fromtimestamp(res.start, timezone.utc):%Y-%m-%d %H:%M} → "
                    f"{datetime.fromtimestamp(res.end, timezone.utc):%Y-%m-%d %H:%M} UTC: {res.readings:,} readings "
                    f"replayed in {res.seconds:.1f} s ({res.rate:,.0f} readings/s)")
    t.add_column("")
    for n in names:
        t.add_column(n, justify="right")
    f = [r.figures for r in res.runs]
    t.add_row("alarms", *[str(x.total) for x in f])
    t.add_row("alarms per day", *[f"{x.per_day:.1f}" for x in f])
    t.add_row("per operator per 10 min (EEMUA 191: ≤ 1)",
              *[f"{x.per_operator_10min:.2f} {'ok' if x.within_eemua else 'OVER'}" for x in f])
    t.add_row("max in one 10-min period", *[str(x.per_10min_max) for x in f])
    t.add_row("10-min periods in flood (>10)", *[f"{x.flood_percent:.1f} %" for x in f])
    t.add_row("chattering alarms (≥3/min)", *[str(len(x.chattering)) for x in f])
    areas = sorted({a for x in f for a in x.by_area})
    for a in areas:
        t.add_row(f"  area {a}", *[str(x.by_area.get(a, 0)) for x in f])
    for i in range(10):
        t.add_row(f"top-{i + 1} sensor" if i == 0 else f"  #{i + 1}",
                  *[f"{x.top10[i][0]} ({x.top10[i][1]})" if i < len(x.top10) else "" for x in f])
    if res.runs and res.runs[0].labels:
        for k, lab in enumerate(res.runs[0].labels):
            t.add_row(f"incident {lab.id} ({lab.kind})",
                      *[(f"caught +{r.labels[k].delay:.0f} s" if r.labels[k].detected else "missed") for r in res.runs])
    console.print(t)


def load_labels(path: str | Path | None) -> list[dict[str, Any]]:
    if not path:
        return []
    data = json.loads(Path(path).read_text())
    return data["incidents"] if isinstance(data, dict) else data
