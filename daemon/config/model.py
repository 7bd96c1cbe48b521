"""Typed, validated configuration: the site's sensor registry, detectors and services.

``load_config(path)`` returns a :class:`Config` or raises :class:`ConfigError` whose message lists
every problem as ``file:line:col: path: what is wrong``. Unknown keys are errors everywhere (a
typo in a limit must not silently disable it).
"""
from __future__ import annotations

import hashlib
import math
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from plantwatch.connectors.storable import text_problems_in
from plantwatch.detectors import REGISTRY, SensorInfo
from plantwatch.detectors.compose import CompositionConfig

from plantwatch.daemon.config.checks import did_you_mean, entry_label, range_problems, reference_problems, valid_sensors
from plantwatch.daemon.config.inventory import InventoryConfig, inventory_problems
from plantwatch.daemon.config.record import RecordConfig
from plantwatch.daemon.config.loader import ConfigSyntaxError, Located, load_yaml, load_yaml_file
from plantwatch.daemon.config.sensors import ID, Model, Selector, Sensor
from plantwatch.daemon.config.tls import (BasicAuthConfig, ClientTlsConfig, DatabaseTlsConfig, ServerTlsConfig, dsn_with_tls,
                         exposed_needs)

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


class MqttConfig(Model):
    #: broker host
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    #: broker password (or PLANTWATCH_MQTT_PASSWORD in the environment)
    password: str | None = None
    #: first segment of every topic
    topic_prefix: str = Field("plantwatch", pattern=r"^[^#+\s]+$")
    #: fixed client id: the broker keeps this persistent session (and its queued messages)
    client_id: str = "plantwatch-daemon"
    #: seconds between MQTT keep-alive pings
    keepalive: int = Field(30, ge=5, le=3600)
    #: PUBLISH packets the daemon holds unacknowledged (the broker's own inflight cap also applies)
    receive_window: int = Field(1000, ge=1, le=65535)
    #: TLS to the broker (docs/tls.md); omitted: plain TCP
    tls: ClientTlsConfig | None = None


class DatabaseConfig(Model):
    #: PostgreSQL connection string (the password may come from PGPASSWORD)
    dsn: str
    #: connections used for writing readings (2 measured best on a 2-core box)
    writers: int = Field(2, ge=1, le=16)
    #: TLS to PostgreSQL (sslmode, sslrootcert, ...: added to the DSN, docs/tls.md); omitted: what the DSN says
    tls: DatabaseTlsConfig | None = None

    @property
    def url(self) -> str:
        """The DSN to connect with: ``dsn`` plus the parameters of ``tls``."""
        return dsn_with_tls(self.dsn, self.tls)


class IngestConfig(Model):
    #: write when this many readings are pending ...
    batch_readings: int = Field(20_000, ge=1, le=1_000_000)
    #: ... or when the oldest pending reading has waited this long (seconds)
    flush_interval: float = Field(0.2, gt=0, le=10)
    #: larger MQTT payloads are dead-lettered as oversized
    max_payload_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    #: batches with more readings are dead-lettered as oversized
    max_readings_per_message: int = Field(10_000, ge=1, le=1_000_000)
    #: readings stamped further in the future than this (seconds) are rejected
    max_future_skew: float = Field(300.0, ge=0)
    #: readings older than this (seconds) are rejected
    max_age: float = Field(7 * 86400.0, gt=0)
    #: a received message waiting this long (seconds) for its commit is a stall: /healthz answers
    #: 503 and a warning is logged, repeated every stall_after seconds while it lasts
    stall_after: float = Field(30.0, gt=0, le=3600)
    #: a collector's batch sequence number that jumps forward by more than this is a restart of
    #: its counter (or a forged number), logged and counted as such, not that many lost batches
    max_seq_jump: int = Field(1_000_000, ge=1, le=2**63 - 1)
    #: the longest a graceful stop (SIGTERM) may take: stop reading, commit and acknowledge what
    #: was received, save detector state, publish the final alarm list (seconds). Past it the
    #: daemon logs what it leaves unacknowledged (the broker delivers it again) and exits 3
    shutdown_grace: float = Field(30.0, gt=0, le=3600)


