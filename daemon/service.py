"""The daemon: wires the stages under one ``asyncio.TaskGroup`` and shuts them down in order.

Start order is outputs first (database, writers, alarm publisher), inputs last (MQTT), as in
Telegraf; stop order is the reverse: stop reading MQTT, flush what is pending, let the writers
drain and acknowledge, save detector state, close. A task that crashes cancels its siblings and
the process exits non-zero so that systemd (or the container runtime) restarts it; unacknowledged
messages are redelivered by the broker on restart.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from dataclasses import dataclass


from plantwatch.connectors.alarm_journal import AlarmJournal, JournalInUse
from plantwatch.connectors.errors import StoreError
from plantwatch.connectors.mqtt import BrokerAddress
from plantwatch.connectors.sparkplug.host import HostState
from plantwatch.connectors.store import AlarmWrite, Store

from plantwatch.daemon.ingest.alarm_journal import Journaling, journal_path, replay
from plantwatch.daemon.alarms.publisher import AlarmPublisher
from plantwatch.daemon.alarms.service import AlarmManagement, load_book
from plantwatch.daemon.broker_session import BrokerSessions, ConnectProblems, SessionLost, system_alarm
from plantwatch.daemon.ingest.cluster import ClusterRunner
from plantwatch.daemon.ingest.partitioning import ClusterPartitioning
from plantwatch.daemon.config.model import Config
from plantwatch.daemon.detection import DetectorSet
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.ingest.intake import Intake, IntakeDeps
from plantwatch.connectors.seal import first_whole_slice
from plantwatch.daemon.ingest.seal_digests import SliceDigests
from plantwatch.daemon.ingest.sealing import SealingTask
from plantwatch.daemon.ingest.partitions import instance_client_id
from plantwatch.daemon.exits import GraceExceeded, StartupError
from plantwatch.daemon.ingest.pipeline import Pipeline
from plantwatch.daemon.ingest.site_status import SiteAnnouncer
from plantwatch.daemon.ingest.sparkplug import SparkplugIngest
from plantwatch.daemon.ingest.sparkplug import topics as sparkplug_topics
from plantwatch.daemon.ingest.validate import Registry

log = logging.getLogger("plantwatch")


@dataclass(frozen=True)
class Endpoints:
    broker: BrokerAddress
    dsn: str


def limit_rows(cfg: Config) -> list[tuple[str, str, float | None, float | None, float | None, float | None]]:
    """(sensor, detector, low_low, low, high, high_high) for every limit detector and sensor it watches."""
    rows = []
    for d in cfg.detectors:
        if d.type != "limit" or not d.enabled:
            continue
        p = d.params
        for i in cfg.watched(d):
            rows.append((cfg.sensors[i].id, d.id, p.get("low_low"), p.get("low"), p.get("high"), p.get("high_high")))
    return rows


def open_journal(cfg: Config, dsn: str) -> AlarmJournal:
    """The alarm journal (daemon/ingest/alarm_journal.py); one it cannot open stops the start in one line."""
    path = journal_path(cfg, dsn)
    try:
        return AlarmJournal(path, limit=cfg.alarms.journal_limit)
    except JournalInUse as e:
        raise StartupError(f"alarms.journal_dir: {e}") from None
    except (OSError, sqlite3.Error) as e:
        raise StartupError(f"alarms.journal_dir: cannot open the alarm journal {path}: {e}") from None


def topics(cfg: Config) -> tuple[list[str], str]:
    prefix = cfg.mqtt.topic_prefix if cfg.mqtt else "plantwatch"
    base = f"{prefix}/{cfg.site.id}"
    return [f"{base}/+/readings", f"{base}/+/robot", f"{base}/transfers/declared"], f"{base}/alarms"


class Daemon:
    def __init__(self, cfg: Config, endpoints: Endpoints, *, config_text: str = "", metrics: Metrics | None = None,
                 client_id: str | None = None):
        self.cfg = cfg
        self.ep = endpoints
        self.config_text = config_text
        self.m = metrics or Metrics()
        self.client_id = client_id or (cfg.mqtt.client_id if cfg.mqtt else "plantwatch-daemon")
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.store: Store | None = None
        self.pipeline: Pipeline | None = None
        self.alarm_mgmt: AlarmManagement | None = None
        self.connect_problems = ConnectProblems(self.m)  # a refused connect is logged once, by any connection
        # each instance's own connections carry its instance id (several share mqtt.client_id)
        pub_id = instance_client_id(self.client_id, cfg.cluster, "pub")
        self.alarm_pub = AlarmPublisher(endpoints.broker, client_id=pub_id, base=topics(cfg)[1], site=cfg.site.id,
                                        active=self._active_alarms, metrics=self.m, problems=self.connect_problems)
        self._refits: set[asyncio.Task] = set()
        self.sparkplug: SparkplugIngest | None = None
        self.cluster = None  # ClusterRunner when cfg.cluster is set (several instances share the site)
        self.broker_sessions: BrokerSessions | None = None  # a lost persistent session -> system alarm
        self.journal: AlarmJournal | None = None  # alarm operations decided, not yet committed
        self.seal_digests: SliceDigests | None = None  # committed readings kept for the slice digests
        self.announcer: SiteAnnouncer | None = None  # told a reloaded config (daemon/runtime.py)

    async def run(self) -> None:
        cfg = self.cfg
        self.store = store = await Store.open(self.ep.dsn, connections=(cfg.database.writers if cfg.database else 2) + 2)
        self.broker_sessions = BrokerSessions(store.pool, cfg.site.id, str(self.ep.broker), self.m,
                                              on_lost=self._session_lost)
        try:
            self.journal = open_journal(cfg, self.ep.dsn)
            ids = await store.sync_registry(cfg.site, cfg.sensors)
            await store.sync_limits(limit_rows(cfg), ids)
            digest = None
            if self.config_text:
                from plantwatch.daemon.config.model import config_hash
                digest = config_hash(self.config_text)
                await store.record_config(digest, self.config_text)
            reg = Registry.build(cfg, ids)
            detectors = DetectorSet(cfg)
            restored = detectors.restore(await store.load_detector_states())
            if restored:
                log.info("restored learned state of %d detector(s): %s", len(restored), ", ".join(restored))
            detectors.restart_clocks(time.time())  # nothing was received while the daemon was down
            journaling = Journaling(self.journal, self.m, on_condition=self._journal_condition)
            await replay(journaling, store, self.m)  # what a run stopped during an outage decided
            book = await load_book(cfg, store, reg.db_id, config_hash=digest)  # lifecycle-aware, state as committed
            for sev, n in book.counts_by_severity().items():
                self.m.active_alarms.labels(sev).set(n)
            # several instances share the site: this one reads and writes the partitions it holds
            parts = ClusterPartitioning(cfg, reg.db_id) if cfg.cluster is not None else None
            # slice digests from the committed rows; several instances: the database computes them
            if cfg.record.seal:
                whole_from = await first_whole_slice(store.pool, time.time(), cfg.record.slice_seconds)
                self.seal_digests = SliceDigests(cfg.record.slice_seconds, whole_from, enabled=parts is None)
            self.pipeline = Pipeline(cfg, store, reg, detectors, book, self.m, on_alarms=self._queue_notification,
                                     journal=journaling, publish_wait=cfg.alarms.publish_wait,
                                     partitioning=parts, on_commit=self._committed,
                                     seal_digests=self.seal_digests)
            self.pipeline.restore_sequences(await store.last_sequences())
            self.alarm_mgmt = AlarmManagement(cfg, store, self.m, book, self.pipeline)
            if cfg.sparkplug is not None:
                self.sparkplug = SparkplugIngest(cfg, reg, self.m.registry)
                if parts is None:  # several instances: each partition's nodes when it is taken
                    self.sparkplug.restore(await store.sparkplug_sessions(cfg.sparkplug.groups))
            if parts is not None:
                self.cluster = ClusterRunner(cfg, parts, store, self.ep.dsn, self._intake_deps(), self.client_id)
            n_writers = cfg.database.writers if cfg.database else 2
            async with asyncio.TaskGroup() as tg:
                writers = [tg.create_task(self.pipeline.writer(), name=f"writer-{i}") for i in range(n_writers)]
                alarm_mgmt = tg.create_task(self.alarm_mgmt.run(), name="alarm-management")  # API, clock, webhooks
                # the API's port is bound before any MQTT connection: a busy port stops the start
                # (one line, exit 2) before a session is opened
                await self.alarm_mgmt.listening()
                notifier = tg.create_task(self.alarm_pub.run(), name="alarm-publisher")
                timer = tg.create_task(self._timer(), name="timer")
                stalls = tg.create_task(self.pipeline.watch_stalls(), name="stall-watch")
                sealing = tg.create_task(self._sealing(), name="sealing")  # readings sealed in the audit chain
                status_id = instance_client_id(self.client_id, cfg.cluster, "status")
                self.announcer = SiteAnnouncer(cfg, self.ep.broker, client_id=status_id, ready=self.ready)
                status = tg.create_task(self.announcer.run(), name="site-status")
                if self.cluster is not None:
                    ingest = tg.create_task(self.cluster.run(), name="cluster")
                else:
                    ingest = tg.create_task(self._single_intake().run(self.stop), name="ingest")
                await self.stop.wait()
                grace = cfg.ingest.shutdown_grace
                log.info("stopping: no more intake; flushing and draining (at most %g s)", grace)
                try:
                    async with asyncio.timeout(grace):
                        await self._shut_down(writers, notifier, (timer, stalls, status, sealing), alarm_mgmt, ingest)
                except TimeoutError:
                    raise self._give_up(grace) from None
        finally:
            await store.close()
            if self.journal is not None:
                self.journal.close()

    async def _shut_down(self, writers, notifier, background, alarm_mgmt, ingest) -> None:
        """Stop intake, commit and acknowledge what was received, save state, publish the last
        alarm list (bounded by ``ingest.shutdown_grace`` in :meth:`run`)."""
        # without a cluster, intake ends by itself: it stops reading, lets the writers
        # commit what it received and acknowledges that on the same connection
        for t in (alarm_mgmt, ingest) if self.cluster is not None else (alarm_mgmt,):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self.cluster is None:
            await ingest
        for t in background:  # the clock, the stall watch, the site announcer
            t.cancel()
        await self.pipeline.flush()
        for _ in writers:
            await self.pipeline.units.put(None)
        await asyncio.gather(*writers)
        if self.cluster is not None:
            await self.cluster.finish()  # save each partition's state, release the leases
        else:
            await self._save_state()
        self.alarm_pub.finish()  # publishes what is queued and the final state, then ends
        await notifier

    def _give_up(self, grace: float) -> GraceExceeded:
        """The stop took longer than its grace: say what stays unacknowledged (the broker delivers
        it again to the next run, which stores it once), drop the database connections so that
        nothing waits on them, and end non-zero."""
        n, which = self.pipeline.unacknowledged()
        log.error("stop gave up after ingest.shutdown_grace = %g s (last write error: %s): %d message(s) received"
                  " and not acknowledged%s, plus any the MQTT client held unread; the broker delivers them again"
                  " to the next run; detector state not saved", grace, self.pipeline.last_write_error or "none",
                  n, f" ({which})" if which else "")
        self.store.pool.terminate()
        return GraceExceeded(f"graceful stop exceeded ingest.shutdown_grace ({grace:g} s)")

    # --- stages -----------------------------------------------------------------------------------
    def _intake_deps(self) -> IntakeDeps:
        return IntakeDeps(self.cfg, self.ep.broker, self.pipeline, self.m, self.connect_problems, self.broker_sessions,
                          self.ready, self.sparkplug)

    def _single_intake(self) -> Intake:
        """One instance: one session for the whole site (wire format and Sparkplug B)."""
        sp = self.cfg.sparkplug
        host = HostState(sp.host_id) if sp is not None and sp.host_id else None
        return Intake(self._intake_deps(), client_id=self.client_id,
                      topics=topics(self.cfg)[0] + sparkplug_topics(self.cfg), host=host)

    async def _timer(self) -> None:
        p = self.pipeline
        tick_every, last_tick = 1.0, 0.0
        last_snapshot = time.monotonic()
        last_rollup = 0.0
        await self.mark_unrolled(time.time())
        step = min(self.cfg.ingest.flush_interval / 2, 0.05)
        while True:
            await asyncio.sleep(step)
            now = time.time()
            if now - last_tick >= tick_every:
                last_tick = now
                if p.add_tick(now):  # time-driven changes are waiting: write them now
                    await p.flush()
            if p.due(now):
                await p.flush()
            for watch, job in p.detectors.refit_jobs():
                self._refits.add(asyncio.create_task(self._refit(watch, job)))
            if time.monotonic() - last_snapshot >= self.cfg.state.snapshot_interval:
                last_snapshot = time.monotonic()
                await self._save_state()
            if now - last_rollup >= 10.0:
                last_rollup = now
                await self.refresh_rollups(now)

    async def mark_unrolled(self, now: float) -> None:
        """At start: readings written after the newest rollup (before a crash) become dirty."""
        try:
            await self.store.mark_unrolled(now)
        except Exception as e:  # noqa: BLE001 - counted and logged; readings are stored, only their rollup waits
            self._failed("rollup_mark", e)

    async def refresh_rollups(self, now: float) -> None:
        """Closed minutes that received readings (late ones included), then closed hours. A failed
        round keeps its minutes dirty for the next one (every 10 s)."""
        try:
            await self.store.refresh_dirty(now)
        except Exception as e:  # noqa: BLE001 - counted and logged; the dirty minutes are retried
            self._failed("rollup", e)

    async def _sealing(self) -> None:
        rec = self.cfg.record
        if rec.seal:
            sealer = self.store.sealer(width=rec.slice_seconds, horizon=rec.horizon_seconds,
                                       local=self.seal_digests.take if self.seal_digests is not None else None)
            await SealingTask(sealer, self.store.take_seal_marks, rec, self._failed).run()

    def _failed(self, task: str, e: Exception, what: str = "") -> None:
        """Background work that failed and is retried: counted and logged, never silent."""
        self.m.background_failures.labels(task).inc()
        log.warning("%s%s failed, retried later: %s: %s", task, what, type(e).__name__, e)

    async def _refit(self, watch, job) -> None:
        """Fit a group detector's model in a worker thread; scoring goes on with the old model."""
        from plantwatch.detectors.group import fit_group_model

        try:
            fitted = await asyncio.to_thread(fit_group_model, job)
            watch.detector.install_model(fitted)
        except Exception as e:  # noqa: BLE001 - a failed fit keeps the old model; it is retried
            self._failed("refit", e, f" of {watch.cfg.id}")
            watch.detector.abandon_refit(job.token)
        finally:
            self._refits.discard(asyncio.current_task())

    async def _save_state(self) -> None:
        try:
            if self.cluster is not None:
                await self.cluster.snapshot()
                return
            await self.store.save_detector_states(self.pipeline.detectors.states())
        except Exception as e:  # noqa: BLE001 - a failed snapshot must not stop ingestion; counted and logged
            self.m.background_failures.labels("state_snapshot").inc()
            log.error("saving detector state failed: %s", e)

    def _committed(self, unit) -> None:
        """After a commit: transfer receipts, and a fresh retained active list when the unit
        committed alarm changes (their messages went out when they were decided)."""
        self._transfer_receipts(unit)
        if any(isinstance(op, AlarmWrite) for op in unit.ops):
            self.alarm_pub.active_changed()

    def _transfer_receipts(self, unit) -> None:
        """After a commit: a receipt for each transfer declaration of the unit, stored or refused,
        on ``{prefix}/{site}/transfers/receipts`` (``plantwatch transfer`` waits for it)."""
        declared = topics(self.cfg)[0][2]
        receipts = [{"key": x.key, "status": "stored", "reference": x.reference, "quantity": x.quantity,
                     "unit": x.unit} for x in unit.transfers]
        receipts += [{"key": d.key, "status": "rejected", "reason": d.reason, "detail": d.detail}
                     for d in unit.dead if d.topic == declared]
        topic = topics(self.cfg)[1].rsplit("/", 1)[0] + "/transfers/receipts"
        for r in receipts:
            self.alarm_pub.offer_message(topic, json.dumps(r).encode())

    def _session_lost(self, ev: SessionLost) -> None:
        """The broker lost the intake's session: a system alarm on ``{prefix}/{site}/alarms/system``."""
        self.alarm_pub.offer_message(*system_alarm(ev, topics(self.cfg)[1], self.cfg.site.id))

    def _journal_condition(self, active: bool, text: str) -> None:
        """The alarm journal is full or unwritable (or writable again): a system alarm."""
        self.alarm_pub.offer_message(f"{topics(self.cfg)[1]}/system", json.dumps({
            "site": self.cfg.site.id, "alarm": "alarm_journal_full", "severity": "high", "active": active,
            "time": time.time(), "text": text}).encode())

    def _queue_notification(self, writes: list[AlarmWrite]) -> None:
        self.alarm_mgmt.offer(writes)  # webhooks: own bounded queues, never blocks
        self.alarm_pub.offer(writes)  # MQTT: bounded outbox, kept across broker outages
        if self.alarm_mgmt.book is not None:  # security alarms also on their own topic (daemon/alarms/security_routing.py)
            for topic, payload in self.alarm_mgmt.book.security.messages(writes):
                self.alarm_pub.offer_message(topic, payload)

    async def _active_alarms(self) -> list[dict] | None:
        """The alarms not in state normal, as committed; None while the database does not answer
        within a second (the publisher tries again later; alarm changes do not wait for it)."""
        try:
            return await asyncio.wait_for(self.store.active_alarms(), 1.0)
        except (StoreError, asyncio.TimeoutError) as e:
            log.debug("active alarm list: the database did not answer (%s)", e or type(e).__name__)
            return None
