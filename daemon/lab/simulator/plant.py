"""Plant model: realistic 1 Hz signals for every sensor of a site config (pure computation, numpy).

The model knows nothing about MQTT or wall clocks: :meth:`Plant.step` returns the readings of
the next simulated second. Everything random comes from a seeded generator, and every step draws
the same numbers whatever the incidents are, so a run with incidents and the same run without
them differ only by the incidents.

Signals by sensor kind:

* **gas**: a background near zero (per species), sensor noise, quantised to the instrument's
  resolution and clamped at the bottom of the range, plus small wind-driven puffs shared by the
  detectors of one area; leaks add a concentration that falls with distance from the source and
  arrives later further away (:func:`leak_concentration`).
* **pressure** / **flow**: set-point + a slow control-loop oscillation + correlated process
  noise (AR(1)) + measurement noise.
* **level**: slow changes from declared operations (fills, draw-offs) + noise.
* **temperature**: set-point + a daily cycle (amplitude per sensor) + noise.
* **robot** channels: the robot moves along a fixed route; its gas cells see the leaks around
  its position, its microphone hears machines and leak hiss, its thermometer the ambient air.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from plantwatch.daemon.lab.simulator.robot_route import Route, acoustic_level, area_of, default_route, robot_channels
from plantwatch.daemon.lab.simulator.scenario import Incident, Robot, Scenario, check_against

if TYPE_CHECKING:  # pragma: no cover
    from plantwatch.daemon.config.model import Config

#: gas species → background (units), noise sd, wind-puff gain, resolution
GAS_PROFILES: dict[str, tuple[float, float, float, float]] = {
    "h2s": (0.1, 0.05, 0.3, 0.1),
    "nh3": (1.0, 0.3, 1.5, 0.1),
    "cl2": (0.0, 0.008, 0.02, 0.01),
    "ch4": (0.0, 0.2, 0.4, 0.1),
    "co": (0.5, 0.3, 1.0, 0.1),
}
#: relative turbulence of a leak's concentration at a detector (sd of a multiplicative factor)
LEAK_TURBULENCE = 0.15
DAY = 86400.0


def daily_cycle(t: np.ndarray | float) -> np.ndarray | float:
    """-1..1, lowest at 04:00 and highest at 16:00 UTC."""
    tod = np.mod(t, DAY)
    return np.sin(2 * np.pi * (tod - 10 * 3600) / DAY)


def leak_concentration(inc: Incident, x: np.ndarray, y: np.ndarray, t_rel: np.ndarray | float) -> np.ndarray:
    """Noise-free concentration of a leak at points (x, y) at run time ``t_rel`` (s).

    Gaussian in the distance d to the source (width ``spread``); the release front reaches d
    after d / ``front_speed`` seconds and builds up with time constant ``rise``; after ``end``
    it clears (again starting d / ``front_speed`` later) with time constant ``decay``.
    """
    sx, sy = inc.source
    d = np.hypot(np.asarray(x, dtype=float) - sx, np.asarray(y, dtype=float) - sy)
    lag = d / inc.front_speed
    since = np.asarray(t_rel, dtype=float) - inc.start - lag
    rise = np.where(since > 0, -np.expm1(-np.maximum(since, 0) / inc.rise), 0.0)
    if inc.end is not None:
        after = np.asarray(t_rel, dtype=float) - inc.end - lag
        rise = rise * np.where(after > 0, np.exp(-np.maximum(after, 0) / inc.decay), 1.0)
    return inc.magnitude * np.exp(-(d * d) / (2 * inc.spread ** 2)) * rise


def pressure_factor(inc: Incident, t_rel: float) -> float:
    """Multiplier on a vessel's pressure during and after a loss of containment."""
    if t_rel < inc.start:
        return 1.0
    m = inc.magnitude
    if inc.end is None or t_rel < inc.end:
        return 1.0 - m * -math.expm1(-(t_rel - inc.start) / inc.tau)
    lost = m * -math.expm1(-(inc.end - inc.start) / inc.tau)
    return 1.0 - lost * math.exp(-(t_rel - inc.end) / inc.recovery)


