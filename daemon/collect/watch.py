"""The collector's side of the site announcement: is a daemon reading what this collector sends?

:class:`SiteWatch` takes the daemon's retained announcements (:mod:`.site_status`) from the
publisher's connection. Once the registry of the collector's site lists this collector and the
collector's own topic has arrived, the site is *announced*: the gate opens and batches are
published. Until then they stay in the store-and-forward buffer (with ``daemon.required``, the
default): the broker would acknowledge them and drop them, since no daemon subscribes to a site
or prefix that no daemon serves. After ``daemon.timeout`` seconds without an announcement the
collector logs an error, repeated every few minutes while it lasts, and its metrics say so
(``plantwatch_collect_site_announced`` 0, ``plantwatch_collect_publishing_held`` 1). The channels
are compared with the announced sensors (:mod:`.collect_site`); each disagreement is logged as an
error with its place in the collect config and counted in ``plantwatch_collect_site_problems``.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from plantwatch.connectors.edge.buffer import Outbox
from plantwatch.connectors.edge.sources import CollectMetrics, sleep_or_stop

from plantwatch.daemon.collect.config import CollectConfig
from plantwatch.daemon.collect.site import SiteView, agreement
from plantwatch.daemon.config.loader import Located
from plantwatch.daemon.ingest.site_status import collector_topic, registry_topic

log = logging.getLogger("plantwatch.collect.site")

#: seconds between repeated warnings while no daemon has announced the site
REPEAT_WARNING = 300.0


class SiteWatch:
    def __init__(self, cfg: CollectConfig, metrics: CollectMetrics, located: Located | None = None):
        self.cfg, self.m = cfg, metrics
        self.located = located or Located({}, {}, "collect config")
        prefix = cfg.mqtt.topic_prefix
        self.registry_topic = registry_topic(prefix, cfg.site)
        self.collector_topic = collector_topic(prefix, cfg.site, cfg.collector)
        self.registry: dict[str, Any] | None = None
        self.served: dict[str, Any] | None = None
        self.announced = False
        self.problems: list[str] = []
        self.gate = asyncio.Event()  # publishing allowed
        if not cfg.daemon.required:
            self.gate.set()
        self._refused_logged: tuple[str, ...] | None = None
        self._update()

    @property
    def topics(self) -> tuple[str, ...]:
        return self.registry_topic, self.collector_topic

    def on_message(self, topic: str, payload: bytes) -> None:
        """A retained announcement (an empty payload withdraws it)."""
        try:
            doc = json.loads(payload) if payload else None
        except ValueError:  # includes UnicodeDecodeError
            log.warning("unreadable announcement on %s (%d bytes); ignored", topic, len(payload))
            return
        if doc is not None and not isinstance(doc, dict):
            log.warning("announcement on %s is not an object; ignored", topic)
            return
        if topic == self.registry_topic:
            self.registry = doc
        elif topic == self.collector_topic:
            self.served = doc
        self._update()

    def _update(self) -> None:
        cfg = self.cfg
        listed = self.registry is not None and cfg.collector in [str(c) for c in self.registry.get("collectors", [])]
        ok = listed and self.served is not None
        if self.registry is not None and not listed:
            others = tuple(sorted(str(c) for c in self.registry.get("collectors", [])))
            if self._refused_logged != others:
                self._refused_logged = others
                log.error("the daemon of site %r serves collectors %s, not %r: batches stay in the buffer until its "
                          "config names this collector (or this collector's id is corrected)", cfg.site,
                          ", ".join(others) or "(none)", cfg.collector)
        if ok:
            try:
                view = SiteView.from_announcement(cfg.site, cfg.collector, self.registry, self.served)
            except (KeyError, TypeError, ValueError, IndexError) as e:
                log.error("announcement of collector %r on %s is not usable (%s)", cfg.collector, self.collector_topic, e)
                ok = False
            else:
                problems, notes = agreement(cfg, self.located, view, prefix=cfg.mqtt.topic_prefix)
                if problems != self.problems:
                    for p in problems:
                        log.error("%s", p)
                    for n in notes:
                        log.warning("%s", n)
                self.problems = problems
                self.m.site_problems.set(len(problems))
        if ok and not self.announced:
            log.info("a daemon announces site %r and collector %r: publishing", cfg.site, cfg.collector)
        self.announced = ok
        self.m.announced.set(1 if ok else 0)
        if ok or not cfg.daemon.required:
            self.gate.set()
        else:
            self.gate.clear()
        self.m.held.set(0 if self.gate.is_set() else 1)

    async def run(self, stop: asyncio.Event, outbox: Outbox) -> None:
        """Warn loudly when no daemon has announced the site within ``daemon.timeout`` seconds,
        and again every few minutes while it lasts."""
        cfg = self.cfg
        wait = cfg.daemon.timeout
        while not await sleep_or_stop(stop, wait):
            if self.announced:
                wait = cfg.daemon.timeout
                continue
            held = "are kept in the buffer and not published" if not self.gate.is_set() else "are published anyway (daemon.required: false)"
            log.error("no plantwatch daemon has announced site %r and collector %r on mqtt://%s:%s under topic "
                      "prefix %r (retained %s): %d batches %s. Check site, collector and mqtt.topic_prefix against the "
                      "daemon's config", cfg.site, cfg.collector, cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.topic_prefix,
                      self.registry_topic, len(outbox), held)
            wait = REPEAT_WARNING
