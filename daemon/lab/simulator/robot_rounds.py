"""Inspection rounds over fixed places: a robot channel whose normal moves with the whole site.

A robot stops at ``places`` inspection points in turn (a round every ``round_min`` to
``round_max`` minutes, ``readings`` readings ``dt`` seconds apart at each stop). Each place has its
own offset (a warm pipe, a flange that always smells a little); on top of that the whole site
follows a daily sinusoid of ``amplitude`` (ambient temperature), plus white noise. Optional:

* ``local``: ``(place, start, end, delta)``: one place reads ``delta`` more in [start, end) s;
* ``shift``: ``(start, end, delta)``: every place reads ``delta`` more in [start, end) s.

Pure numpy, deterministic for a seed: the scenario behind the robot_baseline regression tests
(``tests/test_robot_rounds.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DAY = 86400.0


@dataclass(frozen=True)
class Rounds:
    t: np.ndarray  # reading time, s
    value: np.ndarray
    pos: np.ndarray  # (k, 2) site x, y in metres
    place: np.ndarray  # index of the place of each reading
    places: np.ndarray  # (places, 2) positions of the places
    common: np.ndarray  # the site-wide part of each reading (sinusoid + shift), for checks


def place_positions(n: int, spacing: float = 15.0, per_row: int = 5, origin=(10.0, 10.0)) -> np.ndarray:
    k = np.arange(n)
    return np.column_stack([origin[0] + spacing * (k % per_row), origin[1] + spacing * (k // per_row)])


def robot_rounds(*, places: int = 20, days: float = 3.0, round_min: float = 10.0, round_max: float = 20.0,
                 mean: float = 20.0, amplitude: float = 5.0, phase: float = 0.0, offset_sd: float = 3.0,
                 noise: float = 0.2, readings: int = 3, dt: float = 2.0, seed: int = 0,
                 spacing: float = 15.0, per_row: int = 5,
                 local: tuple[int, float, float, float] | None = None,
                 shift: tuple[float, float, float] | None = None, t0: float = 0.0) -> Rounds:
    rng = np.random.default_rng(seed)
    where = place_positions(places, spacing, per_row)
    offsets = rng.normal(0.0, offset_sd, places)
    t_end = t0 + days * DAY
    starts = [t0]
    while starts[-1] < t_end:
        starts.append(starts[-1] + 60.0 * rng.uniform(round_min, round_max))
    starts = np.asarray(starts[:-1])
    step = (starts[1:] - starts[:-1]).min() / places if len(starts) > 1 else 30.0  # stops spread over the round
    step = max(step, readings * dt)
    stop = starts[:, None] + step * np.arange(places)[None, :]  # (rounds, places)
    t = (stop[:, :, None] + dt * np.arange(readings)[None, None, :]).ravel()
    place = np.broadcast_to(np.arange(places)[None, :, None], stop.shape + (readings,)).ravel()
    common = mean + amplitude * np.sin(2 * np.pi * (t - t0) / DAY + phase)
    if shift is not None:
        common = common + np.where((t >= shift[0]) & (t < shift[1]), shift[2], 0.0)
    value = common + offsets[place] + noise * rng.standard_normal(len(t))
    if local is not None:
        p, a, b, d = local
        value = value + np.where((place == p) & (t >= a) & (t < b), d, 0.0)
    return Rounds(t=t, value=value, pos=where[place], place=place, places=where, common=common)
