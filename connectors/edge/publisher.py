"""Drains the store-and-forward buffer to the broker: QoS 1, oldest first, delete after PUBACK.

aiomqtt does not reconnect by itself, so the loop does: connect, send what the buffer holds (up to
``inflight`` batches at a time, each awaiting its PUBACK), and on ``MqttError`` wait (backing off
up to ``max_backoff``) and connect again. A batch whose PUBACK did not arrive stays in the buffer
and is sent again (at-least-once; the daemon's idempotent write stores a reading once).
``sent`` is stamped at each sending.

``topic`` (when given) is where every batch goes, whatever topic it was buffered under: batches
kept while the collector was misrouted (another site or prefix) go where its corrected config says.

With a ``gate``, batches are published only while it is set (the daemon of the site has announced
itself, see ``daemon/collect/watch.py``); until then they stay in the buffer, also at shutdown. The
same connection subscribes to ``subscribe`` (QoS 1) and hands each message to ``on_message``.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable

import aiomqtt

from plantwatch.connectors.mqtt import BrokerAddress, BrokerError, connected
from plantwatch.connectors.wire import encode_batch

from .buffer import Outbox

log = logging.getLogger("plantwatch.collect.publisher")


@dataclass
class PublishStats:
    published: int = 0  # batches acknowledged by the broker
    readings: int = 0  # readings in acknowledged batches
    connects: int = 0
    errors: int = 0


async def publish_outbox(outbox: Outbox, broker: BrokerAddress, collector: str, *, client_id: str | None,
                         wake: asyncio.Event, stop: asyncio.Event, flush_grace: float = 5.0, inflight: int = 10,
                         timeout: float = 5.0, max_backoff: float = 5.0,
                         stats: PublishStats | None = None,
                         on_ack: Callable[[int], object] | None = None, gate: asyncio.Event | None = None,
                         subscribe: tuple[str, ...] = (),
                         on_message: Callable[[str, bytes], object] | None = None,
                         topic: str | None = None) -> PublishStats:
    """Publish until ``stop`` is set, then keep flushing for up to ``flush_grace`` seconds.

    ``wake`` is set by whoever appends to the buffer. What is still unsent at the end stays in
    the buffer for the next run.
    """
    stats = stats if stats is not None else PublishStats()
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    backoff = 0.5
    healthy = True
    last_problem = ""  # logged once, again only when it changes

    def out_of_time() -> bool:
        nonlocal deadline
        if not stop.is_set():
            return False
        if deadline is None:
            deadline = loop.time() + flush_grace
        return loop.time() >= deadline or len(outbox) == 0

    while not out_of_time():
        try:
            async with asyncio.timeout(None) as guard:
                async with connected(broker, identifier=client_id, keepalive=15, timeout=timeout) as client:
                    stats.connects += 1
                    if not healthy:
                        log.info("reconnected to MQTT %s:%s; %d batches buffered", broker.host, broker.port, len(outbox))
                    healthy, backoff, last_problem = True, 0.5, ""
                    reader = await _start_reader(client, subscribe, on_message)
                    try:
                        await _drain(client, outbox, collector, stop, wake, gate, inflight, timeout, stats, on_ack,
                                     out_of_time, lambda: guard.reschedule(deadline), topic)
                    finally:
                        if reader is not None:
                            reader.cancel()
            break  # stopped, and flushed what it could
        except (aiomqtt.MqttError, TimeoutError) as e:
            if out_of_time():  # the flush grace ran out (the guard's TimeoutError) or the broker went away
                break
            stats.errors += 1
            problem = str(e) if isinstance(e, BrokerError) else f"MQTT {broker.host}:{broker.port} unavailable ({e or type(e).__name__})"
            if problem != last_problem:
                if isinstance(e, BrokerError) and e.config:
                    log.error("%s; buffering (%d batches) and retrying", problem, len(outbox))
                else:
                    log.warning("%s; buffering (%d batches) and retrying", problem, len(outbox))
            healthy, last_problem = False, problem
            if stop.is_set():  # flushing: retry within what is left of the grace, not in a tight loop
                await asyncio.sleep(min(backoff, max(0.0, deadline - loop.time())))
            else:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                except TimeoutError:
                    pass
            backoff = min(backoff * 2, max_backoff)
    if len(outbox):
        log.warning("stopping with %d batches still buffered in %s; they go out on the next start%s", len(outbox),
                    outbox.path, "" if gate is None or gate.is_set() else " (no daemon has announced this site and collector)")
    return stats


async def _start_reader(client: aiomqtt.Client, subscribe: tuple[str, ...],
                        on_message: Callable[[str, bytes], object] | None) -> asyncio.Task | None:
    if not subscribe or on_message is None:
        return None
    for t in subscribe:
        await client.subscribe(t, qos=1)

    async def read() -> None:
        try:
            async for m in client.messages:
                payload = m.payload if isinstance(m.payload, (bytes, bytearray)) else str(m.payload or "").encode()
                on_message(str(m.topic), bytes(payload))
        except aiomqtt.MqttError:  # the connection is gone: the publishing side notices and reconnects
            return

    return asyncio.create_task(read(), name="collect-status-reader")


async def _wait_any(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _drain(client: aiomqtt.Client, outbox: Outbox, collector: str, stop: asyncio.Event, wake: asyncio.Event,
                 gate: asyncio.Event | None, inflight: int, timeout: float, stats: PublishStats,
                 on_ack: Callable[[int], object] | None, out_of_time: Callable[[], bool],
                 reschedule: Callable[[], None], topic: str | None) -> None:
    """Publish what the buffer holds until ``stop`` (and the buffer is empty or the grace is over)."""
    while True:
        if stop.is_set():
            out_of_time()
            reschedule()
        if gate is not None and not gate.is_set():
            if stop.is_set():
                return  # no daemon heard from: everything stays in the buffer for the next start
            await _wait_any(gate, stop)
            continue
        head = outbox.oldest(inflight)
        if not head:
            if stop.is_set():
                return
            wake.clear()
            await _wait_any(wake, stop)
            continue
        now = round(time.time(), 3)
        results = await asyncio.gather(
            *(client.publish(topic or b.topic, encode_batch(collector, b.seq, b.readings, sent=now), qos=1,
                             timeout=timeout) for b in head), return_exceptions=True)
        acked = [b for b, r in zip(head, results) if not isinstance(r, BaseException)]
        outbox.delete([b.seq for b in acked])
        stats.published += len(acked)
        stats.readings += sum(len(b.readings) for b in acked)
        if on_ack is not None and acked:
            on_ack(len(acked))
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            raise failed
