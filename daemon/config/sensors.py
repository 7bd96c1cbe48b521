"""The sensor registry's entries and the selectors that pick sensors: the models both the site
config (:mod:`plantwatch.daemon.config.model` and its section modules) and its cross-checks (:mod:`plantwatch.daemon.config.checks`)
build on.
"""
from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ID = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
SensorKind = Literal["gas", "pressure", "flow", "level", "temperature", "contact", "robot"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sensor(Model):
    #: sensor id (tag) as collectors send it
    id: ID
    #: robot channels report with a position; the others are fixed instruments
    kind: SensorKind
    #: what is measured: gas species ("H2S", "CH4"), "acoustic", ... (free text, used by selectors)
    quantity: str = ""
    #: engineering unit (ppm, %LEL, bar, m3, degC, dB ...)
    unit: str
    #: measuring range of the instrument: readings outside it are rejected as out_of_range
    range: tuple[float, float]
    #: area the sensor belongs to
    area: ID
    #: the edge collector that publishes this sensor; default: its area's collector
    collector: ID | None = None
    #: position on the site map; robot channels have none (the position comes with each reading)
    location: tuple[float, float] | None = None
    #: physically close sensors (plume spread, drift against neighbours, composition)
    neighbours: list[ID] = Field(default_factory=list)
    #: the process unit the sensor belongs to; default: its area's (incident grouping)
    process_unit: ID | None = None
    description: str = ""

    @field_validator("range")
    @classmethod
    def _range(cls, v):
        if not (math.isfinite(v[0]) and math.isfinite(v[1]) and v[0] < v[1]):
            raise ValueError("range must be [min, max] with finite min < max")
        return v


class Selector(Model):
    """Which sensors a detector watches: every given criterion must match (AND)."""

    #: these sensor ids
    sensors: list[ID] | None = None
    #: sensors of this kind
    kind: SensorKind | None = None
    #: sensors measuring this (case-insensitive)
    quantity: str | None = None
    #: sensors in these areas
    areas: list[ID] | None = None

    @model_validator(mode="after")
    def _not_empty(self):
        if not any(v is not None for v in (self.sensors, self.kind, self.quantity, self.areas)):
            raise ValueError("select needs at least one of: sensors, kind, quantity, areas")
        return self

    def matches(self, s: Sensor) -> bool:
        return ((self.sensors is None or s.id in self.sensors)
                and (self.kind is None or s.kind == self.kind)
                and (self.quantity is None or s.quantity.lower() == self.quantity.lower())
                and (self.areas is None or s.area in self.areas))