class MetricsConfig(Model):
    #: address of the Prometheus endpoint (another address only with basic_auth and tls)
    host: str = "127.0.0.1"
    #: 0 disables the HTTP endpoint
    port: int = Field(9108, ge=0, le=65535)
    #: serve /metrics over HTTPS
    tls: ServerTlsConfig | None = None
    #: require HTTP basic authentication (Prometheus' basic_auth)
    basic_auth: BasicAuthConfig | None = None

    @model_validator(mode="after")
    def _exposed(self):
        return exposed_needs(self, "/metrics", ("tls", "basic_auth"))


class StateConfig(Model):
    #: seconds between detector state snapshots (also written at shutdown)
    snapshot_interval: float = Field(60.0, ge=1)
    #: folder for the embedded broker/database when none is configured
    data_dir: str = ".plantwatch"


# --- alarm management, operator API, notifications (see docs/alarms.md) ----------------------------
class AlarmRef(Model):
    """Which alarms a rule is about: every given criterion must match (AND)."""

    detector: ID | None = None
    sensors: list[ID] | None = None

    @model_validator(mode="after")
    def _not_empty(self):
        if self.detector is None and self.sensors is None:
            raise ValueError("give detector, sensors or both")
        return self

    def matches(self, detector_id: str, sensor_tag: str) -> bool:
        return ((self.detector is None or self.detector == detector_id)
                and (self.sensors is None or sensor_tag in self.sensors))

    def label(self) -> str:
        return f"{self.detector or '*'}/{','.join(self.sensors) if self.sensors else '*'}"


class SuppressRule(Model):
    """Suppression by design: ``alarms`` are suppressed while any ``upstream`` alarm is active
    (e.g. a downstream low-flow alarm while the upstream pump's trip alarm is active)."""

    alarms: AlarmRef
    upstream: AlarmRef


class Position(Model):
    """An operator position (console) and the areas it watches (for the EEMUA 191 rates)."""

    id: ID
    areas: list[ID]


class FloodConfig(Model):
    #: sliding window (seconds) in which alarms are counted per operator position
    window: float = Field(600.0, gt=0)
    #: a flood starts when more than this many alarms were raised in the window ...
    start: int = Field(10, ge=1)
    #: ... and ends when fewer than this many were
    end: int = Field(5, ge=1)


class IncidentConfig(Model):
    #: an alarm joins an open incident whose last alarm was raised at most this long ago (s)
    window: float = Field(600.0, gt=0)
    #: an incident ends once all its alarms have been inactive this long (s)
    close_after: float = Field(300.0, ge=0)
    #: robot readings within this distance (m) of an involved sensor are shown in reports
    robot_radius: float = Field(30.0, gt=0)


class AlarmsConfig(Model):
    #: shelving is always for a time: the default and the longest allowed (seconds)
    default_shelve: float = Field(3600.0, gt=0)
    max_shelve: float = Field(8 * 3600.0, gt=0)
    suppress_when: list[SuppressRule] = Field(default_factory=list)
    #: areas not listed belong to the position "site"
    positions: list[Position] = Field(default_factory=list)
    flood: FloodConfig = FloodConfig()
    incidents: IncidentConfig = IncidentConfig()
    #: the alarm journal: alarm changes published but not yet committed to the database, kept on
    #: local disk until it has them (docs/outages.md); default ``{state.data_dir}/alarm-journal``
    journal_dir: str | None = None
    #: at most this many journal entries (one per unit of alarm changes) wait for the database;
    #: beyond it changes are still published, and a system alarm says they are not journaled
    journal_limit: int = Field(100_000, ge=1)
    #: seconds a decided alarm change waits for the database's commit, so that its message carries
    #: the audit sequence and alarm id; after that it goes out without the sequence (load, an
    #: outage or a stall never hold an alarm back longer: docs/outages.md)
    publish_wait: float = Field(0.2, ge=0, le=5)


