"""The demo without MQTT or a database: the simulated plant straight into the real detectors.

Checks that the demo site config's detector parameters make the scripted incidents detectable,
and that the same plant without incidents raises (next to) no alarm. The readings go through the
daemon's own ``DetectorSet`` and ``AlarmBook`` (rounds, robot positions, a ``tick`` once a
second); an alarm raise, or a change to a condition of higher severity, counts as in the database
(no shelving or suppression here).

    python -m plantwatch.daemon.lab.demo_offline                   # the demo scenario, 60 s
    python -m plantwatch.daemon.lab.demo_offline --normal 600      # + 10 minutes without incidents
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from plantwatch.daemon.lab.simulator.plant import Plant
from plantwatch.daemon.lab.simulator.scenario import Scenario, default_scenario, load_scenario
from plantwatch.daemon.lab.simulator.truth import build_truth
from plantwatch.connectors.store import AlarmWrite

from plantwatch.daemon.alarms.book import AlarmBook
from plantwatch.daemon.config.model import Config, load_config
from plantwatch.daemon.detection import DetectorSet
from plantwatch.daemon.lab.demo_explain import explain
from plantwatch.daemon.lab.demo_report import AlarmRow, DemoReport, match_alarms, render_report
from plantwatch.daemon.lab.demo_site import load_demo_config

_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
#: a fixed, whole-second start so offline runs are reproducible (2024-11-23 14:00:00 UTC)
DEFAULT_T0 = 1732370400.0


def simulate_alarms(config: Config, scenario: Scenario, *, duration: int, t0: float = DEFAULT_T0,
                    seed: int | None = None, tick_every: float = 1.0) -> list[AlarmRow]:
    """Run the plant for ``duration`` simulated seconds through the daemon's own detection and
    alarm code (``DetectorSet``, ``AlarmBook``) and return the alarm raises, in time order.

    A raise is a new alarm or one that got more severe, as ``connectors/demo_queries`` counts
    them in the database."""
    plant = Plant(config, scenario, t0=t0, seed=seed)
    detectors = DetectorSet(config)
    book = AlarmBook(np.arange(len(config.sensors), dtype=np.int32))  # positions stand in for database ids
    tags = [s.id for s in config.sensors]
    areas = [s.area for s in config.sensors]
    severity: dict[tuple[str, int], str] = {}
    alarms: list[AlarmRow] = []

    def record(ops) -> None:
        for op in ops:
            if not isinstance(op, AlarmWrite):
                continue
            key = (op.detector_id, op.sensor_id)
            worse = op.active and _RANK[op.severity] > _RANK[severity.get(key, op.severity)]
            if op.raised or worse:
                alarms.append(AlarmRow(time=op.t, sensor=tags[op.sensor_id], detector_id=op.detector_id,
                                       condition=op.condition, severity=op.severity, area=areas[op.sensor_id]))
            severity[key] = op.severity if op.active else "low"

    next_tick = t0 + tick_every
    for frame in plant.run(duration):
        record(book.apply(detectors.process(frame.idx, frame.time, frame.value)))
        if len(frame.robot_idx):
            pos = np.column_stack([frame.robot_x, frame.robot_y])
            record(book.apply(detectors.process(frame.robot_idx, frame.robot_time, frame.robot_value, pos)))
        while next_tick <= frame.t + 1.0:
            record(book.apply(detectors.tick(next_tick)))
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
    return explain(match_alarms(truth, alarms, margin=margin, source="alarms (offline)"), config, t0 + duration)


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
