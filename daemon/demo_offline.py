"""The demo without MQTT or a database: the simulated plant straight into the real detectors.

Checks that the demo site config's detector parameters make the scripted incidents detectable,
and that the same plant without incidents raises (next to) no alarm. The detectors are driven as
the daemon drives them: readings of one second are split into rounds in which each sensor appears
once (:func:`plantwatch.detectors.events.rounds`), each round goes through ``update``, time-driven
detectors get a ``tick`` once a second, and condition changes become events through
:class:`~plantwatch.detectors.events.EventTracker`. An event start, or a change to a condition of higher
severity, counts as an alarm raise (as the daemon's alarms; no shelving or suppression here).

    python -m plantwatch.daemon.demo_offline                   # the demo scenario, 60 s
    python -m plantwatch.daemon.demo_offline --normal 600      # + 10 minutes without incidents
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from plantwatch.connectors.simulator.plant import Plant
from plantwatch.connectors.simulator.scenario import Scenario, default_scenario, load_scenario
from plantwatch.connectors.simulator.truth import build_truth
from plantwatch.detectors import create
from plantwatch.detectors.events import EventTracker, rounds

from .config import Config, load_config
from .demo_report import AlarmRow, DemoReport, match_alarms, render_report
from .demo_site import load_demo_config

_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
#: a fixed, whole-second start so offline runs are reproducible (2024-11-23 14:00:00 UTC)
DEFAULT_T0 = 1732370400.0


@dataclass(slots=True)
class _Bank:
    """One configured detector with its column map and event tracker."""

    id: str
    detector: object
    colmap: np.ndarray  # sensor position -> column (-1: not watched)
    sensor_ids: list[str]
    areas: list[str]
    tracker: EventTracker
    severity_of: object


def _banks(config: Config) -> list[_Bank]:
    infos = config.sensor_infos()
    out = []
    for d in config.detectors:
        if not d.enabled:
            continue
        cols = config.watched(d)
        det = create(d.type, d.params, [infos[i] for i in cols])
        colmap = np.full(len(config.sensors), -1, dtype=np.int64)
        colmap[cols] = np.arange(len(cols))
        out.append(_Bank(d.id, det, colmap, [config.sensors[i].id for i in cols],
                         [config.sensors[i].area for i in cols], EventTracker(len(cols)), d.severity_of))
    return out


def _raises(bank: _Bank, transitions) -> list[AlarmRow]:
    out = []
    for tr in transitions:
        if tr.new == 0:
            continue
        cond = bank.detector.condition(tr.new)
        # as connectors/demo_queries.ALARM_RAISES_SQL: a new alarm, or one that got more severe
        if tr.old == 0 or _RANK[bank.severity_of(cond)] > _RANK[bank.severity_of(bank.detector.condition(tr.old))]:
            out.append(AlarmRow(time=tr.t, sensor=bank.sensor_ids[tr.sensor], detector_id=bank.id, condition=cond,
                                severity=bank.severity_of(cond), area=bank.areas[tr.sensor]))
    return out


def simulate_alarms(config: Config, scenario: Scenario, *, duration: int, t0: float = DEFAULT_T0,
                    seed: int | None = None, tick_every: float = 1.0) -> list[AlarmRow]:
    """Run the plant for ``duration`` simulated seconds through the configured detectors and
    return the alarm raises, in time order."""
    plant = Plant(config, scenario, t0=t0, seed=seed)
    banks = _banks(config)
    alarms: list[AlarmRow] = []
    next_tick = t0 + tick_every
    for frame in plant.run(duration):
        idx = np.concatenate([frame.idx, frame.robot_idx])
        t = np.concatenate([frame.time, frame.robot_time])
        x = np.concatenate([frame.value, frame.robot_value])
        order = np.argsort(t, kind="stable")
        idx, t, x = idx[order], t[order], x[order]
        # rounds over all sensors once: each detector maps sensors to distinct columns, so its
        # share of a round is a valid round for it too
        for r in rounds(idx):
            ri, rt, rx = idx[r], t[r], x[r]
            for b in banks:
                cols = b.colmap[ri]
                m = cols >= 0
                if not m.any():
                    continue
                out = b.detector.update(cols[m], rt[m], rx[m])
                alarms.extend(_raises(b, b.tracker.feed(out)))
        while next_tick <= frame.t + 1.0:
            for b in banks:
                out = b.detector.tick(next_tick)
                if out is not None:
                    alarms.extend(_raises(b, b.tracker.feed(out)))
            next_tick += tick_every
    alarms.sort(key=lambda a: (a.time, a.detector_id, a.sensor))
    return alarms


def run_offline(config: Config | None = None, scenario: Scenario | None = None, *, duration: int = 60,
                t0: float = DEFAULT_T0, seed: int | None = None, margin: float = 30.0) -> DemoReport:
    """Simulate, detect and score: the demo's table without MQTT or a database."""
    config = config or load_demo_config()
    scenario = scenario or default_scenario()
    alarms = simulate_alarms(config, scenario, duration=duration, t0=t0, seed=seed)
    truth = build_truth(config, scenario, t0=t0, duration=duration, seed=seed)
    return match_alarms(truth, alarms, margin=margin, source="alarms (offline)")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="plantwatch-demo-offline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, help="site config (default: the demo site)")
    ap.add_argument("--scenario", type=Path, help="scenario YAML/JSON (default: the demo scenario)")
    ap.add_argument("--duration", type=int, default=60, help="simulated seconds (default 60)")
    ap.add_argument("--seed", type=int, help="override the scenario's seed")
    ap.add_argument("--margin", type=float, default=30.0, help="seconds after an incident its alarms still count")
    ap.add_argument("--normal", type=int, default=0, metavar="SECONDS",
                    help="also run the plant this long without incidents and count its alarms")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON instead of tables")
    args = ap.parse_args(argv)

    config = load_config(args.config) if args.config else load_demo_config()
    scenario = load_scenario(args.scenario) if args.scenario else default_scenario()
    report = run_offline(config, scenario, duration=args.duration, seed=args.seed, margin=args.margin)
    normal = None
    if args.normal > 0:
        normal = simulate_alarms(config, scenario.without_incidents(), duration=args.normal, seed=args.seed)
    if args.json:
        out = report.summary()
        if normal is not None:
            out["normal"] = {"seconds": args.normal, "alarms": len(normal),
                             "rows": [{"time": a.time, "sensor": a.sensor, "detector_id": a.detector_id,
                                       "condition": a.condition} for a in normal]}
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    render_report(report)
    if normal is not None:
        from rich.console import Console
        from rich.table import Table

        con = Console()
        if not normal:
            con.print(f"[green]normal operation, {args.normal} s without incidents: 0 alarms[/green]")
        else:
            t = Table(title=f"normal operation, {args.normal} s without incidents: {len(normal)} alarm(s)",
                      title_justify="left")
            for col in ("+s", "sensor", "detector", "condition"):
                t.add_column(col)
            for a in normal:
                t.add_row(f"{a.time - DEFAULT_T0:.0f}", a.sensor, a.detector_id, a.condition)
            con.print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
