"""Ground truth of a simulator run: which incidents happened, when, and which sensors should alarm.

Written as JSON next to the run (``truth.json``) and read by the demo scoring
(:mod:`plantwatch.daemon.lab.demo_report`). One entry per incident::

    {"id": "leak-TK-103", "kind": "leak", "description": "...", "area": "tankfarm",
     "start": 1732371249.0, "end": 1732371289.0, "settle": 52.0, "magnitude": 50.0,
     "sensors": ["TF-H2S-01", ...],      # should alarm
     "affected": ["TF-H2S-04", ...],     # signal changed by the incident: may alarm (not false)
     "conditions": null}                 # if given, only alarms with these conditions detect it

* leak: ``sensors`` are the detectors (fixed and robot) whose noise-free concentration stays at or
  above their ``high`` limit for longer than the limit's on-delay + 1 s; ``affected`` adds those
  that see at least a fifth of it, and acoustic channels that hear the leak 3 dB over the rest.
* pressure_drop: the sensors acted on.
* drift, stuck, silent: the sensors acted on, with ``conditions`` ``["drift"]``, ``["flatline"]``
  and ``["stale"]``: an instrument fault is caught when it is diagnosed as one.

``start``/``end`` are Unix seconds (``end`` is the end of the run for an incident that lasts until
the run stops, and null while that end is not known); ``settle`` is how long after ``end`` the
incident's effects may still show (a leak's gas takes time to reach far detectors and to clear).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from plantwatch.daemon.lab.simulator.plant import leak_concentration, sensor_limits
from plantwatch.daemon.lab.simulator.robot_route import Route, acoustic_level, default_route, robot_channels
from plantwatch.daemon.lab.simulator.scenario import Incident, Robot, Scenario

if TYPE_CHECKING:  # pragma: no cover
    from plantwatch.daemon.config.model import Config

TRUTH_VERSION = 1
#: the alarm conditions that count as catching an instrument fault (a drifting sensor alarmed by
#: its gas limit was caught as a gas release, which is the wrong diagnosis)
CONDITIONS: dict[str, tuple[str, ...]] = {"silent": ("stale",), "drift": ("drift",), "stuck": ("flatline",)}
#: how long a leak is followed when neither its end nor the run's end is known (s)
OPEN_HORIZON = 900.0


def _longest_run(mask: np.ndarray) -> int:
    """Longest run of consecutive True values."""
    best = cur = 0
    for m in mask:
        cur = cur + 1 if m else 0
        best = max(best, cur)
    return best


def _leak_entry(config: "Config", scenario: Scenario, inc: Incident, horizon: float) -> dict[str, Any]:
    limits = sensor_limits(config)
    gas = inc.gas.lower()
    t_rel = np.arange(inc.start, horizon + 1.0, 1.0)
    sensors: list[str] = []
    affected: list[str] = []
    delays: dict[str, float] = {}
    for s in config.sensors:
        if s.kind != "gas" or s.quantity.lower() != gas or s.location is None:
            continue
        c = leak_concentration(inc, np.full(len(t_rel), s.location[0]), np.full(len(t_rel), s.location[1]), t_rel)
        _classify(s.id, c, t_rel, limits.get(s.id), sensors, affected, delays)
    routed = {r.id: r for r in scenario.robots}
    leaks = [i for i in scenario.incidents if i.kind == "leak"]
    for rid, chans in robot_channels(config).items():
        route = Route(routed.get(rid) or Robot(id=rid, route=default_route(config)))
        x, y = route.position(t_rel)
        for c in chans:
            s = config.sensors[c]
            q = s.quantity.lower()
            if q == gas:
                _classify(s.id, leak_concentration(inc, x, y, t_rel), t_rel, limits.get(s.id), sensors, affected, delays)
            elif q == "acoustic":
                others = [i for i in leaks if i.id != inc.id]
                heard = False
                for k, tr in enumerate(t_rel):
                    if inc.active(tr):
                        with_leak = acoustic_level(x[k], y[k], scenario.machines, others + [inc], tr)
                        without = acoustic_level(x[k], y[k], scenario.machines, others, tr)
                        if with_leak - without >= 3.0:
                            heard = True
                            break
                if heard:
                    affected.append(s.id)
    settle = max([inc.decay * 3] + [d + inc.decay * 3 for d in delays.values()])
    if inc.end is None:
        settle = 0.0
    return {"sensors": sensors, "affected": sorted(set(affected) | set(sensors)), "settle": round(settle, 1),
            "arrival": {k: round(v, 1) for k, v in sorted(delays.items(), key=lambda kv: kv[1])}}


def _classify(sid, c, t_rel, lp, sensors, affected, delays) -> None:
    peak = float(c.max()) if len(c) else 0.0
    if peak <= 0:
        return
    high = lp.high if lp is not None and lp.high is not None else None
    if high is not None:
        above = c >= high
        hold = int(math.ceil(lp.on_delay)) + 1
        if _longest_run(above) > hold:
            sensors.append(sid)
            delays[sid] = float(t_rel[np.argmax(above)] - t_rel[0])
            return
        if peak >= 0.2 * high:
            affected.append(sid)
            delays[sid] = float(t_rel[np.argmax(c >= 0.2 * high)] - t_rel[0])


def _describe(inc: Incident, config: "Config", scenario: Scenario) -> str:
    if inc.description:
        return inc.description
    s = ", ".join(inc.sensors)
    return {
        "leak": f"{inc.gas} leak at ({inc.source[0]:g}, {inc.source[1]:g}), {inc.magnitude:g} at the source",
        "pressure_drop": f"loss of containment: {s} falls by {inc.magnitude:.0%}",
        "drift": f"{s} drifting by {inc.magnitude:g} units/s",
        "stuck": f"{s} frozen",
        "silent": f"{s} stops reporting",
    }[inc.kind]


def build_truth(config: "Config", scenario: Scenario, *, t0: float, duration: float | None,
                seed: int | None = None) -> dict[str, Any]:
    """The ground truth of a run of ``scenario`` starting at Unix time ``t0``.

    ``duration`` (seconds) bounds what can happen: incidents that start after the run are left
    out, and open-ended ones end with the run.
    """
    entries = []
    horizon_rel = duration if duration is not None else OPEN_HORIZON
    for inc in scenario.incidents:
        if duration is not None and inc.start >= duration:
            continue
        end_rel = inc.end if inc.end is not None else duration
        if end_rel is not None and duration is not None:
            end_rel = min(end_rel, duration)
        entry: dict[str, Any] = {
            "id": inc.id,
            "kind": inc.kind,
            "description": _describe(inc, config, scenario),
            "area": inc.area,
            "start": round(t0 + inc.start, 3),
            "end": None if end_rel is None else round(t0 + end_rel, 3),
            "settle": 0.0,
            "magnitude": inc.magnitude,
            "sensors": list(inc.sensors),
            "affected": list(inc.sensors),
            "conditions": None,
        }
        if inc.kind == "leak":
            horizon = horizon_rel if inc.end is None else min(horizon_rel, inc.end + 120.0)
            entry.update(_leak_entry(config, scenario, inc, max(horizon, inc.start + 1.0)))
            entry["gas"] = inc.gas
            entry["source"] = list(inc.source)
            if inc.end is not None and duration is not None and inc.end > duration:
                entry["settle"] = 0.0
        elif inc.kind == "pressure_drop":
            entry["settle"] = round(3 * inc.recovery, 1)
        elif inc.kind in CONDITIONS:
            entry["conditions"] = list(CONDITIONS[inc.kind])
        if entry["area"] is None:
            areas = {s.area for s in config.sensors if s.id in entry["sensors"]}
            entry["area"] = areas.pop() if len(areas) == 1 else None
        entries.append(entry)
    return {
        "version": TRUTH_VERSION,
        "site": config.site.id,
        "scenario": scenario.name,
        "seed": scenario.seed if seed is None else seed,
        "t0": round(t0, 3),
        "duration": duration,
        "incidents": entries,
        "operations": [
            {**o.model_dump(mode="json"), "start": round(t0 + o.start, 3),
             "end": None if o.end is None else round(t0 + o.end, 3)}
            for o in scenario.operations
        ],
    }


def close_truth(truth: dict[str, Any], t_end: float) -> dict[str, Any]:
    """The truth of a run that stopped at ``t_end``: open-ended incidents end there."""
    out = dict(truth)
    out["duration"] = round(t_end - truth["t0"], 3)
    incs = []
    for e in truth["incidents"]:
        e = dict(e)
        if e["start"] >= t_end:
            continue
        if e["end"] is None or e["end"] > t_end:
            e["end"] = round(t_end, 3)
        incs.append(e)
    out["incidents"] = incs
    return out


def write_truth(path: str | Path, truth: dict[str, Any]) -> None:
    """Write atomically (a reader never sees half a file)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".truth-", suffix=".json", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(truth, f, indent=2)
            f.write("\n")
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


__all__ = ["build_truth", "close_truth", "write_truth"]
