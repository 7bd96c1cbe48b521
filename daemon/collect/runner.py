"""``plantwatch collect``: an edge collector reading plant equipment into wire format v1.

Tasks (one asyncio TaskGroup): one per source (Modbus device, OPC UA server, ...), each
supervised so that an unexpected error restarts that source alone; a batcher that gathers the
sources' readings every ``batch.interval`` seconds into batches in the store-and-forward buffer;
and the publisher that drains the buffer to the broker. SIGTERM/SIGINT stop the sources, the
batcher puts what it holds into the buffer, and the publisher keeps flushing for
``buffer.flush_grace`` seconds; whatever is still unsent stays on disk for the next start.

Batches are published only once a daemon has announced the collector's site and collector
(:mod:`.collect_watch`); ``--site FILE`` compares the channels with the site config before anything
runs (:mod:`.collect_site`).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from plantwatch.connectors.edge import SOURCES
from plantwatch.connectors.edge.buffer import Outbox
from plantwatch.connectors.edge.publisher import PublishStats, publish_outbox
from plantwatch.connectors.edge.sources import CollectMetrics, Emit, Reading, Source, sleep_or_stop
from plantwatch.connectors.mqtt import BrokerAddress
from plantwatch.connectors.wire import topic as wire_topic

from plantwatch.daemon.collect.config import CollectConfig
from plantwatch.daemon.metrics import serve_registry
from plantwatch.daemon.collect.watch import SiteWatch
from plantwatch.daemon.config.loader import Located

log = logging.getLogger("plantwatch.collect")


@dataclass
class CollectSummary:
    readings: int = 0  # readings put into the buffer by this run
    batches: int = 0  # batches put into the buffer by this run
    first_seq: int | None = None
    last_seq: int | None = None
    published: int = 0  # batches acknowledged by the broker in this run
    buffered: int = 0  # batches left in the buffer at exit
    dropped: int = 0  # batches dropped from a full buffer (buffer file's whole life)


class Batcher:
    """Gathers readings from every source and puts them into the buffer as batches."""

    def __init__(self, outbox: Outbox, topic: str, max_readings: int, wake: asyncio.Event, metrics: CollectMetrics,
                 summary: CollectSummary):
        self.outbox, self.topic, self.max_readings = outbox, topic, max_readings
        self.wake, self.m, self.summary = wake, metrics, summary
        self.pending: list[Reading] = []

    def add(self, readings: list[Reading]) -> None:
        self.pending.extend(readings)
        if len(self.pending) >= self.max_readings:
            self.flush()

    def flush(self) -> None:
        while self.pending:
            chunk, self.pending = self.pending[:self.max_readings], self.pending[self.max_readings:]
            seq = self.outbox.append(self.topic, chunk)
            s = self.summary
            s.batches += 1
            s.readings += len(chunk)
            s.first_seq = seq if s.first_seq is None else s.first_seq
            s.last_seq = seq
            self.m.batches.inc()
        self.m.buffered.set(len(self.outbox))
        self.m.dropped.set(self.outbox.dropped)
        self.wake.set()

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(stop, interval):
            self.flush()
        self.flush()


async def supervise(source: Source, name: str, emit: Emit, stop: asyncio.Event, metrics: CollectMetrics) -> None:
    """Run one source until ``stop``; an error it did not handle restarts it (after a pause), alone."""
    while not stop.is_set():
        try:
            await source.run(emit, stop)
        except Exception:  # a defect in one source must not stop the others
            metrics.errors.labels(name).inc()
            log.exception("source %s failed; restarting it in 5 s", name)
            await sleep_or_stop(stop, 5.0)


async def run_collector(cfg: CollectConfig, stop: asyncio.Event, metrics: CollectMetrics | None = None,
                        located: Located | None = None) -> CollectSummary:
    m = metrics or CollectMetrics()
    watch = SiteWatch(cfg, m, located)
    summary = CollectSummary()
    mc = cfg.metrics
    server = None
    if mc.port is not None:
        server = serve_registry(m.registry, mc.host, mc.port, tls=mc.tls.settings() if mc.tls else None,
                                username=mc.basic_auth.username if mc.basic_auth else None,
                                password_sha256=mc.basic_auth.digest() if mc.basic_auth else None)
    try:
        return await _collect(cfg, stop, m, summary, watch)
    finally:
        if server is not None:
            await asyncio.to_thread(server.shutdown)
            server.server_close()


async def _collect(cfg: CollectConfig, stop: asyncio.Event, m: CollectMetrics, summary: CollectSummary,
                   watch: SiteWatch) -> CollectSummary:
    mq = cfg.mqtt
    broker = BrokerAddress(mq.host, mq.port, mq.username, mq.password or os.environ.get("PLANTWATCH_MQTT_PASSWORD"),
                           mq.tls.settings() if mq.tls else None)
    sources = [(s.id, SOURCES[s.type](s, m)) for s in cfg.sources]
    with Outbox(cfg.buffer.path, cfg.buffer.max_batches) as outbox:
        if len(outbox):
            log.info("%d batches from an earlier run are waiting in %s", len(outbox), outbox.path)
        wake = asyncio.Event()
        flushed = asyncio.Event()  # set once the batcher has put its last readings into the buffer
        batcher = Batcher(outbox, wire_topic(mq.topic_prefix, cfg.site, cfg.collector, "readings"),
                          cfg.batch.max_readings, wake, m, summary)
        pstats = PublishStats()

        async def batch() -> None:
            try:
                await batcher.run(cfg.batch.interval, stop)
            finally:
                flushed.set()

        async def publish() -> None:
            await publish_outbox(outbox, broker, cfg.collector, client_id=mq.client_id or f"plantwatch-collect-{cfg.collector}",
                                 wake=wake, stop=flushed, flush_grace=cfg.buffer.flush_grace, stats=pstats,
                                 on_ack=lambda n: (m.published.inc(n), m.buffered.set(len(outbox))),
                                 gate=watch.gate, subscribe=watch.topics, on_message=watch.on_message,
                                 topic=batcher.topic)

        log.info("collector %s of site %s: %d sources -> %s/%s, buffer %s", cfg.collector, cfg.site,
                 len(sources), broker, batcher.topic, outbox.path)
        async with asyncio.TaskGroup() as tg:
            for name, src in sources:
                tg.create_task(supervise(src, name, batcher.add, stop, m), name=f"source-{name}")
            tg.create_task(batch(), name="batcher")
            tg.create_task(publish(), name="publisher")
            tg.create_task(watch.run(stop, outbox), name="site-watch")
        batcher.flush()  # readings a source delivered while shutting down wait in the buffer for the next start
        summary.published = pstats.published
        summary.buffered = len(outbox)
        summary.dropped = outbox.dropped
    return summary


def main(config_path: str | Path, site_path: str | Path | None = None) -> int:
    """Run until SIGTERM/SIGINT (a second signal exits at once). Exit code 2: bad config, or a
    collect config that disagrees with the site config ``site_path``."""
    from plantwatch.daemon.collect.config import load_collect_config_located
    from plantwatch.daemon.collect.site import check_against_site
    from plantwatch.daemon.config.model import ConfigError

    # their per-retry messages and tracebacks; ours say it once per state change
    for noisy, level in (("asyncua", logging.ERROR), ("asyncua.client.ua_session", logging.CRITICAL),
                         ("pymodbus", logging.ERROR)):
        logging.getLogger(noisy).setLevel(level)
    try:
        cfg, located = load_collect_config_located(config_path)
        if site_path is not None:
            for note in check_against_site(cfg, located, str(site_path)):
                log.warning("%s", note)
        for module in sorted({m for s in cfg.sources for m in s.libraries()}):
            __import__(module)
    except ConfigError as e:
        print(e)
        return 2
    except ModuleNotFoundError as e:
        print(f"plantwatch collect needs the edge extra: pip install 'plantwatch[edge]' ({e})")
        return 2

    async def go() -> CollectSummary:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(sig: int) -> None:
            if stop.is_set():
                os._exit(130)
            log.warning("signal %d: stopping; flushing the buffer for up to %g s (again to exit now)", sig,
                        cfg.buffer.flush_grace)
            stop.set()

        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, on_signal, s)
        return await run_collector(cfg, stop, located=located)

    try:
        s = asyncio.run(go())
    except Exception as e:  # a crashed task: exit non-zero so the service manager restarts us
        for x in (e.exceptions if isinstance(e, BaseExceptionGroup) else [e]):
            log.critical("stopped by %s: %s", type(x).__name__, x, exc_info=x)
        return 1
    log.info("collect: %d readings in %d batches (seq %s..%s); %d batches published, %d left in the buffer, "
                "%d dropped from a full buffer", s.readings, s.batches, s.first_seq, s.last_seq, s.published,
                s.buffered, s.dropped)
    return 0
