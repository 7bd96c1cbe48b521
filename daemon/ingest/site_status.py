"""What a daemon serves, announced on retained MQTT topics, so that collectors know they are heard.

A collector whose readings go to a site or topic prefix that no daemon reads loses them: the broker
acknowledges the publish and the collector deletes the batch. So, once its intake is subscribed
(its persistent session queues whatever comes while it is down), the daemon publishes, retained
with QoS 1:

``{prefix}/{site}/status/registry``
    ``{"v": 1, "site": ..., "time": ..., "wire": {"version": 1, "flags": [...]}, "collectors": [...]}``
``{prefix}/{site}/status/collectors/{collector}``
    ``{"v": 1, "site": ..., "collector": ..., "time": ..., "sensors": [{"id", "kind", "unit", "range"}]}``
    for each collector the site config names.

``plantwatch collect`` subscribes to both: it publishes only once the registry lists its
collector and its own topic has arrived, compares its channels with the announced sensors
(:mod:`.collect_site`), and until then keeps its batches in its buffer and says so (log and
metrics). The topics are announced again after every reconnection, so a broker that lost its
retained messages gets them back. ``status`` is not a collector id (``connectors/wire.py``).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiomqtt

from plantwatch.connectors.mqtt import BrokerAddress, Publisher
from plantwatch.connectors.wire import FLAG_CODES, WIRE_VERSION

from plantwatch.daemon.config.model import Config

log = logging.getLogger("plantwatch.status")

STATUS_VERSION = 1


def status_base(prefix: str, site: str) -> str:
    return f"{prefix}/{site}/status"


def registry_topic(prefix: str, site: str) -> str:
    return f"{status_base(prefix, site)}/registry"


def collector_topic(prefix: str, site: str, collector: str) -> str:
    return f"{status_base(prefix, site)}/collectors/{collector}"


def announcements(cfg: Config, now: float | None = None) -> list[tuple[str, bytes]]:
    """(topic, payload) of every retained announcement of the site ``cfg`` describes."""
    prefix = cfg.mqtt.topic_prefix if cfg.mqtt else "plantwatch"
    site, t = cfg.site.id, time.time() if now is None else now
    by_collector: dict[str, list[dict[str, Any]]] = {}
    for s in cfg.sensors:
        by_collector.setdefault(cfg.collector_of(s), []).append(
            {"id": s.id, "kind": s.kind, "unit": s.unit, "range": [float(s.range[0]), float(s.range[1])]})
    registry = {"v": STATUS_VERSION, "site": site, "time": t,
                "wire": {"version": WIRE_VERSION, "flags": sorted(FLAG_CODES)}, "collectors": sorted(by_collector)}
    out = [(registry_topic(prefix, site), json.dumps(registry).encode())]
    for c, sensors in sorted(by_collector.items()):
        out.append((collector_topic(prefix, site, c), json.dumps(
            {"v": STATUS_VERSION, "site": site, "collector": c, "time": t, "sensors": sensors}).encode()))
    return out


class SiteAnnouncer:
    """Publishes the announcements on its own connection after ``ready`` is set, and again after
    every reconnection; runs until cancelled."""

    def __init__(self, cfg: Config, broker: BrokerAddress, *, client_id: str, ready: asyncio.Event,
                 check_every: float = 5.0):
        self.cfg, self.broker, self.client_id, self.ready = cfg, broker, client_id, ready
        self.check_every = check_every
        self.announced = 0  # times the full set was published

    async def run(self) -> None:
        await self.ready.wait()  # the intake's persistent session exists: nothing sent from now is lost
        backoff, healthy = 0.5, True
        while True:
            try:
                async with Publisher(self.broker, client_id=self.client_id) as pub:
                    for topic, payload in announcements(self.cfg):
                        await pub.publish(topic, payload, retain=True)
                    self.announced += 1
                    if not healthy:
                        log.info("site %s announced again", self.cfg.site.id)
                    healthy, backoff = True, 0.5
                    while pub.connected:
                        await asyncio.sleep(self.check_every)
                    raise aiomqtt.MqttError("connection to the broker lost")
            except aiomqtt.MqttError as e:
                if healthy:
                    log.warning("announcing site %s on MQTT: %s; retrying", self.cfg.site.id, e)
                healthy = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
