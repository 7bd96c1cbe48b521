"""Config of ``plantwatch collect``: the edge collector's identity, broker, buffer and sources.

Loaded like the daemon's config (:mod:`.config_loader`): unknown keys are errors, and every
problem is reported as ``file:line:col: path: what is wrong``. ``sources`` accepts every kind in
:data:`plantwatch.connectors.edge.SOURCES`, told apart by ``type``. A relative ``buffer.path`` is
taken relative to the config file, so a service manager's working directory does not matter.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from plantwatch.connectors.edge import SOURCES
from plantwatch.connectors.wire import RESERVED_COLLECTORS

from plantwatch.daemon.config.model import ID, ConfigError
from plantwatch.daemon.config.problems import located_problem, validation_problems
from plantwatch.daemon.config.tls import BasicAuthConfig, ClientTlsConfig, ServerTlsConfig, exposed_needs
from plantwatch.daemon.config.loader import ConfigSyntaxError, Located, load_yaml, load_yaml_file


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CollectMqtt(_Model):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    #: first topic segment, as in the daemon's ``mqtt.topic_prefix``
    topic_prefix: str = Field("plantwatch", min_length=1, pattern=r"^[^#+]+$")
    username: str | None = None
    #: default: the PLANTWATCH_MQTT_PASSWORD environment variable
    password: str | None = None
    #: MQTT client id (default: ``plantwatch-collect-<collector>``; a broker with
    #: use_username_as_clientid replaces it by the user name)
    client_id: str | None = None
    #: TLS to the broker (the site CA, this collector's certificate; docs/tls.md); omitted: plain TCP
    tls: ClientTlsConfig | None = None


class Buffer(_Model):
    #: SQLite file of the store-and-forward buffer (relative: to the config file's folder)
    path: Path = Path("collect-buffer.sqlite3")
    #: batches kept while the broker is unreachable; past this the oldest are dropped (counted)
    max_batches: int = Field(100_000, ge=1, le=100_000_000)
    #: seconds a stopping collector keeps trying to hand buffered batches to the broker
    flush_grace: float = Field(5.0, ge=0, le=600)


class Batching(_Model):
    #: seconds readings are gathered into one batch
    interval: float = Field(1.0, gt=0, le=60)
    #: readings per batch (at most the daemon's ingest.max_readings_per_message, 10,000 by default)
    max_readings: int = Field(500, ge=1, le=10_000)


class DaemonCheck(_Model):
    #: seconds to wait for a daemon to announce this site and collector before warning loudly
    timeout: float = Field(30.0, gt=0, le=86400)
    #: publish only once a daemon has announced this site and collector; until then batches stay
    #: in the buffer (false: publish regardless, e.g. to a daemon that does not announce)
    required: bool = True


class CollectMetricsConfig(_Model):
    #: port of the collector's Prometheus /metrics (none: not served)
    port: int | None = Field(None, ge=0, le=65535)
    #: another address than this machine's own only with tls and basic_auth
    host: str = "127.0.0.1"
    tls: ServerTlsConfig | None = None
    basic_auth: BasicAuthConfig | None = None

    @model_validator(mode="after")
    def _exposed(self):
        return exposed_needs(self, "/metrics", ("tls", "basic_auth"))


SourceUnion = Annotated[Union[tuple(k.Config for k in SOURCES.values())], Field(discriminator="type")]


class CollectConfig(_Model):
    #: this collector's id: the third topic segment and the wire format's ``collector``
    collector: ID
    #: the site id, as in the daemon's config
    site: ID
    mqtt: CollectMqtt = CollectMqtt()
    buffer: Buffer = Buffer()
    batch: Batching = Batching()
    metrics: CollectMetricsConfig = CollectMetricsConfig()
    #: the daemon that reads this collector: how long to wait for its announcement
    daemon: DaemonCheck = DaemonCheck()
    #: devices to read: each has a ``type`` (modbus, opcua), an ``id`` and ``channels``
    sources: list[SourceUnion] = Field(min_length=1)

    @field_validator("collector")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v in RESERVED_COLLECTORS:
            raise ValueError(f"{v!r} is reserved on the wire (not one of {sorted(RESERVED_COLLECTORS)})")
        return v

    @model_validator(mode="after")
    def _unique(self):
        problems: list[str] = []
        ids: set[str] = set()
        owner: dict[str, str] = {}
        lines: dict[str, str] = {}
        for i, s in enumerate(self.sources):
            if s.id in ids:
                problems.append(f"sources[{i}].id: source id {s.id!r} is used twice")
            ids.add(s.id)
            line = s.shared_endpoint()
            if line is not None and line in lines:
                problems.append(f"sources[{i}]: {line} is already read by source {lines[line]!r} (one "
                                "connection serves every unit id behind it): put these channels in source "
                                f"{lines[line]!r}, each with its unit_id")
            if line is not None:
                lines.setdefault(line, s.id)
            for j, ch in enumerate(s.channels):
                if ch.sensor in owner and owner[ch.sensor] != s.id:
                    problems.append(f"sources[{i}].channels[{j}].sensor: sensor {ch.sensor!r} is already read by "
                                    f"source {owner[ch.sensor]!r}")
                owner.setdefault(ch.sensor, s.id)
        if problems:
            raise ValueError("\n".join(problems))
        return self


class _Untagged:
    """A validation error without the source-kind tag pydantic puts in the location of each problem
    inside a source (``sources.0.modbus.host`` is ``sources.0.host`` in the file)."""

    def __init__(self, err: ValidationError):
        self.err = err

    def errors(self, **kw):
        out = []
        for e in self.err.errors(**kw):
            loc = e["loc"]
            if len(loc) > 2 and loc[0] == "sources" and loc[2] in SOURCES:
                e = {**e, "loc": loc[:2] + loc[3:]}
            out.append(e)
        return out


_INDEXED = re.compile(r"^sources\[(\d+)\](?:\.channels\[(\d+)\])?")


def _by_name(problem: str, located: Located) -> str:
    """``file:l:c: sources[0].channels[3].type: ...`` as ``sources[panel].channels[G3].type: ...``:
    a source by its id and a channel by its sensor, when they have one (unique in their list)."""
    head = f"{located.source}:"
    rest = problem[len(head):] if problem.startswith(head) else None
    if rest is None:
        return problem
    line, col, tail = (rest.split(":", 2) + ["", ""])[:3]
    path, sep, text = tail.strip().partition(": ")
    m = _INDEXED.match(path)
    if not m:
        return problem
    sources = located.data.get("sources") if isinstance(located.data, dict) else None
    i = int(m.group(1))
    src = sources[i] if isinstance(sources, list) and i < len(sources) and isinstance(sources[i], dict) else {}
    name = _unique_label(sources, i, "id") or str(i)
    new = f"sources[{name}]"
    if m.group(2) is not None:
        j = int(m.group(2))
        new += f".channels[{_unique_label(src.get('channels'), j, 'sensor') or j}]"
    return f"{head}{line}:{col}: {new}{path[m.end():]}{sep}{text}"


def _unique_label(items, k: int, key: str) -> str | None:
    if not isinstance(items, list) or k >= len(items) or not isinstance(items[k], dict):
        return None
    label = items[k].get(key)
    labels = [x.get(key) for x in items if isinstance(x, dict)]
    return label if isinstance(label, str) and label and labels.count(label) == 1 else None


def parse_collect_config(located: Located) -> CollectConfig:
    try:
        cfg = CollectConfig.model_validate(located.data)
    except ValidationError as err:
        problems = validation_problems(_Untagged(err), located, CollectConfig)
        raise ConfigError(located.source, [_by_name(p, located) for p in problems]) from None
    base = Path(located.source).resolve().parent if located.source not in ("", "<string>") else Path.cwd()
    if not cfg.buffer.path.is_absolute():
        cfg = cfg.model_copy(update={"buffer": cfg.buffer.model_copy(update={"path": base / cfg.buffer.path})})
    cfg = cfg.model_copy(update={"sources": [s.resolve_paths(base) for s in cfg.sources]})
    missing = [_by_name(located_problem(located, ("sources", i) + path, text), located)
               for i, s in enumerate(cfg.sources) for path, text in s.path_problems()]
    if missing:
        raise ConfigError(located.source, missing)
    return cfg


def load_collect_config(path: str | Path) -> CollectConfig:
    return load_collect_config_located(path)[0]


def load_collect_config_located(path: str | Path) -> tuple[CollectConfig, Located]:
    """The config and the positions of its nodes (for problems found later, against a site)."""
    try:
        located = load_yaml_file(path)
    except ConfigSyntaxError as e:
        raise ConfigError(str(path), [str(e)]) from None
    return parse_collect_config(located), located


def is_collect_config(path: str | Path) -> bool:
    """Whether a YAML file looks like a collect config (it has ``sources`` and ``collector``)."""
    try:
        data = load_yaml_file(path).data
    except (ConfigSyntaxError, OSError):
        return False
    return isinstance(data, dict) and "sources" in data and "collector" in data


def load_collect_config_text(text: str, source: str = "<string>") -> CollectConfig:
    try:
        return parse_collect_config(load_yaml(text, source))
    except ConfigSyntaxError as e:
        raise ConfigError(source, [str(e)]) from None
