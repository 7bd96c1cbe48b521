"""Scenario: the normal operations and the scripted incidents a simulator run plays.

A scenario is YAML or JSON. Times (``start``, ``end``) are seconds from the start of the run;
``end: null`` means "until the run stops". Sensor ids must exist in the site config
(:func:`check_against` says which do not).

Incident kinds and what ``magnitude`` means for each:

``leak``
    A toxic or flammable release of gas ``gas`` at ``source`` (x, y metres). ``magnitude`` is the
    concentration at the source in the gas detectors' unit (ppm, %LEL). It spreads as a Gaussian
    of width ``spread`` (m) and reaches a point at distance d after d / ``front_speed`` seconds.
``pressure_drop``
    Loss of containment on a vessel: its pressure sensors (``sensors``) fall by the fraction
    ``magnitude`` of their normal value with time constant ``tau`` (s), and recover after ``end``.
``drift``
    The sensors read ``magnitude`` units per second too high, growing from ``start``.
``stuck``
    The sensors freeze at their value at ``start`` (or at ``magnitude`` if given).
``silent``
    The sensors stop reporting.

Operations (``operations``) are normal, declared process moves that must NOT alarm: a tank fill
or draw-off (``ramp``: ``rate`` units per second) or a set-point change (``setpoint``: ``value``).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

IncidentKind = Literal["leak", "pressure_drop", "drift", "stuck", "silent"]
INCIDENT_KINDS: tuple[str, ...] = ("leak", "pressure_drop", "drift", "stuck", "silent")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Incident(_Model):
    id: str = Field(min_length=1, max_length=64)
    kind: IncidentKind
    description: str = ""
    start: float = Field(ge=0)
    end: float | None = None
    magnitude: float | None = None
    #: sensors the incident acts on (pressure_drop, drift, stuck, silent)
    sensors: list[str] = Field(default_factory=list)
    area: str | None = None
    # leak only
    gas: str | None = None
    source: tuple[float, float] | None = None
    spread: float = Field(14.0, gt=0)
    front_speed: float = Field(1.0, gt=0)
    rise: float = Field(4.0, gt=0, description="seconds for the concentration to build up at a point")
    decay: float = Field(8.0, gt=0, description="seconds for it to clear after the release stops")
    hiss_db: float = Field(95.0, description="leak noise at 1 m from the source (dB), for acoustic channels")
    # pressure_drop only
    tau: float = Field(3.0, gt=0, description="time constant of the pressure decline (s)")
    recovery: float = Field(20.0, gt=0, description="time constant of the recovery after end (s)")

    @model_validator(mode="after")
    def _check(self):
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"incident {self.id}: end ({self.end}) must be after start ({self.start})")
        if self.kind == "leak":
            if self.gas is None or self.source is None or self.magnitude is None:
                raise ValueError(f"incident {self.id}: a leak needs gas, source and magnitude")
            if self.magnitude <= 0:
                raise ValueError(f"incident {self.id}: leak magnitude must be > 0")
        else:
            if not self.sensors:
                raise ValueError(f"incident {self.id}: a {self.kind} incident needs sensors")
        if self.kind == "pressure_drop" and not (self.magnitude is not None and 0 < self.magnitude < 1):
            raise ValueError(f"incident {self.id}: pressure_drop magnitude is the fraction lost, 0 < m < 1")
        if self.kind == "drift" and self.magnitude is None:
            raise ValueError(f"incident {self.id}: drift needs magnitude (units per second)")
        return self

    def active(self, t_rel: float) -> bool:
        return t_rel >= self.start and (self.end is None or t_rel < self.end)


class Operation(_Model):
    kind: Literal["ramp", "setpoint"]
    sensor: str
    start: float = Field(ge=0)
    end: float | None = None
    rate: float | None = None  # ramp: units per second
    value: float | None = None  # setpoint: new normal value
    description: str = ""

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "ramp" and self.rate is None:
            raise ValueError("a ramp operation needs rate")
        if self.kind == "setpoint" and self.value is None:
            raise ValueError("a setpoint operation needs value")
        if self.end is not None and self.end <= self.start:
            raise ValueError("operation end must be after start")
        return self


class Robot(_Model):
    id: str  # robot id: its channels are the robot sensors whose id starts with "<id>-"
    route: list[tuple[float, float]] = Field(min_length=2)
    speed: float = Field(1.5, gt=0, le=10, description="m/s along the route")
    start_offset: float = Field(0.0, ge=0, description="metres along the route at the start of the run")


class Machine(_Model):
    """A noise source heard by acoustic channels (compressor, pump)."""

    name: str
    location: tuple[float, float]
    level_db: float = Field(90.0, description="dB at 1 m")


class Scenario(_Model):
    version: Literal[1] = 1
    name: str = ""
    seed: int = 0
    #: normal value of a sensor (overrides the simulator's default for its kind)
    baseline: dict[str, float] = Field(default_factory=dict)
    #: amplitude (units) of the daily cycle of a temperature sensor
    daily: dict[str, float] = Field(default_factory=dict)
    #: per-sensor amplitude of the slow process oscillation (pressures, flows), units
    oscillation: dict[str, float] = Field(default_factory=dict)
    incidents: list[Incident] = Field(default_factory=list)
    operations: list[Operation] = Field(default_factory=list)
    robots: list[Robot] = Field(default_factory=list)
    machines: list[Machine] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self):
        ids = [i.id for i in self.incidents]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate incident id")
        return self

    def without_incidents(self) -> "Scenario":
        """The same plant, operations and robots with no incident: the false-alarm baseline."""
        return self.model_copy(update={"incidents": []})

    def sensors_named(self) -> set[str]:
        out = set(self.baseline) | set(self.daily) | set(self.oscillation)
        for i in self.incidents:
            out.update(i.sensors)
        out.update(o.sensor for o in self.operations)
        return out


def check_against(scenario: Scenario, sensor_ids: set[str], area_ids: set[str] | None = None) -> list[str]:
    """Problems with a scenario for a given site: unknown sensors or areas."""
    problems = [f"scenario names unknown sensor {s!r}" for s in sorted(scenario.sensors_named() - sensor_ids)]
    if area_ids is not None:
        for i in scenario.incidents:
            if i.area is not None and i.area not in area_ids:
                problems.append(f"incident {i.id}: unknown area {i.area!r}")
    return problems


def parse_scenario(text: str) -> Scenario:
    """A scenario from YAML or JSON text (JSON is YAML)."""
    data = yaml.safe_load(text) or {}
    return Scenario.model_validate(data)


def load_scenario(path: str | Path) -> Scenario:
    return parse_scenario(Path(path).read_text(encoding="utf-8"))


def default_scenario() -> Scenario:
    """The demo scenario shipped with plantwatch (for the demo site config)."""
    text = resources.files("plantwatch.daemon.lab.simulator").joinpath("scenarios/demo.yaml").read_text(encoding="utf-8")
    return parse_scenario(text)
