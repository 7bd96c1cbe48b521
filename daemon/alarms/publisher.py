"""Alarm changes and the retained list of active alarms on MQTT, on the daemon's own connection.

``{prefix}/{site}/alarms/changes`` carries every alarm change as soon as it is decided, before the
database commits it (QoS 1; daemon/ingest/pipeline.py, docs/outages.md);
``{prefix}/{site}/alarms/active`` is the retained list of alarms not in state normal, as the
database has committed them: published again after each commit of alarm changes
(:meth:`AlarmPublisher.active_changed`) and after every reconnect; while the database does not
answer it is tried again every ``ACTIVE_RETRY`` seconds (the changes do not wait for it).

A change leaves the outbox only once the broker has acknowledged it. While the broker is away
(restart, network) changes wait, and after the reconnect they are published in decision order.
A broker outage is logged as one episode (:class:`BrokerOutage`). The outbox is bounded: beyond ``limit`` the oldest waiting
change is dropped and counted (``plantwatch_notifications_dropped_total``). Delivery is at least
once: a change whose acknowledgement was lost with the connection is published again.

:meth:`AlarmPublisher.offer` never blocks, so a slow or absent broker never holds up the write
path.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from typing import Any, Awaitable, Callable

import aiomqtt

from plantwatch.connectors.mqtt import BrokerAddress, BrokerError, Publisher
from plantwatch.connectors.store import AlarmWrite

from plantwatch.daemon.alarms.message import change_payload
from plantwatch.daemon.broker_session import ConnectProblems
from plantwatch.daemon.metrics import Metrics

log = logging.getLogger(__name__)

#: seconds between attempts to read the active alarm list while the database does not answer
ACTIVE_RETRY = 5.0


class BrokerOutage:
    """The alarm publisher's broker outages, logged as episodes: one warning when it starts, one
    every ``remind`` seconds while it lasts, one when it ends with what it cost."""

    def __init__(self, remind: float = 60.0):
        self.remind = remind
        self.since: float | None = None  # monotonic start of the current outage
        self.attempts = 0
        self.config_error = False
        self._told = 0.0
        self._dropped0 = 0

    def failed(self, e: Exception, waiting: int, dropped: int, *, config: bool) -> None:
        now = time.monotonic()
        self.attempts += 1
        self.config_error = self.config_error or config
        if self.since is None:
            self.since, self._told, self._dropped0 = now, now, dropped
            if not config:  # (a configuration problem is logged, once, by ConnectProblems)
                log.warning("alarm publisher: broker unreachable (%s); alarm changes wait in the outbox and are"
                            " published when it is back (%d waiting)", e or type(e).__name__, waiting)
        elif now - self._told >= self.remind:
            self._told = now
            log.warning("alarm publisher: broker still unreachable after %.0f s (%d attempts; last: %s); %d alarm"
                        " message(s) waiting, %d dropped (outbox full)", now - self.since, self.attempts,
                        e or type(e).__name__, waiting, dropped - self._dropped0)

    def ended(self, published: int, dropped: int) -> None:
        if self.since is None:
            return
        log.warning("alarm publisher: broker reachable again after %.1f s (%d failed attempts); %d alarm message(s)"
                    " published from the outbox, %d dropped (outbox full)", time.monotonic() - self.since,
                    self.attempts, published, dropped - self._dropped0)
        self.since, self.attempts, self.config_error = None, 0, False


def change_message(w: AlarmWrite) -> bytes:
    return json.dumps(change_payload(w)).encode()  # content: daemon/alarms/message.py


class AlarmPublisher:
    def __init__(self, broker: BrokerAddress, *, client_id: str, base: str, site: str,
                 active: Callable[[], Awaitable[list[dict[str, Any]] | None]], metrics: Metrics, limit: int = 100_000,
                 check_every: float = 1.0, problems: ConnectProblems | None = None, outage_remind: float = 60.0):
        self.broker = broker
        self.client_id = client_id
        self.base = base
        self.site = site
        self.active = active
        self.m = metrics
        self.limit = limit
        self.check_every = check_every  # how often an idle connection is checked (to refresh after a reconnect)
        self.problems = problems or ConnectProblems(metrics)  # a refused connect is logged once
        #: alarm changes, and other messages of the same connection as (topic, payload) pairs
        self._out: collections.deque[AlarmWrite | tuple[str, bytes]] = collections.deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._active_due = False  # the retained active list is to be published (again)
        self._active_failed = 0.0  # monotonic time of the last attempt the database did not answer
        self._dropped = 0  # messages the full outbox dropped (in this run)
        self._outage = BrokerOutage(outage_remind)  # a broker outage is logged as one episode

    @property
    def pending(self) -> int:
        return len(self._out)

    def offer(self, writes: list[AlarmWrite]) -> None:
        """Queue decided changes for publishing, in decision order; never blocks."""
        for w in writes:
            if len(self._out) >= self.limit:
                self._out.popleft()
                self._dropped += 1
                self.m.notify_dropped.inc()
            self._out.append(w)
        self._wake.set()

    def offer_message(self, topic: str, payload: bytes) -> None:
        """Queue another message (a transfer receipt) behind the changes decided before it."""
        if len(self._out) >= self.limit:
            self._out.popleft()
            self._dropped += 1
            self.m.notify_dropped.inc()
        self._out.append((topic, payload))
        self._wake.set()

    def finish(self) -> None:
        """Publish what is queued and the final active list, then let :meth:`run` return."""
        self._closing = True
        self.active_changed()

    def active_changed(self) -> None:
        """The database committed alarm changes: publish the retained active list again (at once,
        even while an earlier attempt waits to be retried)."""
        self._active_due = True
        self._active_failed = 0.0
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                async with Publisher(self.broker, client_id=self.client_id) as pub:
                    if self._outage.config_error:
                        self.problems.ok("alarm publisher")
                    published = await self._drain(pub)
                    self._outage.ended(published, self._dropped)
                    self.active_changed()  # after every (re)connect: the list may have been missed
                    while True:
                        self._wake.clear()
                        if self._out:
                            await self._drain(pub)
                            continue
                        if self._active_due:
                            await self._publish_active(pub)
                            if self._out:
                                continue
                        if self._closing:
                            return
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), self.check_every)
                        if not pub.connected:
                            raise aiomqtt.MqttError("connection to the broker lost")
            except aiomqtt.MqttError as e:
                if self._closing:
                    if self._out:
                        log.warning("alarm publisher: %s at shutdown; %d alarm change(s) not published",
                                    e, len(self._out))
                    return
                if isinstance(e, BrokerError) and e.config:  # TLS, credentials: logged once, as for the intake
                    self.problems.failed(e, 1.0, what="alarm publisher", detail=f"; {len(self._out)} change(s) waiting")
                else:
                    self.problems.count(e)
                self._outage.failed(e, len(self._out), self._dropped, config=isinstance(e, BrokerError) and e.config)
                await asyncio.sleep(1.0)

    async def _drain(self, pub: Publisher) -> int:
        n = 0
        while self._out:
            w = self._out[0]
            if isinstance(w, tuple):
                await pub.publish(*w)
            else:
                await pub.publish(f"{self.base}/changes", change_message(w))
            n += 1
            if self._out and self._out[0] is w:  # (unless the full outbox dropped it meanwhile)
                self._out.popleft()
        return n

    async def _publish_active(self, pub: Publisher) -> None:
        """The retained list of active alarms, as the database has them. While the database does
        not answer (``active`` returns None) the list is tried again every ``ACTIVE_RETRY`` s."""
        if self._active_failed and time.monotonic() - self._active_failed < ACTIVE_RETRY:
            return
        self._active_due = False  # (a commit meanwhile sets it again)
        active = await self.active()
        if active is None:
            self._active_due = True
            self._active_failed = time.monotonic()
            return
        self._active_failed = 0.0
        await pub.publish(f"{self.base}/active", json.dumps(
            {"site": self.site, "time": time.time(), "alarms": active}).encode(), retain=True)