class ApiToken(Model):
    name: ID
    role: Literal["operator", "engineer", "inspector", "security"]
    #: hex SHA-256 of the token (``plantwatch token new`` prints both)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ApiConfig(Model):
    """The operator API and console, served by the daemon (absent: not served)."""

    host: str = "127.0.0.1"
    port: int = Field(8110, ge=0, le=65535)
    tokens: list[ApiToken] = Field(default_factory=list)
    #: more tokens, one per line: ``name role sha256`` (``#`` comments); read at start
    token_file: str | None = None
    #: seconds a request may wait for the database before it is answered 503
    db_timeout: float = Field(10.0, gt=0, le=300)
    #: serve the API and console over HTTPS (docs/tls.md)
    tls: ServerTlsConfig | None = None

    @model_validator(mode="after")
    def _exposed(self):
        return exposed_needs(self, "the API", ("tls",))

    @property
    def url(self) -> str:
        """The console's address from this machine; the dashboards' default ``console_url``."""
        host = "localhost" if self.host in ("127.0.0.1", "::1", "0.0.0.0", "::") else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


class Webhook(Model):
    #: names the webhook in logs and metric labels (default: scheme and host of the URL; the
    #: URL itself is never shown, as it may carry the webhook's secret)
    name: ID | None = None
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    #: alarm changes below this severity are not sent
    min_severity: Severity = "low"
    timeout: float = Field(5.0, gt=0, le=120)
    #: attempts per notification before it is counted as failed
    attempts: int = Field(6, ge=1, le=100)


class NotifyConfig(Model):
    webhooks: list[Webhook] = Field(default_factory=list)
    #: the operator console's public base URL (as operators reach it, e.g.
    #: ``https://plantwatch.site.example:8110``): webhook messages link to the alarm's page there
    console_url: str | None = Field(None, pattern=r"^https?://[^\s]+$")
    #: notifications waiting per webhook; beyond it the oldest are dropped (and counted)
    queue: int = Field(1000, ge=1, le=1_000_000)
    #: first retry delay (s); doubles per attempt up to max_backoff
    backoff: float = Field(0.5, gt=0)
    max_backoff: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _unique_names(self):
        names = [w.name for w in self.webhooks if w.name is not None]
        if len(names) != len(set(names)):
            raise ValueError("webhook names must be unique (they label the webhook's metrics and log lines)")
        return self


class ClusterConfig(Model):
    """Several daemons sharing one site: collectors are split into ``partitions`` (hash of the
    collector id), each partition is held by exactly one instance at a time through a lease in
    the database, with its own persistent MQTT session, so each sensor's detector state lives
    in one instance. Without this section one daemon takes everything (the default)."""

    #: unique per daemon instance (lease holder name)
    instance_id: ID
    #: number of partitions (fixed for the site: all instances must agree)
    partitions: int = Field(1, ge=1, le=256)
    #: the site's collector ids: each partition's session subscribes to its collectors' topics.
    #: Collectors not listed are taken by partition 0 (whose session also subscribes to the
    #: wildcard and leaves other partitions' collectors to them).
    collectors: list[ID] = Field(default_factory=list)
    #: a lease not renewed for this long is taken over by another instance (seconds). Detection
    #: of a crashed or frozen instance takes this long, so alarms of its partitions resume on
    #: another within about `lease_seconds + renew_interval` (docs/scaling.md). An instance whose
    #: event loop or database stalls longer than this loses its partitions (they move, no data lost)
    lease_seconds: float = Field(2.0, ge=1, le=600)
    #: how often leases are renewed and free ones looked for (seconds): two small transactions
    #: per instance per renewal
    renew_interval: float = Field(0.5, gt=0, le=60)

    @model_validator(mode="after")
    def _renew(self):
        if self.renew_interval * 2 > self.lease_seconds:
            raise ValueError("renew_interval must be at most half of lease_seconds")
        return self


class SparkplugMetric(Model):
    """One Sparkplug B metric feeding one sensor of the registry."""

    #: where it is published: `group/edge_node` (node metric) or `group/edge_node/device`
    source: str = Field(pattern=r"^[^/#+\s]+/[^/#+\s]+(/[^/#+\s]+)?$")
    #: the metric's name as its BIRTH declares it (`Gas/H2S`, `Tank1/Level`)
    metric: str = Field(min_length=1)
    #: the sensor id it feeds (a fixed instrument)
    sensor: ID


