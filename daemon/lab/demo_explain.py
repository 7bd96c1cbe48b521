"""Why the demo missed an incident: the detectors configured for its sensors, and what kept each
from alarming (pure: the config, the ground truth and the alarms raised; no database).

For every sensor that should have alarmed and did not, the first reason that applies:

* it was alarmed, but with another condition (a drifting cell caught by its gas limit was taken
  for a gas release: the wrong diagnosis);
* no enabled, alarming detector watches it for the incident's conditions (and which detector type
  would: ``neighbour_drift`` for a drift, ``flatline`` for a frozen value ...);
* a detector watches it, but could not reach its condition within the run: a ``flatline`` window
  or a ``stale`` timeout longer than the time the fault lasted in the run, a ``neighbour_drift``
  whose sensor has fewer usable neighbours in the same entry than it needs, or a warm-up longer
  than the run;
* otherwise: which detectors watch it, and that none of them alarmed in the window.
"""
from __future__ import annotations

import math

from plantwatch.detectors import REGISTRY

from plantwatch.daemon.config.model import Config, DetectorConfig
from plantwatch.daemon.lab.demo_report import DemoReport, IncidentResult


def explain(report: DemoReport, config: Config, run_end: float | None = None) -> DemoReport:
    """Fill in ``why`` (sensor → reason) of every incident that has missed sensors."""
    end = run_end if run_end is not None else _run_end(report)
    t0 = report.truth.t0
    for r in report.results:
        r.why = {s: why_missed(r, s, config, end, t0) for s in r.missed}
    return report


def _run_end(report: DemoReport) -> float:
    ends = [i.end for i in report.truth.incidents if i.end is not None and math.isfinite(i.end)]
    return max(ends) if ends else math.inf


def _types_with(conditions: tuple[str, ...]) -> list[str]:
    return sorted(name for name, cls in REGISTRY.items() if set(conditions) & set(cls.CONDITIONS[1:]))


def why_missed(result: IncidentResult, sensor: str, config: Config, run_end: float, t0: float | None = None) -> str:
    inc = result.incident
    conds = inc.conditions
    other = sorted({(a.condition, a.detector_id) for a in result.related if a.sensor == sensor})
    if other and conds is not None:
        got = ", ".join(f"{c} ({d})" for c, d in other)
        return f"alarmed as {got}, not as {' / '.join(conds)}"
    ids = [s.id for s in config.sensors]
    if sensor not in ids:
        return f"{sensor} is not in the site config"
    col = ids.index(sensor)
    watching = [d for d in config.detectors if d.enabled and d.alarm and col in config.watched(d)]
    able = [d for d in watching if conds is None or set(conds) & set(REGISTRY[d.type].CONDITIONS[1:])]
    if not able:
        want = " / ".join(conds) if conds else "an alarm"
        types = _types_with(conds) if conds else []
        hint = f": configure a {' or '.join(types)} detector for it" if types else ""
        muted = [d.id for d in config.detectors if d.enabled and not d.alarm and col in config.watched(d)
                 and (conds is None or set(conds) & set(REGISTRY[d.type].CONDITIONS[1:]))]
        if muted:
            return f"{', '.join(muted)} watch {sensor} with alarm: false (events only)"
        return f"no detector watches {sensor} for {want}{hint}"
    lasted = max(0.0, min(run_end, inc.end if inc.end is not None else run_end) - inc.start)
    run = run_end - (t0 if t0 is not None else inc.start)
    reasons = [_limit_of(d, col, config, lasted, run) for d in able]
    reasons = [x for x in reasons if x]
    if reasons:
        return "; ".join(reasons)
    return (f"{', '.join(f'{d.id} ({d.type})' for d in able)} watch{'es' if len(able) == 1 else ''} {sensor} "
            f"but raised no alarm in the incident's window")


def _limit_of(d: DetectorConfig, col: int, config: Config, lasted: float, run: float) -> str | None:
    """What keeps detector ``d`` from alarming on sensor ``col`` when the fault lasted ``lasted``
    seconds of a run of ``run`` seconds."""
    p = d.validated_params()
    if d.type == "flatline" and p.window > lasted:
        return (f"{d.id}: flatline window {p.window:g} s is longer than the {lasted:.0f} s the fault lasted"
                f" in the run")
    if d.type == "stale" and p.timeout > lasted:
        return f"{d.id}: stale timeout {p.timeout:g} s is longer than the {lasted:.0f} s the fault lasted in the run"
    if d.type == "neighbour_drift":
        watched = {config.sensors[i].id for i in config.watched(d)}
        usable = [n for n in config.sensors[col].neighbours if n in watched]
        if len(usable) < p.min_neighbours:
            return (f"{d.id}: {config.sensors[col].id} has {len(usable)} neighbour(s) watched by the same entry,"
                    f" it needs {p.min_neighbours}")
    warmup = getattr(p, "warmup", None)
    if isinstance(warmup, int) and warmup > run:  # readings at about 1 Hz
        return f"{d.id}: warm-up of {warmup} readings is longer than the run"
    return None
