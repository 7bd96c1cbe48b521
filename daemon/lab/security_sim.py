"""The chemical-security scenario simulator: one tank (and its temperature), its truth and its
declarations, for ``plantwatch security-eval``.

The tank holds ``capacity`` t of product, its level transmitter reports % of capacity; the product
expands with temperature (``beta`` per kelvin), so a daily ambient cycle of ±``swing_k`` K moves
the level by ±beta·swing_k (±0.5 %/day by default) while the mass stays. Normal operation: every
``cycle`` hours a declared truck loading (20 % of capacity over 30 min) and a declared refill. Each
case adds one event at ``event_at`` (hours):

* ``normal``: nothing (false alarms);
* ``siphon``: an undeclared continuous loss of ``siphon`` (fraction of capacity per hour);
* ``drawoff``: an undeclared 20 % draw-off over 100 s;
* ``skim``: a declared loading that takes 10 % more than declared;
* ``cover``: a declared loading that takes half of what was declared;
* ``frozen``: the transmitter holds its value while the tank drains 1 t/h, undeclared;
* ``replay``: the transmitter replays its own last two hours while the tank drains 1 t/h;
* ``late``: an undeclared 20 % draw-off, declared an hour after it ended.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

WEEK = 7 * 86400.0
CASES = ("normal", "siphon", "drawoff", "skim", "cover", "frozen", "replay", "late")


@dataclass(frozen=True)
class TankSpec:
    capacity: float = 50.0  # t
    beta: float = 1e-3  # volumetric expansion, 1/K
    t_ref: float = 15.0
    mean_temp: float = 20.0
    swing_k: float = 5.0  # ± K over a day -> ± beta * swing_k of level
    noise: float = 0.02  # level transmitter noise, % of capacity (1 sigma)
    temp_noise: float = 0.05  # K
    resolution: float = 0.001  # the transmitter's % resolution
    period: float = 10.0  # seconds between readings
    cycle: float = 12.0  # hours between a loading and the next
    siphon: float = 0.001  # fraction of capacity per hour


@dataclass
class Scenario:
    case: str
    t: np.ndarray  # reading times (s from 0)
    level: np.ndarray  # transmitter reading, %
    temp: np.ndarray  # temperature reading, K
    mass: np.ndarray  # true inventory, t
    declarations: list[tuple[float, float, float, float]] = field(default_factory=list)  # made_at, start, end, t
    event_start: float | None = None  # seconds
    undeclared: np.ndarray | None = None  # cumulative undeclared loss (t) at each reading


def simulate(case: str, hours: float, spec: TankSpec = TankSpec(), seed: int = 0, event_at: float = 30.0,
             phase: float = 0.0) -> Scenario:
    if case not in CASES:
        raise ValueError(f"unknown case {case!r} (one of {', '.join(CASES)})")
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, hours * 3600.0, spec.period)
    n = len(t)
    rate = np.zeros(n)  # declared-process outflow, t/s (negative: inflow)
    undeclared_rate = np.zeros(n)
    decl: list[tuple[float, float, float, float]] = []
    cap = spec.capacity
    ev = event_at * 3600.0 if case != "normal" else None

    def pump(start: float, dur: float, qty: float, declared: float | None, made_at: float | None = None,
             undeclared: bool = False):
        sel = (t >= start) & (t < start + dur)
        target = undeclared_rate if undeclared else rate
        target[sel] += qty / dur
        if declared is not None:
            decl.append((start if made_at is None else made_at, start, start + dur, declared))

    k = 0
    while (k + 1) * spec.cycle * 3600.0 < hours * 3600.0:
        s = (k + 0.5) * spec.cycle * 3600.0
        moved = 0.2 * cap
        near = ev is not None and abs(s - ev) < spec.cycle * 1800.0
        if case == "skim" and near:
            pump(s, 1800.0, moved * 1.1, moved)
        elif case == "cover" and near:
            pump(s, 1800.0, moved * 0.5, moved)
        else:
            pump(s, 1800.0, moved, moved)
        pump(s + 4 * 3600.0, 1800.0, -moved, -moved)  # the refill, four hours later
        k += 1
    if case in ("skim", "cover"):  # the event is the loading nearest event_at
        ev = min((d[1] for d in decl if d[3] > 0), key=lambda s: abs(s - ev))
    if case == "siphon":
        undeclared_rate[t >= ev] += spec.siphon * cap / 3600.0
    elif case in ("drawoff", "late"):
        pump(ev, 100.0, 0.2 * cap, None, undeclared=True)
        if case == "late":
            decl.append((ev + 100.0 + 3600.0, ev, ev + 100.0, 0.2 * cap))
    elif case in ("frozen", "replay"):
        undeclared_rate[t >= ev] += 1.0 / 3600.0
    mass = 0.6 * cap - np.cumsum((rate + undeclared_rate) * spec.period)
    lost = np.cumsum(undeclared_rate * spec.period)
    if case == "late":  # declared after the fact: not a loss once declared
        lost = np.where(t >= ev + 3700.0, 0.0, lost)
    temp_true = spec.mean_temp + spec.swing_k * np.sin(2 * math.pi * t / 86400.0 + phase)
    level = mass / cap * 100.0 * (1 + spec.beta * (temp_true - spec.t_ref)) + rng.normal(0, spec.noise, n)
    level = np.round(level / spec.resolution) * spec.resolution
    temp = np.round(temp_true + rng.normal(0, spec.temp_noise, n), 2)
    if case == "frozen":
        level = np.where(t >= ev, level[np.searchsorted(t, ev)], level)
    elif case == "replay":
        i0 = int(np.searchsorted(t, ev))
        span = int(2 * 3600.0 / spec.period)
        rec = level[i0 - span:i0].copy()
        tail = n - i0
        level[i0:] = np.resize(rec, tail)
    return Scenario(case, t, level, temp, mass, sorted(decl), ev, lost)


def detector_sets(spec: TankSpec) -> dict[str, list[tuple[str, dict, bool]]]:
    """Set name -> [(detector type, params, watches the temperature too)]."""
    cap = spec.capacity
    return {
        "old": [("unexplained_loss", {"capacity": cap, "min_loss": 0.5, "window": 86400.0, "snapshots": 288}, False),
                ("flatline", {"window": 600.0}, False)],
        "new": [("unexplained_loss", {"capacity": cap, "min_loss": 0.5, "window": 3600.0}, False),
                ("inventory_balance", {"capacity": cap, "accuracy": 0.01, "bucket": 300.0,
                                       "temperature": {"TK-S": "TT-S"}, "expansion": {"TK-S": spec.beta},
                                       "reference_temperature": spec.t_ref}, True),
                ("inventory_integrity", {"frozen_after": 900.0, "silent_after": 600.0}, False)],
    }
