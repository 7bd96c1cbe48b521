"""What the fault runs watch while faults happen: alarm changes on MQTT and how fresh the stored
readings are. Both survive the faults they watch (broker restarts, a stopped or frozen database)."""
from __future__ import annotations

import asyncio
import json
import logging
import time

import aiomqtt

from plantwatch.connectors.rig_db import QUERY_ERRORS, RigDb

log = logging.getLogger(__name__)

#: what a query of a database that is stopped, frozen or restarting raises
DB_ERRORS = QUERY_ERRORS


class AlarmWatch:
    """Every message on ``{prefix}/{site}/alarms/changes`` with the wall time it arrived.

    A persistent session (fixed client id, QoS 1): what is published while this subscriber
    reconnects after a broker restart is delivered when it is back."""

    def __init__(self, host: str, port: int, topic: str, client_id: str):
        self.host, self.port, self.topic, self.client_id = host, port, topic, client_id
        self.changes: list[tuple[float, dict]] = []
        self.reconnects = 0
        self.undecodable = 0
        self.ready = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port, identifier=self.client_id, clean_session=False,
                                          keepalive=10, timeout=5) as c:
                    await c.subscribe(self.topic, qos=1)
                    self.ready.set()
                    async for m in c.messages:
                        now = time.time()
                        try:
                            self.changes.append((now, json.loads(m.payload)))
                        except ValueError:
                            self.undecodable += 1
            except aiomqtt.MqttError as e:
                self.reconnects += 1
                log.debug("alarm watch: %s; reconnecting", e)
                await asyncio.sleep(0.2)


class Freshness:
    """How far behind the store is: ``now`` minus the newest stored reading of the probe sensor
    that is furthest behind (one probe per collector), polled every ``every`` seconds."""

    def __init__(self, dsn: str, probe_ids: list[int], *, every: float = 0.25, timeout: float = 2.0):
        self.dsn = dsn
        self.probe_ids = probe_ids
        self.every = every
        self.timeout = timeout
        self.newest: float | None = None
        self.errors = 0

    def lag(self) -> float:
        return float("inf") if self.newest is None else time.time() - self.newest

    async def run(self) -> None:
        db: RigDb | None = None
        while True:
            try:
                if db is None:
                    db = await RigDb.connect(self.dsn, timeout=self.timeout)
                t = await asyncio.wait_for(db.newest_of(self.probe_ids), self.timeout)
                if t is not None:
                    self.newest = t
            except DB_ERRORS:
                self.errors += 1
                if db is not None:
                    db.terminate()
                    db = None
            await asyncio.sleep(self.every)

    async def until_fresh(self, limit: float, timeout: float, *, after: float, hold: float = 0.5) -> float | None:
        """Wall time at which every probe had a reading published after ``after`` stored and the
        lag came down to ``limit`` and stayed there ``hold`` seconds; None if not within ``timeout``."""
        end = time.monotonic() + timeout
        since: float | None = None
        while time.monotonic() < end:
            if self.newest is not None and self.newest >= after and self.lag() <= limit:
                if since is None:
                    since = time.time()
                if time.time() - since >= hold:
                    return since
            else:
                since = None
            await asyncio.sleep(self.every / 2)
        return None


async def drain(admin_dsn: str, ledger, timeout: float = 300.0, still: float = 15.0) -> int:
    """Wait until the database holds as many readings of the run as the broker acknowledged, or
    the count stops moving for ``still`` seconds."""
    want = int(ledger.acked.sum()) * ledger.per_collector
    async with await RigDb.connect(admin_dsn) as db:
        end = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < end:
            n = await db.count("readings")
            if n >= want:
                return n
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since > still:
                return n
            await asyncio.sleep(1.0)
        return last
