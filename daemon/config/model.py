"""Typed, validated configuration: the site's sensor registry, detectors and services.

``load_config(path)`` returns a :class:`Config` or raises :class:`ConfigError` whose message lists
every problem as ``file:line:col: path: what is wrong``. Unknown keys are errors everywhere (a
typo in a limit must not silently disable it). The sections are models of their own modules
(``site``, ``sensors``, ``services``, ``alarm_sections``, ``sparkplug``, ``inventory``, ``tls``);
their names stay importable from here.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, model_validator

from plantwatch.connectors.storable import text_problems_in
from plantwatch.detectors import SensorInfo
from plantwatch.detectors.compose import CompositionConfig

from plantwatch.daemon.config.alarm_sections import (AlarmRef, AlarmsConfig, ApiConfig, ApiToken, FloodConfig, IncidentConfig,
                                                     NotifyConfig, Position, SuppressRule, Webhook)
from plantwatch.daemon.config.checks import range_problems, reference_problems, valid_sensors
from plantwatch.daemon.config.inventory import InventoryConfig, inventory_problems
from plantwatch.daemon.config.record import RecordConfig
from plantwatch.daemon.config.loader import ConfigSyntaxError, Located, load_yaml, load_yaml_file
from plantwatch.daemon.config.problems import (ConfigError, fmt_path, line_col, located_problem, param_problems,
                                               validation_problems)
from plantwatch.daemon.config.sensors import ID, Model, Selector, Sensor
from plantwatch.daemon.config.services import (ClusterConfig, DatabaseConfig, IngestConfig, MetricsConfig, MqttConfig,
                                               StateConfig)
from plantwatch.daemon.config.site import SEVERITIES, Area, DetectorConfig, Severity, Site
from plantwatch.daemon.config.sparkplug import SparkplugConfig, SparkplugMetric, sparkplug_problems
from plantwatch.daemon.config.tls import BasicAuthConfig, ClientTlsConfig, DatabaseTlsConfig, ServerTlsConfig

__all__ = ["SEVERITIES", "AlarmRef", "AlarmsConfig", "ApiConfig", "ApiToken", "Area", "BasicAuthConfig",
           "ClientTlsConfig", "ClusterConfig", "Config", "ConfigError", "DatabaseConfig", "DatabaseTlsConfig",
           "DetectorConfig", "FloodConfig", "ID", "IncidentConfig", "IngestConfig", "MetricsConfig", "Model",
           "MqttConfig", "NotifyConfig", "Position", "Selector", "Sensor", "ServerTlsConfig", "Severity", "Site",
           "SparkplugConfig", "SparkplugMetric", "StateConfig", "SuppressRule", "Webhook", "config_hash",
           "load_config", "load_config_text", "parse_config"]


class Config(Model):
    #: config format version
    version: Literal[1] = 1
    #: the site, its map and areas
    site: Site
    #: the broker; omitted: an embedded broker (demo and trials only)
    mqtt: MqttConfig | None = None
    #: the database; omitted: an embedded PostgreSQL in state.data_dir
    database: DatabaseConfig | None = None
    #: batching and input limits
    ingest: IngestConfig = IngestConfig()
    #: the Prometheus endpoint
    metrics: MetricsConfig = MetricsConfig()
    #: detector state snapshots and the embedded services' folder
    state: StateConfig = StateConfig()
    #: several daemons sharing the site; omitted: one instance takes all collectors
    cluster: ClusterConfig | None = None
    #: the sensor registry
    sensors: list[Sensor]
    #: which detectors watch which sensors, with which parameters
    detectors: list[DetectorConfig] = Field(default_factory=list)
    #: alarms that need several detectors or neighbouring sensors to agree (k of n in a window)
    compositions: list[CompositionConfig] = Field(default_factory=list)
    #: alarm management: shelving, suppression, operator positions, floods, incidents
    alarms: AlarmsConfig = AlarmsConfig()
    #: the operator API and console; omitted: not served
    api: ApiConfig | None = None
    #: webhooks for alarm changes
    notify: NotifyConfig = NotifyConfig()
    #: Sparkplug B ingest from edge nodes; omitted: none
    sparkplug: SparkplugConfig | None = None
    #: tanks whose inventory is reconciled against declared transfers (docs/security.md)
    inventory: InventoryConfig = InventoryConfig()
    #: readings sealed in time slices in the audit chain (docs/audit.md)
    record: RecordConfig = RecordConfig()

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo):
        problems: list[str] = []
        if not (info.context or {}).get("cross_checked"):  # parse_config runs these on the YAML data
            data, sensors = self.model_dump(), list(self.sensors)
            problems += [f"{fmt_path(p)}: {m}"
                         for p, m in reference_problems(data, sensors) + range_problems(data, sensors)]
        problems += sparkplug_problems(self.sparkplug, detectors=self.detectors,
                                       sensors={s.id: s for s in self.sensors})  # on the validated model only
        problems += inventory_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # --- derived views ------------------------------------------------------------------------
    def sensor_infos(self) -> list[SensorInfo]:
        return [SensorInfo(id=s.id, kind=s.kind, unit=s.unit, range_min=s.range[0], range_max=s.range[1],
                           area=s.area, x=s.location[0] if s.location else math.nan,
                           y=s.location[1] if s.location else math.nan, neighbours=tuple(s.neighbours),
                           collector=self.collector_of(s) or "")
                for s in self.sensors]

    def process_unit_of(self, s: Sensor) -> str | None:
        """The process unit of sensor ``s`` (its own, else its area's; None: not declared)."""
        if s.process_unit is not None:
            return s.process_unit
        return next((a.process_unit for a in self.site.areas if a.id == s.area), None)

    def collector_of(self, s: Sensor) -> str:
        """The collector that publishes sensor ``s`` (its own, else its area's)."""
        if s.collector is not None:
            return s.collector
        return next(a.collector for a in self.site.areas if a.id == s.area)

    def watched(self, d: DetectorConfig) -> list[int]:
        """Positions (in ``sensors``) of the sensors a detector watches."""
        return [i for i, s in enumerate(self.sensors) if d.select.matches(s)]


def _problems(err: ValidationError, located: Located, root: type[BaseModel] | None = None) -> list[str]:
    """:func:`~plantwatch.daemon.config.problems.validation_problems` against ``root`` (default :class:`Config`)."""
    return validation_problems(err, located, root or Config)


def parse_config(located: Located, *, check_files: bool = True) -> Config:
    """Every stage runs, whatever the others found: the schema, the detectors' parameters,
    references between ids and alarm levels against measuring ranges; all problems come
    together, in file order."""
    # text that reaches the database (names, units, descriptions, detector parameters as jsonb)
    # must be storable: no NUL (YAML's "\0" escape), no lone surrogate ("\ud800")
    problems = [located_problem(located, path, f"text {why} (it could not be stored)")
                for path, why in text_problems_in(located.data)]
    problems += param_problems(located)
    cfg = None
    try:
        cfg = Config.model_validate(located.data, context={"cross_checked": True, "check_files": check_files})
    except ValidationError as err:
        problems = validation_problems(err, located, Config) + problems
    sensors = list(cfg.sensors) if cfg is not None else valid_sensors(located.data)
    cross = reference_problems(located.data, sensors) + range_problems(located.data, sensors)
    problems += [located_problem(located, p, m) for p, m in cross]
    if problems or cfg is None:
        raise ConfigError(located.source, sorted(dict.fromkeys(problems), key=lambda p: line_col(located, p)))
    return cfg


def load_config(path: str | Path, *, check_files: bool = True) -> Config:
    """``check_files=False``: certificate and password files named in the config are not looked
    at (a site's config checked on another machine than the one it runs on)."""
    try:
        return parse_config(load_yaml_file(path), check_files=check_files)
    except ConfigSyntaxError as e:
        raise ConfigError(str(path), [str(e)]) from None


def load_config_text(text: str, source: str = "<string>", *, check_files: bool = True) -> Config:
    try:
        return parse_config(load_yaml(text, source), check_files=check_files)
    except ConfigSyntaxError as e:
        raise ConfigError(source, [str(e)]) from None


def config_hash(path_or_text: str | Path | bytes) -> str:
    data = Path(path_or_text).read_bytes() if isinstance(path_or_text, Path) else (
        path_or_text if isinstance(path_or_text, bytes) else path_or_text.encode())
    return hashlib.sha256(data).hexdigest()
