"""The daemon's side of its broker connection: a persistent session the broker lost is detected,
counted and alarmed, and a connection the broker refuses is logged once, saying why.

**Session loss.** The daemon's intake keeps a persistent session (fixed client id, clean session
off): while it is away the broker queues what collectors publish. The CONNACK of every connect
says whether the broker still had the session. When it had none although the session was
established before (in this run, or in an earlier one: the table ``mqtt_sessions``), whatever the
broker held for the daemon is gone: messages queued while the daemon was away, and messages
sent but not yet acknowledged. That happens when the broker crashed before saving its store,
when its store was wiped, or when another client connected with the daemon's client id and a
clean session (the shipped broker config makes the latter impossible: docs/tls.md). The daemon
then counts it (``plantwatch_mqtt_sessions_lost_total{client_id}``), logs an error and calls the
``on_lost`` hook, which raises a system alarm (:func:`system_alarm`).

**Refused connections.** A TLS or authentication problem does not go away by retrying. The
reconnect loop keeps trying (a renewed certificate is picked up at the next attempt), but logs
the explanation (:class:`~plantwatch.connectors.mqtt.BrokerError`) once, and again only when it
changes; every attempt is counted in ``plantwatch_mqtt_connect_errors_total{reason}``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Callable

from plantwatch.connectors import broker_sessions
from plantwatch.connectors.errors import StoreError
from plantwatch.connectors.store import Pool
from plantwatch.connectors.mqtt import BrokerError

from plantwatch.daemon.metrics import Metrics

log = logging.getLogger("plantwatch.broker")

#: seconds the session record may wait for the database
DB_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class SessionLost:
    client_id: str
    broker: str
    time: float
    #: "this run" (a reconnect) or "an earlier run" (a restart of the daemon)
    established_in: str

    @property
    def text(self) -> str:
        return (f"the MQTT broker {self.broker} no longer has the persistent session of client id {self.client_id!r}"
                f" (established in {self.established_in}): data may have been lost at the broker; whatever it had"
                " queued for the daemon is gone (compare the collectors' sequence gaps)")


def system_alarm(ev: SessionLost, base: str, site: str) -> tuple[str, bytes]:
    """The system alarm for ``ev``: topic ``{prefix}/{site}/alarms/system`` and its JSON."""
    return f"{base}/system", json.dumps({
        "site": site, "alarm": "broker_session_lost", "severity": "high", "active": True, "time": ev.time,
        "client_id": ev.client_id, "broker": ev.broker, "text": ev.text}).encode()


class BrokerSessions:
    """Tells, after each accepted connect, whether a persistent session was lost."""

    def __init__(self, pool: Pool, site: str, broker: str, metrics: Metrics,
                 on_lost: Callable[[SessionLost], None] | None = None):
        self.pool = pool
        self.site = site
        self.broker = broker
        self.m = metrics
        self.on_lost = on_lost
        self._this_run: set[str] = set()
        self._recording: set[asyncio.Task] = set()

    async def connected(self, client_id: str, session_present: bool | None) -> bool:
        """Record an accepted connect; True when the session was expected and is gone.

        Only the first connect of a client id in this run asks the database (with a timeout:
        when it is down or stalled only this run's reconnects are judged); a reconnect is judged
        at once and recorded in the background (intake must not wait for the historian)."""
        if client_id in self._this_run:
            earlier = "this run"
            lost = not session_present
            task = asyncio.create_task(self._db(broker_sessions.record(self.pool, self.site, client_id, lost=lost)))
            self._recording.add(task)
            task.add_done_callback(self._recording.discard)
        else:
            earlier = "an earlier run" if await self._db(broker_sessions.known(self.pool, self.site, client_id)) else ""
            lost = bool(earlier) and not session_present
            await self._db(broker_sessions.record(self.pool, self.site, client_id, lost=lost))
        self._this_run.add(client_id)
        if lost:
            ev = SessionLost(client_id, self.broker, time.time(), earlier)
            self.m.sessions_lost.labels(client_id).inc()
            log.error(ev.text)
            if self.on_lost is not None:
                self.on_lost(ev)
        return lost

    async def _db(self, call):
        try:
            return await asyncio.wait_for(call, DB_TIMEOUT)
        except (StoreError, asyncio.TimeoutError) as e:
            log.warning("broker sessions: the database did not answer (%s); judging this run's reconnects only",
                        e or type(e).__name__)
            return None


class ConnectProblems:
    """Logs a failed connect once per distinct problem, whichever of the daemon's connections
    (intake, alarm publisher, cluster partitions) meets it; counts every attempt."""

    def __init__(self, metrics: Metrics):
        self.m = metrics
        self._last = ""

    def ok(self, what: str = "intake") -> None:
        if self._last:
            log.info("%s: connected to the broker again", what)
        self._last = ""

    def count(self, e: Exception) -> None:
        """Count a failed connect without logging it (the caller logs its own episodes)."""
        if isinstance(e, BrokerError):  # a connect that failed (not a connection lost later)
            self.m.connect_errors.labels(e.reason).inc()

    def failed(self, e: Exception, retry_in: float, *, what: str = "intake", detail: str = "") -> None:
        self.count(e)
        text = str(e) or type(e).__name__
        if text == self._last:
            log.debug("%s: %s; retrying in %.1fs%s", what, text, retry_in, detail)
            return
        self._last = text
        if isinstance(e, BrokerError) and e.config:
            log.error("%s: %s; retrying (logged again only when it changes)%s", what, text, detail)
        else:
            log.warning("%s: MQTT connection lost or refused (%s); reconnecting in %.1fs%s", what, text, retry_in,
                        detail)