def drift_offset(inc: Incident, t_rel: float) -> float:
    if not inc.active(t_rel):
        return 0.0
    return inc.magnitude * (t_rel - inc.start)


def _quantise(v: np.ndarray, res: np.ndarray) -> np.ndarray:
    return np.round(np.round(v / res) * res, 6)


@dataclass(slots=True)
class Frame:
    """The readings of one simulated second.

    ``idx`` are positions in ``config.sensors``; fixed instruments and robot channels are kept
    apart because they travel on different topics (``readings`` and ``robot``).
    """

    t: float  # start of the second (Unix seconds)
    t_rel: float  # seconds since the start of the run
    idx: np.ndarray  # fixed sensors that reported
    time: np.ndarray
    value: np.ndarray
    robot_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    robot_time: np.ndarray = field(default_factory=lambda: np.zeros(0))
    robot_value: np.ndarray = field(default_factory=lambda: np.zeros(0))
    robot_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    robot_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    robot_area: list[str | None] = field(default_factory=list)


class Plant:
    """The simulated plant. ``step()`` advances one period ``dt`` and returns its readings."""

    def __init__(self, config: "Config", scenario: Scenario, *, t0: float = 0.0, seed: int | None = None,
                 dt: float = 1.0):
        problems = check_against(scenario, {s.id for s in config.sensors}, {a.id for a in config.site.areas})
        if problems:
            raise ValueError("scenario does not fit the site config:\n  " + "\n  ".join(problems))
        self.config = config
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        self.t0 = float(t0)
        self.dt = float(dt)
        self.k = 0
        static = np.random.default_rng([self.seed, 1])
        self._rng = np.random.default_rng([self.seed, 2])

        sensors = config.sensors
        self.fixed = np.array([i for i, s in enumerate(sensors) if s.kind != "robot"], dtype=np.int64)
        fs = [sensors[i] for i in self.fixed]
        n = self.n = len(fs)
        self.fixed_pos = {s.id: j for j, s in enumerate(fs)}
        limits = sensor_limits(config)
        self.kind = np.array([s.kind for s in fs])
        self.quantity = [s.quantity.lower() for s in fs]
        self.lo = np.array([s.range[0] for s in fs], dtype=float)
        self.hi = np.array([s.range[1] for s in fs], dtype=float)
        span = self.hi - self.lo
        self.x = np.array([s.location[0] if s.location else np.nan for s in fs])
        self.y = np.array([s.location[1] if s.location else np.nan for s in fs])
        areas = [a.id for a in config.site.areas]
        self.area_ix = np.array([areas.index(s.area) for s in fs], dtype=np.int64)
        self.n_areas = len(areas)

        base = np.zeros(n)
        white = np.zeros(n)
        ar_sd = np.zeros(n)
        osc = np.zeros(n)
        res = np.ones(n)
        gain = np.zeros(n)
        daily = np.zeros(n)
        for j, s in enumerate(fs):
            lp = limits.get(s.id)
            if s.kind == "gas":
                bg, sd, g, r = GAS_PROFILES.get(s.quantity.lower(), (0.0, 0.002 * span[j], 0.005 * span[j], 0.001 * span[j]))
                base[j] = bg * static.uniform(0.5, 1.5)
                white[j], gain[j], res[j] = sd, g * static.uniform(0.5, 1.5), r
            elif s.kind == "pressure":
                mid = (lp.low + lp.high) / 2 if lp and lp.low is not None and lp.high is not None else s.range[0] + 0.4 * span[j]
                base[j] = mid
                white[j], ar_sd[j], osc[j], res[j] = 0.002 * mid, 0.0015 * mid, 0.01 * mid, 0.01
            elif s.kind == "flow":
                base[j] = s.range[0] + 0.4 * span[j]
                white[j], ar_sd[j], osc[j], res[j] = 0.004 * span[j], 0.002 * span[j], 0.005 * span[j], (0.1 if span[j] < 200 else 1.0)
            elif s.kind == "level":
                base[j] = s.range[0] + 0.5 * span[j]
                white[j], res[j] = 0.0005 * span[j], 0.01
            elif s.kind == "temperature":
                base[j] = s.range[0] + 0.5 * span[j]
                white[j], ar_sd[j], res[j] = 0.05, 0.02, 0.1
                daily[j] = 0.5
            else:
                base[j] = s.range[0] + 0.5 * span[j]
                white[j], res[j] = 0.001 * span[j], 0.001 * span[j]
            if s.id in scenario.baseline:
                base[j] = scenario.baseline[s.id]
            if s.id in scenario.daily:
                daily[j] = scenario.daily[s.id]
            if s.id in scenario.oscillation:
                osc[j] = scenario.oscillation[s.id]
        self.base, self.white, self.ar_sd, self.osc, self.res, self.gain, self.daily = base, white, ar_sd, osc, res, gain, daily
        self.is_gas = self.kind == "gas"
        self.ar_phi = 0.95
        self.osc_period = static.uniform(120.0, 480.0, n)
        self.osc_phase = static.uniform(0, 2 * np.pi, n)
        self.phase = np.round(static.uniform(0.0, 0.5, n) * self.dt, 3)  # sampling offset in the second
        self.ar = np.zeros(n)
        self.wind = np.zeros(self.n_areas)
        self.wind_phi = 0.9

        # incidents and operations, resolved to fixed-sensor positions
        self.leaks = [i for i in scenario.incidents if i.kind == "leak"]
        self._stuck: dict[str, np.ndarray] = {}
        self._ops = [(o, self.fixed_pos[o.sensor]) for o in scenario.operations if o.sensor in self.fixed_pos]

        # robots
        self.robots: list[tuple[str, Route, list[int]]] = []
        routed = {r.id: r for r in scenario.robots}
        for rid, chans in robot_channels(config).items():
            robot = routed.get(rid) or Robot(id=rid, route=default_route(config))
            self.robots.append((rid, Route(robot), chans))
        self.robot_idx = np.array([c for _, _, chans in self.robots for c in chans], dtype=np.int64)
        self.robot_phase = np.round(static.uniform(0.0, 0.5, max(len(self.robots), 1)) * self.dt, 3)
        self._robot_base = {c: scenario.baseline.get(sensors[c].id) for c in self.robot_idx}

    # ------------------------------------------------------------------------------------------
    @property
    def t(self) -> float:
        """Start of the next second to be produced."""
        return self.t0 + self.k * self.dt

    def step(self) -> Frame:
        rng = self._rng
        n = self.n
        # the same draws every step whatever the scenario: runs differ only by their incidents
        white = rng.standard_normal(n)
        innov = rng.standard_normal(n)
        wind_innov = rng.standard_normal(self.n_areas)
        turb = rng.standard_normal(n)
        rwhite = rng.standard_normal(max(len(self.robot_idx), 1))
        rturb = rng.standard_normal(max(len(self.robot_idx), 1))

        t_rel = self.k * self.dt
        t = self.t0 + t_rel
        self.k += 1
        self.ar = self.ar_phi * self.ar + self.ar_sd * innov
        self.wind = self.wind_phi * self.wind + math.sqrt(1 - self.wind_phi ** 2) * wind_innov
        puff = np.maximum(self.wind - 1.0, 0.0) ** 1.5

        base = self.base.copy()
        for op, j in self._ops:
            base[j] += _operation_offset(op, t_rel, self.base[j])
        v = (base + self.osc * np.sin(2 * np.pi * t_rel / self.osc_period + self.osc_phase) + self.ar
             + self.white * white + self.daily * daily_cycle(t))
        v = np.where(self.is_gas, v + self.gain * puff[self.area_ix], v)

        present = np.ones(n, dtype=bool)
        for inc in self.scenario.incidents:
            if inc.kind == "leak":
                mask = self.is_gas & np.array([q == inc.gas.lower() for q in self.quantity])
                if mask.any():
                    c = leak_concentration(inc, self.x[mask], self.y[mask], t_rel)
                    v[mask] += np.maximum(c * (1 + LEAK_TURBULENCE * turb[mask]), 0.0)
                continue
            js = [self.fixed_pos[s] for s in inc.sensors if s in self.fixed_pos]
            if not js:
                continue
            if inc.kind == "pressure_drop":
                v[js] *= pressure_factor(inc, t_rel)
            elif inc.kind == "drift":
                v[js] += drift_offset(inc, t_rel)

        v = _quantise(np.clip(v, self.lo, self.hi), self.res)

        for inc in self.scenario.incidents:
            js = [self.fixed_pos[s] for s in inc.sensors if s in self.fixed_pos]
            if not js or not inc.active(t_rel):
                continue
            if inc.kind == "stuck":
                if inc.id not in self._stuck:
                    self._stuck[inc.id] = (np.full(len(js), inc.magnitude) if inc.magnitude is not None
                                           else v[js].copy())
                v[js] = self._stuck[inc.id]
            elif inc.kind == "silent":
                present[js] = False

        frame = Frame(t=t, t_rel=t_rel, idx=self.fixed[present], time=np.round(t + self.phase[present], 3),
                      value=v[present])
        if len(self.robot_idx):
            self._robot_step(frame, t, t_rel, rwhite, rturb)
        return frame

    def _robot_step(self, frame: Frame, t: float, t_rel: float, rwhite, rturb) -> None:
        sensors = self.config.sensors
        idx, tm, val, xs, ys, areas = [], [], [], [], [], []
        k = 0
        for r, (rid, route, chans) in enumerate(self.robots):
            tr = t_rel + self.robot_phase[r]
            x, y = route.position(tr)
            x, y = float(np.round(x, 2)), float(np.round(y, 2))
            area = area_of(self.config, x, y)
            for c in chans:
                s = sensors[c]
                q = s.quantity.lower()
                span = s.range[1] - s.range[0]
                if q in GAS_PROFILES:
                    bg, sd, _, res = GAS_PROFILES[q]
                    value = bg + sd * rwhite[k]
                    for inc in self.leaks:
                        if inc.gas.lower() == q:
                            value += max(float(leak_concentration(inc, x, y, tr)) * (1 + LEAK_TURBULENCE * rturb[k]), 0.0)
                elif q == "temperature":
                    base = self._robot_base.get(c)
                    base = 14.0 if base is None else base
                    value = base + self.scenario.daily.get(s.id, 0.0) * float(daily_cycle(t)) + 0.2 * rwhite[k]
                    res = 0.1
                elif q == "acoustic":
                    value = float(acoustic_level(x, y, self.scenario.machines, self.leaks, tr)) + 1.0 * rwhite[k]
                    res = 0.1
                else:
                    base = self._robot_base.get(c)
                    value = (s.range[0] + 0.5 * span if base is None else base) + 0.001 * span * rwhite[k]
                    res = 0.001 * span
                value = float(np.round(np.round(min(max(value, s.range[0]), s.range[1]) / res) * res, 6))
                idx.append(c)
                tm.append(round(t + self.robot_phase[r], 3))
                val.append(value)
                xs.append(x)
                ys.append(y)
                areas.append(area)
                k += 1
        frame.robot_idx = np.array(idx, dtype=np.int64)
        frame.robot_time = np.array(tm)
        frame.robot_value = np.array(val)
        frame.robot_x = np.array(xs)
        frame.robot_y = np.array(ys)
        frame.robot_area = areas

    def run(self, seconds: int):
        """Yield ``seconds`` frames (offline use: tests, the offline demo)."""
        for _ in range(int(seconds)):
            yield self.step()


def _operation_offset(op, t_rel: float, base: float) -> float:
    if t_rel < op.start:
        return 0.0
    if op.kind == "ramp":
        stop = t_rel if op.end is None else min(t_rel, op.end)
        return op.rate * (stop - op.start)
    # setpoint: first-order move to the new value and back after end (5 s time constant)
    tau = 5.0
    if op.end is None or t_rel < op.end:
        return (op.value - base) * -math.expm1(-(t_rel - op.start) / tau)
    reached = (op.value - base) * -math.expm1(-(op.end - op.start) / tau)
    return reached * math.exp(-(t_rel - op.end) / tau)


def sensor_limits(config: "Config") -> dict:
    """Sensor id → the parameters of the first enabled ``limit`` detector watching it."""
    out = {}
    for d in config.detectors:
        if d.type != "limit" or not d.enabled:
            continue
        p = d.validated_params()
        for i in config.watched(d):
            out.setdefault(config.sensors[i].id, p)
    return out


