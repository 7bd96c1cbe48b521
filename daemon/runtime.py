"""Start what the config names (or the embedded broker and database when it names none), the
metrics endpoint, and the daemon; tell systemd it is ready and alive (sd_notify), and reload its
config on request (SIGHUP, ``plantwatch config apply``) without a restart."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiomqtt
import numpy as np
from threadpoolctl import threadpool_limits

from plantwatch.connectors.mqtt import BrokerAddress, Publisher
from plantwatch.connectors.systemd_notify import notify, watchdog_interval

from plantwatch.daemon.config import reload as reloading
from plantwatch.daemon.config.model import Config
from plantwatch.daemon.alarms.lifecycle import ManagedAlarmBook
from plantwatch.daemon.exits import StartupError
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.config.tls import dsn_sslmode, is_loopback
from plantwatch.daemon.detection import DetectorSet
from plantwatch.daemon.ingest.site_status import announcements
from plantwatch.daemon.ingest.validate import Registry
from plantwatch.daemon.service import Daemon, Endpoints, limit_rows

log = logging.getLogger("plantwatch")


def one_blas_thread() -> None:
    """Run BLAS (numpy's linear algebra: the group detectors' refits, PCA, pyod models) on one
    thread. Their matrices are small (tens of members): extra BLAS threads only wait for each
    other, and on a busy machine that turned a 0.4 ms refit into 12-50 ms."""
    threadpool_limits(limits=1, user_api="blas")


class DaemonHandle:
    def __init__(self, cfg: Config, *, config_text: str = "", metrics: Metrics | None = None,
                 config_path: str | Path | None = None):
        self.cfg = cfg
        self.config_text = config_text
        self.config_path = config_path
        self.metrics = metrics or Metrics()
        self.daemon: Daemon | None = None
        self._stop_requested = False
        self._reloading = asyncio.Lock()
        self._notify_failed = False
        self._tasks: set[asyncio.Task] = set()

    def request_stop(self) -> None:
        self._stop_requested = True
        self._notify("STOPPING=1")
        if self.daemon is not None:
            self.daemon.stop.set()

    async def run(self) -> None:
        cfg = self.cfg
        one_blas_thread()
        async with contextlib.AsyncExitStack() as stack:
            broker, dsn = await open_endpoints(cfg, stack)
            if cfg.metrics.port:
                try:
                    server = self.metrics.serve(cfg.metrics)
                except OSError as e:
                    raise StartupError(f"metrics: cannot listen on {cfg.metrics.host}:{cfg.metrics.port}:"
                                       f" {e.strerror or e}") from None
                stack.callback(server.shutdown)
                log.info("metrics on %s://%s:%d/metrics%s", "https" if cfg.metrics.tls else "http", cfg.metrics.host,
                         cfg.metrics.port, " (basic authentication)" if cfg.metrics.basic_auth else "")
            self.daemon = Daemon(cfg, Endpoints(broker, dsn), config_text=self.config_text, metrics=self.metrics)
            if self._stop_requested:
                self.daemon.stop.set()
            if self.config_path is not None:
                self._write_pid(stack)
            alive = asyncio.create_task(self._alive(self.daemon), name="sd-notify")
            stack.callback(alive.cancel)
            await self.daemon.run()

    # --- systemd -----------------------------------------------------------------------------
    def _notify(self, *fields: str) -> None:
        try:
            notify(*fields)
        except OSError as e:
            if not self._notify_failed:
                log.warning("cannot notify systemd (NOTIFY_SOCKET): %s", e)
            self._notify_failed = True

    async def _alive(self, daemon: Daemon) -> None:
        """READY=1 once the intake is subscribed; then WATCHDOG=1 every half WatchdogSec for as
        long as this event loop runs (a loop blocked or dead stops them, and systemd restarts the
        service). A database outage does not stop them: a restart would not help it, and the
        broker keeps what is not acknowledged (docs/outages.md)."""
        await daemon.ready.wait()
        self._notify("READY=1", f"STATUS=ingesting site {self.cfg.site.id}", f"MAINPID={os.getpid()}")
        every = watchdog_interval()
        while every is not None:
            self._notify("WATCHDOG=1")
            await asyncio.sleep(every)

    def _write_pid(self, stack: contextlib.AsyncExitStack) -> None:
        path = reloading.pid_path(self.cfg)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{os.getpid()}\n")
        except OSError as e:
            log.warning("cannot write %s (plantwatch config apply finds the daemon there): %s", path, e)
            return
        stack.callback(path.unlink, missing_ok=True)

    # --- reload ------------------------------------------------------------------------------
    async def reload(self, path: str | Path | None = None) -> tuple[bool, str]:
        """Check the config file again and apply it (SIGHUP); refused as a whole when it does not
        pass its checks or changes what needs a restart. Returns (applied, message)."""
        async with self._reloading:
            path = path or self.config_path
            self._notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}", "STATUS=reloading")
            ok, message, digest = False, "refused: the reload failed", None
            try:
                ok, message, digest = await self._reload(path)
            except Exception as e:  # a fault of the reload itself: logged with its traceback, the daemon runs on
                log.exception("config reload failed")
                message = f"failed: {type(e).__name__}: {e} (the daemon runs on; restart it to be sure of its config)"
            finally:
                (log.warning if ok else log.error)("config reload: %s", message)
                try:  # written before READY=1: whoever waits for one finds the other
                    reloading.write_outcome(self.cfg, digest, ok, message)
                except OSError as e:
                    log.warning("cannot write the reload outcome for plantwatch config apply: %s", e)
                if self.daemon is not None and self.daemon.ready.is_set():  # never READY before the start is
                    self._notify("READY=1", f"STATUS=ingesting site {self.cfg.site.id}")
            return ok, message

    async def _reload(self, path) -> tuple[bool, str, str | None]:
        d = self.daemon
        if path is None or d is None or d.pipeline is None or not d.ready.is_set():
            return False, "refused: the daemon is still starting (or has no config file); nothing was applied", None
        if d.cluster is not None or d.sparkplug is not None:
            return False, "refused: a reload with cluster or sparkplug needs a restart; nothing was applied", None
        try:
            cand = reloading.candidate(path, self.cfg)
        except reloading.ReloadRefused as e:
            return False, f"refused: {e}", None
        new = cand.cfg
        try:  # what the swap below builds, built first: a failure here leaves everything as it was
            detectors = DetectorSet(new)
            ManagedAlarmBook(np.zeros(len(new.sensors), dtype=np.int32), new)
        except Exception as e:  # noqa: BLE001 - the refusal says it (log and config apply's outcome)
            return False, f"refused: {path}: {type(e).__name__}: {e}; nothing was applied", None
        try:
            ids = await d.store.sync_registry(new.site, new.sensors)
            await d.store.sync_limits(limit_rows(new), ids)
            await d.store.record_config(cand.digest, cand.text)
        except Exception as e:  # noqa: BLE001 - the refusal says it (log and config apply's outcome)
            return False, f"refused: the database did not take the new config ({type(e).__name__}: {e})", None
        reg = Registry.build(new, ids)
        p = d.pipeline
        await p.flush()
        while p.due(math.inf):  # what arrived meanwhile was validated against the old registry
            await p.flush()
        # from here to the end: no await, so no message is read in between
        carried = _carry_detectors(p.detectors, detectors, self.cfg, new)
        _reconfigure_book(d.alarm_mgmt.book, reg, new, cand.digest)
        p.cfg, p.reg, p.detectors = new, reg, detectors
        d.cfg = d.alarm_mgmt.cfg = self.cfg = new
        d.config_text = self.config_text = cand.text
        if d.announcer is not None:  # collectors of added sensors wait for their announcement
            d.announcer.cfg = new
            task = asyncio.get_running_loop().create_task(_announce(new, d.ep.broker, d.announcer.client_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True, (f"applied {path} (config {cand.digest[:12]}): {len(new.sensors)} sensors, {len(new.detectors)}"
                      f" detectors ({carried} kept their learned state); active alarms kept"), cand.digest


def _reconfigure_book(book: ManagedAlarmBook, reg: Registry, cfg: Config, digest: str) -> None:
    """The same book (the API, the pipeline and alarm management hold it) made from the new config,
    with every alarm's state, the floods and the open incidents kept."""
    state = (book.alarms, book.floods, book.incidents)
    ManagedAlarmBook.__init__(book, reg.db_id, cfg, config_hash=digest, clock=book.clock)
    book.alarms, book.floods, book.incidents = state


