"""The registry of source kinds (one file per protocol) and what every source shares.

A source kind is a class with a ``Config`` (a pydantic model whose ``type`` literal names the
kind, with ``id`` and ``channels``) and ``run(emit, stop)``, which reads the device until ``stop``
is set and hands readings to ``emit``. ``@register`` adds it; ``plantwatch.connectors.edge``
imports every kind so the collect config accepts it. A device that cannot be reached yields no
readings (the daemon's stale detector notices) and is retried with backoff; its errors are
logged and counted.
"""
from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .scaling import Conversion, Flag, Quality

SensorId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
SourceId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]

Reading = dict[str, Any]
Emit = Callable[[list[Reading]], None]


class Channel(Conversion):
    """One value read from a device, published as one sensor's readings."""

    #: sensor id (tag) as the daemon's site config names it
    sensor: SensorId
    #: engineering unit of the readings (optional; checked against the site config's)
    unit: str | None = Field(None, min_length=1, max_length=32)


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: source id: names the device in logs and metrics
    id: SourceId
    #: seconds between reconnection attempts grow up to this
    backoff_max: float = Field(30.0, gt=0, le=3600)

    def libraries(self) -> tuple[str, ...]:
        """Modules the source imports when it runs (the ``edge`` extra), checked before the start."""
        return ()

    def resolve_paths(self, base: Path) -> "SourceConfig":
        """This source with its relative folders taken relative to ``base`` (the config file's folder)."""
        return self

    def path_problems(self) -> list[tuple[tuple[Any, ...], str]]:
        """Files the source needs that are missing, once its paths are resolved: (path in the
        source, what is wrong)."""
        return []

    def shared_endpoint(self) -> str | None:
        """What only one source may open (a gateway, a serial port), named for config errors; None:
        sources of this kind may share their endpoint."""
        return None

    @model_validator(mode="after")
    def _unique_sensors(self):
        seen: set[str] = set()
        for i, ch in enumerate(getattr(self, "channels", [])):
            if ch.sensor in seen:
                raise ValueError(f"channels[{i}].sensor: sensor {ch.sensor!r} appears twice in this source")
            seen.add(ch.sensor)
        return self


class Source(Protocol):
    Config: ClassVar[type[SourceConfig]]

    def __init__(self, config: Any, metrics: "CollectMetrics") -> None: ...

    async def run(self, emit: Emit, stop: asyncio.Event) -> None: ...


SOURCES: dict[str, type[Source]] = {}


def register(cls: type[Source]) -> type[Source]:
    kind = cls.Config.model_fields["type"].annotation.__args__[0]  # Literal["modbus"] -> "modbus"
    SOURCES[kind] = cls
    return cls


class CollectMetrics:
    """The collector's own counters (served on ``metrics.port`` when configured)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r
        p = "plantwatch_collect_"
        self.readings = Counter(p + "readings", "Readings read from devices", ["source", "quality"], registry=r)
        self.errors = Counter(p + "source_errors", "Failed connections, reads and subscriptions", ["source"], registry=r)
        self.up = Gauge(p + "source_up", "1 while the source is connected", ["source"], registry=r)
        self.signals = Counter(p + "loop_signals", "4-20 mA readings outside measurement (fault, inhibit, ...)",
                               ["sensor", "state"], registry=r)
        self.skipped = Counter(p + "readings_skipped", "Device values that could not become a reading",
                               ["source", "reason"], registry=r)
        self.batches = Counter(p + "batches", "Batches put into the store-and-forward buffer", registry=r)
        self.published = Counter(p + "batches_published", "Batches acknowledged by the broker", registry=r)
        self.buffered = Gauge(p + "buffer_batches", "Batches waiting in the store-and-forward buffer", registry=r)
        self.dropped = Gauge(p + "buffer_dropped", "Batches dropped from a full buffer (buffer file's life)", registry=r)
        self.announced = Gauge(p + "site_announced", "1 once a daemon has announced this collector's site and "
                                                     "collector (retained status topics)", registry=r)
        self.held = Gauge(p + "publishing_held", "1 while batches stay in the buffer because no daemon has announced "
                                                 "this collector's site and collector", registry=r)
        self.site_problems = Gauge(p + "site_problems", "Channels that disagree with the sensors the daemon announced "
                                                        "(unknown sensor, range, unit, owner)", registry=r)


def reading(source: str, ch: Channel, raw: float, t: float, metrics: CollectMetrics,
            quality: Quality = "good", flag: Flag | None = None) -> Reading | None:
    """Convert one raw value into a wire reading; None (counted) when it cannot be one."""
    c = ch.convert(raw, quality, flag)
    if not math.isfinite(c.value):
        metrics.skipped.labels(source, "non_finite").inc()
        return None
    if c.state != "measuring":
        metrics.signals.labels(ch.sensor, c.state).inc()
    metrics.readings.labels(source, c.quality).inc()
    r: Reading = {"sensor": ch.sensor, "time": round(t, 6), "value": c.value}
    if c.quality != "good":
        r["quality"] = c.quality
    if c.flag is not None:
        r["flag"] = c.flag
    return r


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` unless ``stop`` is set first; True when stopping."""
    if seconds > 0:
        try:
            await asyncio.wait_for(stop.wait(), timeout=seconds)
        except TimeoutError:
            pass
    return stop.is_set()


def now() -> float:
    return time.time()
