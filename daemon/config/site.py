"""The site's sections of the config: the site and its areas, and the detectors that watch its
sensors (the sensors themselves are in :mod:`plantwatch.daemon.config.sensors`)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from plantwatch.detectors import REGISTRY

from plantwatch.daemon.config.checks import did_you_mean
from plantwatch.daemon.config.sensors import ID, Model, Selector

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")


class Area(Model):
    #: area id, referred to by sensors and selectors
    id: ID
    name: str = ""
    #: x0, y0, x1, y1 in site coordinates (metres); robot readings are placed in areas by these
    bounds: tuple[float, float, float, float] | None = None
    #: the edge collector that publishes this area's sensors (unless a sensor names its own);
    #: readings of a sensor from any other collector are rejected as wrong_collector
    collector: ID | None = None
    #: the process unit (reactor, compressor, tank ...) this area's sensors belong to, unless a
    #: sensor names its own; alarms are grouped into one incident only within one area and process
    #: unit, or between declared neighbours (docs/alarms.md, "Incidents")
    process_unit: ID | None = None

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, v):
        if v is not None and not (v[0] < v[2] and v[1] < v[3]):
            raise ValueError("bounds must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1")
        return v


class Site(Model):
    #: site id: the second segment of every MQTT topic
    id: ID
    name: str = ""
    #: site map size in site coordinates (metres), for dashboards and the robot grid
    width: float = Field(200.0, gt=0)
    #: site map height, metres
    height: float = Field(120.0, gt=0)
    areas: list[Area] = Field(default_factory=list)


class DetectorConfig(Model):
    #: detector id: names its alarms, events and saved state
    id: ID
    #: a registered detector type (docs/detectors.md)
    type: str
    #: which sensors it watches (every given criterion must match)
    select: Selector
    #: the type's parameters, validated against its model
    params: dict[str, Any] = Field(default_factory=dict)
    #: alarm severity per condition (defaults come from the detector type)
    severity: dict[str, Severity] = Field(default_factory=dict)
    #: false keeps the entry but runs nothing
    enabled: bool = True
    #: false: record events only, raise no alarm (an input of a composition, say)
    alarm: bool = True

    @field_validator("type")
    @classmethod
    def _known(cls, v):
        if v not in REGISTRY:
            raise ValueError(f"unknown detector type {v!r}{did_you_mean(v, REGISTRY)}; known: {', '.join(sorted(REGISTRY))}")
        return v

    @model_validator(mode="after")
    def _params(self):
        cls = REGISTRY[self.type]  # params are validated by load_config, which knows their lines
        for cond in self.severity:
            if cond not in cls.CONDITIONS[1:]:
                raise ValueError(f"severity: {self.type!r} has no condition {cond!r} "
                                 f"(its conditions: {', '.join(cls.CONDITIONS[1:])})")
        return self

    def validated_params(self):
        return REGISTRY[self.type].Params.model_validate(self.params)

    def severity_of(self, condition: str) -> str:
        return self.severity.get(condition) or REGISTRY[self.type].SEVERITY.get(condition, "medium")