async def _announce(cfg: Config, broker: BrokerAddress, client_id: str) -> None:
    """The site's announcements again, at once (the announcer itself repeats them only after a
    reconnection)."""
    try:
        async with Publisher(broker, client_id=f"{client_id}-reload") as pub:
            for topic, payload in announcements(cfg):
                await pub.publish(topic, payload, retain=True)
    except aiomqtt.MqttError as e:
        log.warning("announcing the reloaded site on MQTT: %s (announced at the next reconnection)", e)


def _carry_detectors(old: DetectorSet, new: DetectorSet, old_cfg: Config, new_cfg: Config) -> int:
    """Put what ``old`` learned into ``new``: detectors unchanged as they are, detectors with the
    same parameters over a changed sensor list per sensor; each sensor's newest reading time by
    its id. Detectors that start fresh start their clocks now. Returns how many kept state."""
    fingerprints = {w.fingerprint for w in [*new.watches, *new.compositions]} | {new.sensors_fingerprint()}
    saved = {wid: (fp, st) for wid, fp, st in old.states() if fp in fingerprints}  # the others: below
    kept = set(new.restore(saved))
    before = {w.cfg.id: w for w in old.watches}
    for w in new.watches:
        o = before.get(w.cfg.id)
        if w.cfg.id in kept or o is None or o.description != w.description:
            continue
        old_ids = [old_cfg.sensors[c].id for c in o.cols]
        new_ids = [new_cfg.sensors[c].id for c in w.cols]
        try:
            w.set_state(reloading.carry_rows(o.get_state(), w.get_state(), old_ids, new_ids))
            kept.add(w.cfg.id)
        except (KeyError, ValueError, IndexError) as e:
            log.warning("detector %s: learned state not carried over (%s); starting fresh", w.cfg.id, e)
    position = {s.id: i for i, s in enumerate(old_cfg.sensors)}
    for j, s in enumerate(new_cfg.sensors):
        if s.id in position:
            new.last_t[j] = old.last_t[position[s.id]]
    now = time.time()
    for w in new.watches:
        if w.cfg.id not in kept:
            w.detector.restart_clock(now)
    return len(kept)


