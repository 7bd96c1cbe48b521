"""Group detectors in ``plantwatch bench-detectors``: per-reading, per-row and refit cost.

A group detector (:mod:`plantwatch.detectors.group`: ``pca_monitor``, ``pyod_group``) watches
the members of one sensor group and scores them jointly, so the N sensors of a case are split into
groups of ``--group-size`` members (8 like SKAB's loop, 33 like TEP's process; one more or fewer
in the last group when N is not a multiple), one detector instance per group, as a site config
with one group detector per area would make them.

Each round gives every sensor one reading; every group's detector gets its members' readings in
one ``update(idx, t, x)`` call, in local member indices, with ``defer_refit`` set: the daemon's
path (``daemon/detection.py``: ``Watch.feed`` per round, ``refit_jobs`` fitted in a worker
thread). Complete-mode groups form one row per round.

Phases:

* warm-up (untimed): one detector per distinct group size is fed until its ring of learned rows
  holds ``max(min_rows, window)`` rows (``--warm-rounds`` overrides), its first fit and refits
  run through the deferred API (``refit_data`` → ``fit_group_model`` → ``install_model``). Every
  group of a size is fed the same readings (:func:`group_readings`: stationary, correlated
  members, normal to the fitted model), so the other groups start from that detector's state
  (``get_state`` / ``set_state``, as the daemon restores a snapshot) instead of paying
  ``min_rows`` rounds each: the cost of a row does not depend on its values. Groups in alarm at
  the end of timing are reported (an alarmed group does not learn, which changes its cost).
* monitoring (timed like a univariate detector, in slices interleaved with the other detectors
  of the same sensor count): rounds of all groups; refits falling due are
  left in flight, as the daemon leaves them while its worker thread fits (scoring goes on with
  the old model).
* refit (timed separately): ``refit_data`` + ``fit_group_model`` + ``install_model`` of one group
  on its full ring, best of a few. A refit comes every ``refit_every`` learned rows, so it is
  reported amortised: fit time / ``refit_every`` per row, and that over the row's readings per
  reading. ``refit_every: 0`` fits once and never refits: no refit cost.

A phase that gathers no samples says why (e.g. the warm-up was shorter than ``min_rows``).
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from plantwatch.detectors import REGISTRY
from plantwatch.detectors.group import GroupDetector, fit_group_model

#: the site's default univariate set the cost of every detector is compared with
DEFAULT_SET = ("limit", "stale", "robust_zscore", "ewma")


def _skab_params() -> dict[str, Any]:
    from plantwatch.daemon.lab.evaluate.skab import site_params

    return site_params()


#: ``--detectors name:preset``: named params sets (no preset: the detector's ``example_params``)
PRESETS: dict[str, dict[str, Callable[[], dict[str, Any]]]] = {
    "pca_monitor": {"skab": _skab_params},  # the skab-pca entry of daemon/lab/sites/skab.yaml
}


class SpecError(ValueError):
    """A ``--detectors`` entry that names no detector or no preset of it."""


def resolve(spec: str) -> tuple[str, type, dict[str, Any]]:
    """``name`` or ``name:preset`` → (label, detector class, params dict)."""
    name, _, preset = spec.partition(":")
    if name not in REGISTRY:
        raise SpecError(f"unknown detector {name!r}; known: {', '.join(sorted(REGISTRY))}")
    cls = REGISTRY[name]
    if not preset:
        return name, cls, cls.example_params()
    known = PRESETS.get(name, {})
    if preset not in known:
        has = f"presets of {name}: {', '.join(sorted(known))}" if known else f"{name} has no presets"
        raise SpecError(f"unknown preset {preset!r} in {spec!r}; {has}")
    return spec, cls, known[preset]()


def is_group(cls: type) -> bool:
    return issubclass(cls, GroupDetector)


def default_specs(include_all: bool) -> list[str]:
    """Every univariate detector, every group detector plain and with each preset; with
    ``include_all`` also the other multi-sensor detectors (timed like univariate ones)."""
    out = []
    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        if is_group(cls):
            out += [name] + [f"{name}:{p}" for p in sorted(PRESETS.get(name, {}))]
        elif cls.univariate or include_all:
            out.append(name)
    return out


def group_sizes(n: int, size: int) -> list[int]:
    """``n`` sensors in groups of ``size``; the rest is one smaller group (or joins the last
    group when it would be a single sensor)."""
    if n <= size:
        return [n]
    full, rest = divmod(n, size)
    if rest == 1:
        return [size] * (full - 1) + [size + 1]
    return [size] * full + ([rest] if rest else [])


def group_readings(sensors, rounds: int, seed: int = 0) -> np.ndarray:
    """``rounds`` x members readings of one group: two shared process factors (random loadings)
    plus each member's own noise, around mid-range. Stationary, so a model fitted on the first
    rows stays valid (the group is normal, as a monitored process mostly is), and any stretch of
    rows can follow any other."""
    rng = np.random.default_rng(seed)
    lo = np.array([s.range_min for s in sensors])
    span = np.array([s.range_max - s.range_min for s in sensors])
    loadings = rng.normal(0, 1, (2, len(sensors)))
    u = 0.5 + 0.05 * rng.normal(0, 1, (rounds, 2)) @ loadings + 0.02 * rng.normal(0, 1, (rounds, len(sensors)))
    return lo + np.clip(u, 0.05, 0.95) * span


def _serve_refit(det: GroupDetector) -> float:
    """One deferred refit as the daemon runs it; its seconds."""
    start = time.perf_counter()
    det.install_model(fit_group_model(det.refit_data()))
    return time.perf_counter() - start


def _warm(cls, params, sensors, block: np.ndarray, rounds: int, t0: float) -> GroupDetector:
    det = cls(params, sensors)
    det.defer_refit = True
    idx = np.arange(len(sensors), dtype=np.int64)
    for r in range(rounds):
        det.update(idx, np.full(len(idx), t0 + r), block[r])
        if det.needs_refit():
            _serve_refit(det)
    return det


def _no_fit_reason(label: str, det: GroupDetector, rounds: int) -> str:
    p = det.params
    formed, skipped, learned = (int(c) for c in det.counts[:3])
    return (f"{label}: not fitted after {rounds} warm-up rounds: it learns {p.min_rows} rows (min_rows) before its "
            f"first fit; {formed} rows formed, {skipped} skipped, {learned} learned"
            + ("; give --warm-rounds at least min_rows" if rounds < p.min_rows else ""))


class Timed:
    """The timed rounds of one case. ``slice`` runs rounds for at least ``seconds`` (and three
    rounds); the cases of one sensor count take their slices in turn, so a change in the
    machine's load falls on all of them alike. The best slice counts: other processes only ever
    make a round slower. One untimed round runs at once (so a detector that fails, fails here)."""

    def __init__(self, step: Callable[[], None], n: int):
        self.step, self.n = step, n
        self.best, self.rounds, self.seconds = math.inf, 0, 0.0
        step()

    def slice(self, seconds: float) -> None:
        start = time.perf_counter()
        timed = 0
        while True:
            self.step()
            timed += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and timed >= 3:
                break
        self.best = min(self.best, elapsed / timed)
        self.rounds += timed
        self.seconds += elapsed

    def figures(self) -> dict[str, Any]:
        return {"samples": self.rounds, "rounds": self.rounds, "seconds": self.seconds,
                "readings_per_s": self.n / self.best, "us_per_round": self.best * 1e6,
                "ns_per_reading": self.best / self.n * 1e9}


class GroupCase:
    """``n`` sensors in groups of ``size``, warmed up and ready to time (``timed``; None when the
    warm-up did not fit a model, ``res["why"]`` says why); :meth:`finish` adds the per-row
    figures and the refit cost. ``readings(sensors, rounds)`` gives a (rounds, members) block."""

    def __init__(self, label: str, cls, params_dict: dict[str, Any], n: int, size: int,
                 warm_rounds: int | None = None, readings: Callable = group_readings, t0: float = 1_700_000_000.0):
        self.label = label
        self.params = params = cls.Params.model_validate(params_dict)
        sensors = cls.example_sensors(n)
        sizes = group_sizes(n, size)
        wanted = max(params.min_rows, params.window if params.refit_every else 0) + 2
        rounds = wanted if warm_rounds is None else warm_rounds
        cycle = 64
        layout = " + ".join(f"{sizes.count(g):,} × {g}" for g in sorted(set(sizes), key=lambda g: (-sizes.count(g), g)))
        self.res: dict[str, Any] = {"groups": len(sizes), "group_size": size, "layout": layout, "warm_rounds": rounds}
        self.timed: Timed | None = None
        protos, blocks = {}, {}
        for g in sorted(set(sizes)):
            blocks[g] = readings(sensors[:g], rounds + cycle)
            protos[g] = _warm(cls, params, sensors[:g], blocks[g], rounds, t0)
            if not protos[g].fitted:
                self.res |= {"samples": 0, "why": _no_fit_reason(label, protos[g], rounds),
                             "refit": {"samples": 0, "why": "no model to refit (not fitted)"}}
                return
        self.proto = protos[sizes[0]]
        dets, starts, a = [], [], 0
        for g in sizes:
            d = cls(params, sensors[a:a + g])
            d.defer_refit = True
            d.set_state(protos[g].get_state())
            dets.append(d)
            starts.append(a)
            a += g
        self.dets = dets
        # each group's readings: its size's block, laid side by side; one time per sensor per round
        x_all = np.concatenate([blocks[g][rounds:] for g in sizes], axis=1)
        jitter = np.random.default_rng(1).uniform(0, 0.5, n)
        feeds = [(d, np.arange(g, dtype=np.int64), s, s + g) for d, g, s in zip(dets, sizes, starts)]
        r = rounds

        def one_round():
            nonlocal r
            t = t0 + r + jitter
            x = x_all[(r - rounds) % cycle]
            for d, idx, lo, hi in feeds:
                d.update(idx, t[lo:hi], x[lo:hi])
            r += 1

        self.timed = Timed(one_round, n)
        self.rows_before = self._rows()

    def _rows(self) -> int:
        return sum(int(d.counts[0]) for d in self.dets)

    def finish(self) -> dict[str, Any]:
        tm, res = self.timed, self.res
        rows = self._rows() - self.rows_before
        res["groups_in_alarm"] = sum(int(d.decider.code[0] != 0) for d in self.dets)
        rows_per_round = rows / tm.rounds
        res.update(tm.figures(), rows_per_round=rows_per_round,
                   ns_per_row=tm.best / rows_per_round * 1e9 if rows else None)
        if not rows:
            res["why_no_rows"] = f"{self.label}: no rows formed in {tm.rounds} timed rounds (step {self.params.step})"
        res["refit"] = _refit_cost(self.proto, rows / (tm.rounds * tm.n))
        return res


def _refit_cost(det: GroupDetector, rows_per_reading: float, tries: int = 5) -> dict[str, Any]:
    p = det.params
    ring = int(min(det.counts[2], p.window))
    out: dict[str, Any] = {"refit_every": p.refit_every, "ring_rows": ring, "window": p.window,
                           "members": det.n, "rows_formed": int(det.counts[0])}
    best = min(_serve_refit(det) for _ in range(tries))
    if p.refit_every == 0:
        # the fit is still measured: what a start (or a relearn) costs once per group
        return out | {"samples": 0, "fit_ms": best * 1e3,
                      "why": f"refit_every 0: fitted once on its first {p.min_rows} rows, never refitted"}
    per_row = best / p.refit_every
    return out | {"samples": tries, "fit_ms": best * 1e3, "ns_per_row": per_row * 1e9,
                  "ns_per_reading": per_row * rows_per_reading * 1e9}


def render_groups(report: dict[str, Any], console) -> None:
    """The group detectors' per-row figures and refit cost, one row per detector, size and
    group size; a refit phase without samples says why."""
    from rich.table import Table

    rows = [r for r in report["results"] if r["kind"] == "group"]
    if not rows:
        return
    table = Table(title="Group detectors: per row, and refits amortised over the rows between them")
    for col in ["detector", "sensors", "groups", "ns/row", "refit ms", "every", "refit ns/rdg", "total ns/rdg",
                "× default"]:
        table.add_column(col, **({"no_wrap": True} if col in ("detector", "groups") else {"justify": "right"}))
    notes = []
    for r in rows:
        f = r["refit"]
        table.add_row(r["detector"], f"{r['sensors']:,}", r["layout"],
                      "-" if r["ns_per_row"] is None else f"{r['ns_per_row']:,.0f}",
                      f"{f['fit_ms']:.2f}" if "fit_ms" in f else "-",
                      f"{f['refit_every']} rows" if f.get("refit_every") else "never",
                      f"{f['ns_per_reading']:.0f}" if "ns_per_reading" in f else "-",
                      f"{r['total_ns_per_reading']:.0f}",
                      "-" if r["total_default_ratio"] is None else f"{r['total_default_ratio']:.1f}")
        if f["samples"] == 0:
            notes.append(f"{r['detector']} at {r['sensors']:,} sensors, refit: {f['why']}")
        elif f["ring_rows"] < f["window"]:
            notes.append(f"{r['detector']} in groups of {r['group_size']}: refit timed on {f['ring_rows']} of its "
                         f"{f['window']} window rows ({f['rows_formed']} rows formed in the warm-up; rows held in "
                         "an alarm are not learned)")
        if r["groups_in_alarm"]:
            notes.append(f"{r['detector']} at {r['sensors']:,} sensors in groups of {r['group_size']}: "
                         f"{r['groups_in_alarm']:,} of {r['groups']:,} groups in alarm after timing (the model "
                         "sees the bench's stationary readings as abnormal)")
        if "why_no_rows" in r:
            notes.append(r["why_no_rows"])
    console.print(table)
    console.print("refit ms: one group's refit_data + fit_group_model + install_model (best of 5, the daemon runs "
                  "it in a worker thread); refit ns/rdg: that / refit_every rows / members; total: monitoring + refit")
    for line in dict.fromkeys(notes):
        console.print(f"[yellow]{line}[/yellow]")
