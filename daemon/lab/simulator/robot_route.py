"""The simulated inspection robot's world: its route through the site, which area a point is in,
which sensors are a robot's channels, and what its microphone hears (pure computation, numpy)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from plantwatch.daemon.lab.simulator.scenario import Incident, Robot

if TYPE_CHECKING:  # pragma: no cover
    from plantwatch.daemon.config.model import Config

ACOUSTIC_BACKGROUND_DB = 55.0


class Route:
    """A closed loop through waypoints, travelled at constant speed."""

    def __init__(self, robot: Robot):
        pts = np.asarray(list(robot.route) + [robot.route[0]], dtype=float)
        seg = np.hypot(*np.diff(pts, axis=0).T)
        self.pts = pts
        self.cum = np.r_[0.0, np.cumsum(seg)]
        self.length = float(self.cum[-1])
        self.speed = robot.speed
        self.offset = robot.start_offset

    def position(self, t_rel: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        s = np.mod(self.offset + self.speed * np.asarray(t_rel, dtype=float), self.length)
        i = np.clip(np.searchsorted(self.cum, s, side="right") - 1, 0, len(self.cum) - 2)
        f = (s - self.cum[i]) / np.maximum(self.cum[i + 1] - self.cum[i], 1e-12)
        p0, p1 = self.pts[i], self.pts[i + 1]
        return p0[..., 0] + f * (p1[..., 0] - p0[..., 0]), p0[..., 1] + f * (p1[..., 1] - p0[..., 1])


def default_route(config: "Config") -> list[tuple[float, float]]:
    """A loop through the centres of the site's areas (for robots the scenario does not route)."""
    pts = []
    for a in config.site.areas:
        if a.bounds is not None:
            x0, y0, x1, y1 = a.bounds
            pts.append(((x0 + x1) / 2, (y0 + y1) / 2))
    if len(pts) < 2:
        w, h = config.site.width, config.site.height
        pts = [(0.2 * w, 0.2 * h), (0.8 * w, 0.2 * h), (0.8 * w, 0.8 * h), (0.2 * w, 0.8 * h)]
    cx = sum(p[0] for p in pts) / len(pts)
    cy = sum(p[1] for p in pts) / len(pts)
    return sorted(pts, key=lambda p: math.atan2(p[1] - cy, p[0] - cx))


def area_of(config: "Config", x: float, y: float) -> str | None:
    for a in config.site.areas:
        if a.bounds is not None:
            x0, y0, x1, y1 = a.bounds
            if x0 <= x <= x1 and y0 <= y <= y1:
                return a.id
    return None


def robot_channels(config: "Config") -> dict[str, list[int]]:
    """Robot id → positions (in ``config.sensors``) of its channels; the id is the part of the
    sensor id before the first ``-`` (``ROBOT1-H2S`` → ``ROBOT1``)."""
    out: dict[str, list[int]] = {}
    for i, s in enumerate(config.sensors):
        if s.kind == "robot":
            out.setdefault(s.id.split("-", 1)[0], []).append(i)
    return out


def acoustic_level(x, y, machines, leaks: Sequence[Incident], t_rel: float) -> np.ndarray:
    """Sound level (dB) at points: background + machines + hiss of the leaks active at t_rel."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    energy = np.full(x.shape, 10 ** (ACOUSTIC_BACKGROUND_DB / 10))
    for m in machines:
        d = np.maximum(np.hypot(x - m.location[0], y - m.location[1]), 1.0)
        energy = energy + 10 ** ((m.level_db - 20 * np.log10(d)) / 10)
    for inc in leaks:
        if inc.active(t_rel):
            d = np.maximum(np.hypot(x - inc.source[0], y - inc.source[1]), 1.0)
            energy = energy + 10 ** ((inc.hiss_db - 20 * np.log10(d)) / 10)
    return 10 * np.log10(energy)
