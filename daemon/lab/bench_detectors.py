"""``plantwatch bench detectors``: cost per reading of each registered detector.

Each detector is built from its ``example_params()`` (``--detectors name``) or a named params
set (``name:preset``, e.g. ``pca_monitor:skab``: the ``skab-pca`` entry of
``daemon/lab/sites/skab.yaml``) over ``example_sensors(n)`` for n = 1,000 and 10,000 sensors and
fed rounds of one reading per sensor, one second of reading time apart, for ``--seconds`` of
wall-clock time after an untimed warm-up, in three slices taken in turn with every other detector
of that sensor count (so the machine's load falls on all alike; the best slice counts). A univariate detector gets one ``update`` call per
round, as the daemon does for a batch whose sensors are distinct; a group detector
(``pca_monitor``, ``pyod_group``) watches groups of ``--group-size`` sensors, one instance and one
``update`` per group and round, and also reports its cost per row and its refits amortised over
the rows between them (:mod:`.bench_groups`). The process runs on one core (numpy's element-wise
operations are single-threaded), so the rate is per core.

Rates differ between machines, so the table also gives each detector's cost per reading in units
of the machine's own reference operation: ``np.add`` of two float64 arrays of the same size,
per element. "x np.add = 40" means a reading costs as much as 40 element additions; that ratio
is what to compare across machines. "x default" is the cost per reading over that of a site's
default set (``limit`` + ``stale`` + ``robust_zscore`` + ``ewma``, always timed in the same run).

``main(argv)`` returns 0, or 2 with one line on stderr for a ``--detectors`` entry that names no
detector or preset; ``--json FILE`` also writes the results as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Sequence

import numpy as np

from plantwatch.daemon.lab.bench_groups import (DEFAULT_SET, PRESETS, GroupCase, Timed, default_specs, is_group,
                                               render_groups, resolve)
from plantwatch.daemon.runtime import one_blas_thread

T0 = 1_700_000_000.0


def reference_ns_per_element(n: int, seconds: float = 0.3) -> float:
    """Best time of ``np.add(a, b, out=c)`` over arrays of ``n`` float64, per element (ns)."""
    rng = np.random.default_rng(0)
    a, b, c = rng.random(n), rng.random(n), np.empty(n)
    reps = max(10, int(2e6 // n))
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t = time.perf_counter()
        for _ in range(reps):
            np.add(a, b, out=c)
        times.append((time.perf_counter() - t) / reps)
    return float(np.min(times)) / n * 1e9


def _readings(sensors, rounds: int, seed: int = 0) -> np.ndarray:
    """``rounds`` x n readings: noise around mid-range with a slow wander, inside each range."""
    rng = np.random.default_rng(seed)
    lo = np.array([s.range_min for s in sensors])
    span = np.array([s.range_max - s.range_min for s in sensors])
    u = 0.5 + 0.05 * np.cumsum(rng.normal(0, 0.1, (rounds, len(sensors))), axis=0) / np.sqrt(rounds)
    u += rng.normal(0, 0.01, u.shape)
    return lo + np.clip(u, 0.05, 0.95) * span


def prepare_one(cls, n: int, warm_rounds: int = 100, params: dict[str, Any] | None = None) -> Timed:
    """One instance over ``n`` sensors after ``warm_rounds`` untimed rounds, ready to time."""
    sensors = cls.example_sensors(n)  # declared in the base class (detectors/base.py)
    params = cls.Params.model_validate(cls.example_params() if params is None else params)
    det = cls(params, sensors)
    block = _readings(sensors, 64)
    idx = np.arange(n, dtype=np.int64)
    jitter = np.random.default_rng(1).uniform(0, 0.5, n)
    r = 0

    def one_round():
        nonlocal r
        det.update(idx, T0 + r + jitter, block[r % len(block)])
        r += 1

    for _ in range(warm_rounds):
        one_round()
    return Timed(one_round, n)


def run(specs: Sequence[str] | None, sizes: Sequence[int], seconds: float, include_all: bool,
        progress=None, group_sizes: Sequence[int] = (8,), warm_rounds: int | None = None,
        repeats: int = 3) -> dict[str, Any]:
    """Time every ``name`` / ``name:preset`` in ``specs`` (default: :func:`bench_groups.default_specs`)
    at each sensor count; the default set is always timed too, for the ratio column. The cases of
    one sensor count are prepared first, then timed in ``repeats`` interleaved slices each."""
    one_blas_thread()  # as the daemon runs (its refits above all)
    chosen = list(specs) if specs else default_specs(include_all)
    chosen = [d for d in DEFAULT_SET if d not in chosen] + chosen
    resolved = [resolve(spec) for spec in chosen]
    results, skipped = [], []
    refs = {n: reference_ns_per_element(n) for n in sizes}
    for n in sizes:
        live = []
        for label, cls, params in resolved:
            group = is_group(cls)
            kind = "group" if group else "univariate" if cls.univariate else "multi"
            for g in group_sizes if group else [None]:
                if progress:
                    progress(f"warming up {label} x {n}" + (f" in groups of {g}" if g else ""))
                try:
                    if group:
                        case = GroupCase(label, cls, params, n, g, warm_rounds)
                        timed, finish = case.timed, case.finish
                        if timed is None:
                            skipped.append({"detector": label, "sensors": n, "group_size": g, "phase": "monitoring",
                                            "reason": case.res["why"]})
                            continue
                    else:
                        timed = prepare_one(cls, n, 100 if warm_rounds is None else warm_rounds, params)
                        finish = timed.figures
                except Exception as e:  # a detector with another interface: report, don't stop
                    skipped.append({"detector": label, "sensors": n, "reason": f"{type(e).__name__}: {e}"})
                    continue
                live.append(({"detector": label, "kind": kind, "univariate": kind == "univariate", "sensors": n},
                             timed, finish))
        for rep in range(repeats):
            if progress:
                progress(f"timing {len(live)} cases at {n:,} sensors, slice {rep + 1} of {repeats}")
            for _, timed, _ in live:
                timed.slice(seconds / repeats)
        for head, timed, finish in live:
            if progress:
                progress(f"refits of {head['detector']} x {n}")
            res = finish() | head
            res["np_add_ratio"] = res["ns_per_reading"] / refs[n]
            results.append(res)
        del live
    order = {label: i for i, (label, _, _) in enumerate(resolved)}
    results.sort(key=lambda r: (order[r["detector"]], r["sensors"], r.get("group_size") or 0))
    default = {}
    for n in sizes:
        parts = [r["ns_per_reading"] for r in results if r["sensors"] == n and r["detector"] in DEFAULT_SET]
        default[n] = sum(parts) if len(parts) == len(DEFAULT_SET) else None
    for r in results:
        d = default[r["sensors"]]
        r["default_ratio"] = r["ns_per_reading"] / d if d else None
        refit = r.get("refit")
        if refit is not None:
            r["total_ns_per_reading"] = r["ns_per_reading"] + refit.get("ns_per_reading", 0.0)
            r["total_default_ratio"] = r["total_ns_per_reading"] / d if d else None
    return {
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "reference": {str(n): {"op": "np.add(a, b, out=c), float64", "ns_per_element": refs[n],
                               "elements_per_s": 1e9 / refs[n]} for n in sizes},
        "default_set": {"detectors": list(DEFAULT_SET),
                        "ns_per_reading": {str(n): v for n, v in default.items()}},
        "seconds_per_case": seconds,
        "results": results,
        "skipped": skipped,
    }


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def render(report: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="Detector cost (one core; rounds of one reading per sensor)")
    for col in ["detector", "sensors", "readings/s", "µs/round", "ns/reading", "× np.add", "× default"]:
        table.add_column(col, **({"no_wrap": True} if col == "detector" else {"justify": "right"}))
    for r in report["results"]:
        name = r["detector"] + {"univariate": "", "multi": " (multi)"}.get(r["kind"], f" (groups of {r.get('group_size')})")
        table.add_row(name, f"{r['sensors']:,}", f"{r['readings_per_s']:,.0f}", f"{r['us_per_round']:,.0f}",
                      f"{r['ns_per_reading']:.0f}", f"{r['np_add_ratio']:.0f}", _ratio(r["default_ratio"]))
    console.print(table)
    render_groups(report, console)
    for n, v in report["default_set"]["ns_per_reading"].items():
        what = " + ".join(report["default_set"]["detectors"])
        console.print(f"default set at {int(n):,} sensors ({what}): "
                      + ("not measured" if v is None else f"{v:.0f} ns/reading (× default = 1.0)"))
    for n, ref in report["reference"].items():
        console.print(f"reference at {int(n):,} elements: {ref['op']} = {ref['ns_per_element']:.2f} ns/element "
                      f"({ref['elements_per_s']:,.0f}/s)")
    for s in report["skipped"]:
        console.print(f"[yellow]no samples, {s['detector']} at {s['sensors']:,} sensors: {s['reason']}[/yellow]")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="plantwatch bench-detectors", description=__doc__.split("\n\n")[0].replace("``", "").replace("plantwatch bench detectors", "plantwatch bench-detectors"))
    ap.add_argument("--sensors", type=int, nargs="+", default=[1000, 10000], help="sensor counts (default 1000 10000)")
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per detector and size (default 2)")
    ap.add_argument("--detectors", nargs="+", metavar="NAME[:PRESET]",
                    help="detectors to run, each plain (its example params) or with a preset "
                         f"({', '.join(f'{d}:{p}' for d, ps in PRESETS.items() for p in ps)}); default: every "
                         "univariate and every group detector; the default set (" + ", ".join(DEFAULT_SET)
                         + ") is always run, for the ratio")
    ap.add_argument("--all", action="store_true", help="also run the multi-sensor detectors that are not group detectors")
    ap.add_argument("--group-size", type=int, nargs="+", default=[8],
                    help="members per group of a group detector (default 8, as SKAB; TEP has 33)")
    ap.add_argument("--warm-rounds", type=int, metavar="N",
                    help="untimed rounds before timing (default: 100; a group detector: enough to fill its "
                         "ring, at least min_rows)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    from rich.console import Console

    if any(n < 1 for n in args.sensors) or args.seconds <= 0 or any(g < 2 for g in args.group_size) \
            or (args.warm_rounds is not None and args.warm_rounds < 0):
        ap.error("--sensors must be >= 1, --seconds > 0, --group-size >= 2 and --warm-rounds >= 0")
    for spec in args.detectors or []:
        try:
            resolve(spec)
        except ValueError as e:  # SpecError, or a preset whose params do not load
            print(f"plantwatch bench-detectors: --detectors: {' '.join(str(e).split())}", file=sys.stderr)
            return 2
    console = Console(width=None if sys.stdout.isatty() else 120)
    with console.status("benchmarking") as status:
        report = run(args.detectors, args.sensors, args.seconds, args.all,
                     progress=lambda s: status.update(f"benchmarking {s}"),
                     group_sizes=args.group_size, warm_rounds=args.warm_rounds)
    render(report, console)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