async def open_endpoints(cfg: Config, stack: contextlib.AsyncExitStack) -> tuple[BrokerAddress, str]:
    """The configured broker and database, or embedded ones in ``state.data_dir``."""
    data = Path(cfg.state.data_dir)
    if cfg.mqtt is not None:
        # a password in the environment keeps it out of the config file
        password = cfg.mqtt.password or os.environ.get("PLANTWATCH_MQTT_PASSWORD")
        tls = cfg.mqtt.tls.settings() if cfg.mqtt.tls else None
        broker = BrokerAddress(cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.username, password, tls)
        if tls is None and not is_loopback(cfg.mqtt.host):
            log.warning("MQTT to %s:%d without TLS: the broker's password and every reading travel in clear"
                        " (set mqtt.tls, docs/tls.md)", cfg.mqtt.host, cfg.mqtt.port)
    else:
        from plantwatch.connectors.embedded import EmbeddedBroker

        b = await stack.enter_async_context(EmbeddedBroker())
        broker = BrokerAddress(b.host, b.port)
        log.info("no mqtt configured: embedded broker on %s:%d", b.host, b.port)
    if cfg.database is not None:
        dsn = cfg.database.url
        host = urlsplit(dsn).hostname or ""
        if dsn_sslmode(dsn) not in ("verify-full", "verify-ca") and host and not host.startswith("/") \
                and not is_loopback(host):
            log.warning("database %s without verified TLS (sslmode %s): set database.tls (docs/tls.md)", host,
                        dsn_sslmode(dsn) or "prefer")
    else:
        from plantwatch.connectors.embedded import EmbeddedPostgres

        pg = await stack.enter_async_context(EmbeddedPostgres(data / "pgdata"))
        dsn = pg.dsn
        log.info("no database configured: embedded PostgreSQL in %s", data / "pgdata")
    return broker, dsn


def run_with_services(cfg: Config, *, config_text: str = "", config_path: str | Path | None = None) -> DaemonHandle:
    return DaemonHandle(cfg, config_text=config_text, config_path=config_path)