class SparkplugConfig(Model):
    """Sparkplug B ingest (docs/sparkplug.md): births, data and deaths of edge nodes and devices."""

    #: Sparkplug group ids: the daemon subscribes to `spBv1.0/{group}/#` for each
    groups: list[ID] = Field(min_length=1)
    #: metric -> sensor mapping
    metrics: list[SparkplugMetric] = Field(default_factory=list)
    #: a metric not listed in `metrics` whose name is a sensor id feeds that sensor
    by_name: bool = False


def _sparkplug_problems(cfg: "Config", sensors: dict[str, Sensor]) -> list[str]:
    """Each mapped sensor exists, is a fixed instrument fed from one place, and is watched by a
    stale detector (a DEATH raises its sensor-health alarm through it)."""
    sp = cfg.sparkplug
    if sp is None:
        return []
    out = ["sparkplug: not supported together with cluster"] if cfg.cluster is not None else []
    stale = [d for d in cfg.detectors if d.type == "stale" and d.enabled]
    seen: dict[tuple[str, str], int] = {}
    fed: dict[str, int] = {}
    for i, m in enumerate(sp.metrics):
        where = f"sparkplug.metrics[{i}]"
        if m.source.split("/")[0] not in sp.groups:
            out.append(f"{where}.source: group {m.source.split('/')[0]!r} is not in sparkplug.groups")
        if (m.source, m.metric) in seen:
            out.append(f"{where}.metric: {m.metric!r} of {m.source!r} is already mapped by sparkplug.metrics[{seen[m.source, m.metric]}]")
        seen.setdefault((m.source, m.metric), i)
        s = sensors.get(m.sensor)
        if s is None:
            out.append(f"{where}.sensor: unknown sensor {m.sensor!r}{did_you_mean(m.sensor, sensors)}")
            continue
        if s.kind == "robot":
            out.append(f"{where}.sensor: {m.sensor!r} is a robot channel (readings need a position)")
        if m.sensor in fed:
            out.append(f"{where}.sensor: {m.sensor!r} is already fed by sparkplug.metrics[{fed[m.sensor]}]")
        fed.setdefault(m.sensor, i)
        if not any(d.select.matches(s) for d in stale):
            out.append(f"{where}.sensor: {m.sensor!r} is watched by no enabled stale detector, so a Sparkplug "
                       f"DEATH could not raise its sensor-health alarm")
    return out


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
            problems += [f"{_fmt_path(p)}: {m}"
                         for p, m in reference_problems(data, sensors) + range_problems(data, sensors)]
        problems += _sparkplug_problems(self, {s.id: s for s in self.sensors})  # on the validated model only
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


class ConfigError(ValueError):
    """A config that cannot be used; ``problems`` lists ``file:line:col: path: message``."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s) in config\n" + "\n".join(f"  {p}" for p in problems))


def _fmt_path(path: tuple[Any, ...], data: Any = None) -> str:
    """``detectors[h2s-limit].params.high``: entries of id lists by their id, others by index."""
    out = ""
    for k, p in enumerate(path):
        if isinstance(p, int):
            out += f"[{entry_label(data, tuple(path[:k + 1])) or p}]"
        else:
            out += f".{p}" if out else str(p)
    return out or "(top level)"


def _model_at(root: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model of the mapping at ``path`` under ``root`` (to suggest its keys), if there is one."""
    import typing

    def unwrap(tp: Any) -> Any:  # Annotated[X, ...] -> X; X | None -> X
        while True:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if typing.get_origin(tp) is typing.Annotated or (typing.get_origin(tp) in (typing.Union, types.UnionType)
                                                               and len(args) == 1):
                tp = args[0]
            else:
                return tp

    tp: Any = root
    for seg in path:
        tp = unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(seg, str) and seg in tp.model_fields:
            tp = tp.model_fields[seg].annotation
        elif typing.get_origin(tp) in (list, tuple) and isinstance(seg, int):
            tp = typing.get_args(tp)[0]
        else:
            return None
    tp = unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


_REF = re.compile(r"^(?P<path>[A-Za-z_]+(?:\[\d+\])?(?:\.[A-Za-z_]+(?:\[\d+\])?)*): (?P<msg>.*)$")


def _parse_ref(ref: str) -> tuple[Any, ...]:
    out: list[Any] = []
    for part in ref.split("."):
        m = re.match(r"^([A-Za-z_]+)(?:\[(\d+)\])?$", part)
        if not m:
            break
        out.append(m.group(1))
        if m.group(2) is not None:
            out.append(int(m.group(2)))
    return tuple(out)


