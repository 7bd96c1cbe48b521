"""The ``sparkplug`` section of the config: Sparkplug B groups and the metric -> sensor mapping
(docs/sparkplug.md), and its checks against the sensor registry and the detectors."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from plantwatch.daemon.config.checks import did_you_mean
from plantwatch.daemon.config.sensors import ID, Model, Sensor
from plantwatch.daemon.config.site import DetectorConfig


#: a Sparkplug host application id: one topic level of ``spBv1.0/STATE/<host_id>`` (no ``/``,
#: ``+``, ``#`` or white space)
HostId = Annotated[str, StringConstraints(pattern=r"^[^/#+\s]+$", max_length=64)]


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
    #: Sparkplug 3.0 primary host id: the daemon publishes its STATE on `spBv1.0/STATE/{host_id}`
    #: (retained, QoS 1; with `cluster`: `{host_id}-p{k}` per partition). Omitted: no STATE
    host_id: HostId | None = None


def sparkplug_problems(sp: SparkplugConfig | None, *, detectors: list[DetectorConfig],
                       sensors: dict[str, Sensor]) -> list[str]:
    """Each mapped sensor exists, is a fixed instrument fed from one place, and is watched by a
    stale detector (a DEATH raises its sensor-health alarm through it)."""
    if sp is None:
        return []
    out: list[str] = []
    stale = [d for d in detectors if d.type == "stale" and d.enabled]
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
