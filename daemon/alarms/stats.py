"""Alarm-system performance figures (EEMUA 191 / ISA-18.2) over a list of alarm activations.

Pure computation, shared by the backtest (alarms a config *would* have raised) and reports on the
alarms actually raised. Benchmarks from EEMUA 191: about one alarm per 10 minutes per operator in
steady state is very likely acceptable; a 10-minute period with more than 10 alarms is a flood;
an alarm that activates 3 or more times within a minute is chattering.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

FLOOD_PER_10MIN = 10
CHATTER_PER_MIN = 3
EEMUA_ACCEPTABLE_PER_10MIN = 1.0


@dataclass(frozen=True, slots=True)
class Activation:
    t: float
    sensor: str
    area: str
    detector: str
    severity: str


@dataclass(slots=True)
class AlarmFigures:
    total: int
    days: float
    per_day: float
    per_10min_mean: float
    per_10min_max: int
    flood_percent: float  # % of 10-minute periods with more than 10 alarms
    per_operator_10min: float  # mean per operator position
    chattering: list[tuple[str, str, int]] = field(default_factory=list)  # (sensor, detector, max per minute)
    top10: list[tuple[str, int]] = field(default_factory=list)  # noisiest sensors
    by_area: dict[str, int] = field(default_factory=dict)
    by_severity: dict[str, int] = field(default_factory=dict)

    @property
    def within_eemua(self) -> bool:
        return self.per_operator_10min <= EEMUA_ACCEPTABLE_PER_10MIN


def figures(acts: list[Activation], start: float, end: float, *, operator_positions: int = 1) -> AlarmFigures:
    span = max(end - start, 1.0)
    n_buckets = max(1, int(np.ceil(span / 600.0)))
    t = np.array([a.t for a in acts], dtype=np.float64)
    buckets = np.bincount(np.clip(((t - start) // 600).astype(np.int64), 0, n_buckets - 1), minlength=n_buckets) \
        if len(t) else np.zeros(n_buckets, dtype=np.int64)
    chatter: list[tuple[str, str, int]] = []
    by_alarm: dict[tuple[str, str], list[float]] = {}
    for a in acts:
        by_alarm.setdefault((a.sensor, a.detector), []).append(a.t)
    for (s, d), ts in by_alarm.items():
        ts_a = np.sort(np.asarray(ts))
        # most activations within any 60 s window
        most = int(np.max(np.searchsorted(ts_a, ts_a + 60.0, side="left") - np.arange(len(ts_a))))
        if most >= CHATTER_PER_MIN:
            chatter.append((s, d, most))
    chatter.sort(key=lambda x: -x[2])
    return AlarmFigures(
        total=len(acts), days=span / 86400.0, per_day=len(acts) / (span / 86400.0),
        per_10min_mean=float(buckets.mean()), per_10min_max=int(buckets.max()),
        flood_percent=100.0 * float((buckets > FLOOD_PER_10MIN).mean()),
        per_operator_10min=float(buckets.mean()) / max(1, operator_positions),
        chattering=chatter, top10=Counter(a.sensor for a in acts).most_common(10),
        by_area=dict(Counter(a.area for a in acts)), by_severity=dict(Counter(a.severity for a in acts)))