def _problems(err: ValidationError, located: Located, root: type[BaseModel] | None = None) -> list[str]:
    """``file:line:col: path: what`` for each error of validating ``located`` against ``root``
    (default :class:`Config`; it names the keys suggested for an unknown one)."""
    out: list[str] = []
    for e in err.errors(include_url=False):
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith(("function-after", "tagged-union"))))
        msg = e["msg"].removeprefix("Value error, ")
        # cross-reference problems come as "path: message; path: message"
        parts = msg.split("\n") if e["type"] == "value_error" else [msg]
        for part in parts:
            m = _REF.match(part)
            if m and e["type"] == "value_error":
                path = loc + _parse_ref(m.group("path"))
                text = m.group("msg")
            else:
                path, text = loc, part
            if e["type"] == "extra_forbidden":
                model = _model_at(root or Config, path[:-1])
                text = f"unknown key {path[-1]!r}{did_you_mean(path[-1], model.model_fields if model else ())}"
            elif e["type"] == "missing":
                text = f"missing required key {path[-1]!r}"
            elif "input" in e and e["type"] not in ("value_error",) and not isinstance(e["input"], (dict, list)):
                text = f"{text} (got {e['input']!r})"
            out.append(_at(located, path, text))
    return out


def _at(located: Located, path: tuple[Any, ...], text: str) -> str:
    return f"{located.where(path)}: {_fmt_path(path, located.data)}: {text}"


def _param_problems(located: Located) -> list[str]:
    """Validate each detector's params against its type's model, with exact locations."""
    out: list[str] = []
    dets = located.data.get("detectors") if isinstance(located.data, dict) else None
    if not isinstance(dets, list):
        return out
    for i, d in enumerate(dets):
        if not isinstance(d, dict) or d.get("type") not in REGISTRY or not isinstance(d.get("params", {}), dict):
            continue
        try:
            REGISTRY[d["type"]].Params.model_validate(d.get("params", {}))
        except ValidationError as err:
            for e in err.errors(include_url=False):
                path = ("detectors", i, "params") + tuple(e["loc"])
                text = e["msg"].removeprefix("Value error, ")
                if e["type"] == "extra_forbidden":
                    allowed = ", ".join(REGISTRY[d["type"]].Params.model_fields)
                    text = (f"unknown parameter {path[-1]!r} for detector type {d['type']!r}"
                            f"{did_you_mean(path[-1], REGISTRY[d['type']].Params.model_fields)} (allowed: {allowed})")
                elif "input" in e and not isinstance(e["input"], (dict, list)) and e["type"] != "value_error":
                    text = f"{text} (got {e['input']!r})"
                out.append(_at(located, path, text))
    return out


def _line_col(located: Located, problem: str) -> tuple[int, int]:
    """Sort key of a ``file:line:col: ...`` problem."""
    rest = problem[len(located.source) + 1:].split(":", 2)
    try:
        return int(rest[0]), int(rest[1])
    except (ValueError, IndexError):
        return 0, 0


def parse_config(located: Located, *, check_files: bool = True) -> Config:
    """Every stage runs, whatever the others found: the schema, the detectors' parameters,
    references between ids and alarm levels against measuring ranges; all problems come
    together, in file order."""
    # text that reaches the database (names, units, descriptions, detector parameters as jsonb)
    # must be storable: no NUL (YAML's "\0" escape), no lone surrogate ("\ud800")
    problems = [_at(located, path, f"text {why} (it could not be stored)")
                for path, why in text_problems_in(located.data)]
    problems += _param_problems(located)
    cfg = None
    try:
        cfg = Config.model_validate(located.data, context={"cross_checked": True, "check_files": check_files})
    except ValidationError as err:
        problems = _problems(err, located) + problems
    sensors = list(cfg.sensors) if cfg is not None else valid_sensors(located.data)
    cross = reference_problems(located.data, sensors) + range_problems(located.data, sensors)
    problems += [_at(located, p, m) for p, m in cross]
    if problems or cfg is None:
        raise ConfigError(located.source, sorted(dict.fromkeys(problems), key=lambda p: _line_col(located, p)))
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
