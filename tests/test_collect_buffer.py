"""The edge collector's store-and-forward buffer: durable, ordered, bounded; and end to end, a broker
outage plus a collector restart lose no reading and store none twice."""
from __future__ import annotations

import asyncio
import os
import re
import signal

import asyncpg
import pytest

from plantwatch.connectors.edge.buffer import Outbox
from plantwatch.connectors.services import MosquittoInstance

from .edge_helpers import CollectProcess, ModbusServer, collect_yaml, eventually, start_daemon


def test_seq_and_order_survive_a_reopen(tmp_path):
    path = tmp_path / "buf.sqlite3"
    with Outbox(path) as box:
        assert [box.append("t", [{"sensor": "G0", "time": k, "value": k}]) for k in range(3)] == [0, 1, 2]
        box.delete([0])
    with Outbox(path) as box:  # as after a restart
        assert [b.seq for b in box.oldest(10)] == [1, 2]
        assert box.oldest(1)[0].readings == [{"sensor": "G0", "time": 1, "value": 1}]
        assert box.append("t", []) == 3  # numbering continues
        box.delete([1, 2, 3])
        assert len(box) == 0
    with Outbox(path) as box:
        assert box.append("t", []) == 4  # even when the buffer was empty


def test_a_full_buffer_drops_the_oldest_and_counts_them(tmp_path, caplog):
    path = tmp_path / "buf.sqlite3"
    with Outbox(path, max_batches=3) as box:
        for k in range(5):
            box.append("t", [{"sensor": "G0", "time": k, "value": k}])
        assert [b.seq for b in box.oldest(10)] == [2, 3, 4]
        assert box.dropped == 2
    assert "dropped the oldest 1 (seq 1..1), 2 dropped in all" in caplog.text
    with Outbox(path, max_batches=3) as box:
        assert box.dropped == 2


SENSORS = [f"id: G{i}, kind: gas, quantity: H2S, unit: ppm, range: [0, 100]" for i in range(4)]
SOURCES = """\
  - type: modbus
    id: panel
    host: 127.0.0.1
    port: {port}
    interval: 0.2
    channels: [{{sensor: G0, address: 0}}, {{sensor: G1, address: 1}}, {{sensor: G2, address: 2}}, {{sensor: G3, address: 3}}]
"""
SUMMARY = re.compile(r"collect: (\d+) readings in (\d+) batches \(seq (\d+)\.\.(\d+)\); (\d+) batches published, "
                     r"(\d+) left in the buffer, (\d+) dropped")


def _summary(log: str) -> tuple[int, ...]:
    found = SUMMARY.findall(log)
    assert found, f"no summary in the collector's log:\n{log}"
    return tuple(int(x) for x in found[-1])


async def _count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM readings")
    finally:
        await conn.close()


async def _broker_down(broker: MosquittoInstance) -> None:
    """SIGTERM (mosquitto saves its queues) and wait until it is gone; start() brings it back."""
    os.kill(broker.pid, signal.SIGTERM)
    while broker.running:
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_no_reading_lost_or_stored_twice_across_a_broker_outage_and_a_collector_restart(
        tmp_path, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    panel = ModbusServer()
    await panel.start()
    await panel.set("holding", 0, [1, 2, 3, 4])
    with MosquittoInstance() as broker:
        d = start_daemon(tmp_path, SENSORS, broker, db, prefix)
        text = collect_yaml(SOURCES.format(port=panel.port), mosquitto=broker, prefix=prefix,
                            buffer=tmp_path / "buf.sqlite3", interval=0.2).replace("flush_grace: 10", "flush_grace: 1")
        first, second = CollectProcess(tmp_path, text, "collect1"), CollectProcess(tmp_path, text, "collect2")
        try:
            await d.wait_connected()
            first.start()
            await eventually(lambda: _at_least(db, 8), "the first readings", on_fail=first.log)

            await _broker_down(broker)
            await asyncio.sleep(1.5)  # readings go on, into the buffer
            assert first.terminate() == 0  # a restart of the collector while the broker is still away
            n1, _, seq0_1, seq1_1, _, left1, dropped1 = _summary(first.log())
            assert left1 > 0 and dropped1 == 0
            second.start()
            await eventually(lambda: _logged(second, "unavailable"), "the restarted collector finds no broker",
                             on_fail=second.log)
            await asyncio.sleep(1.0)
            broker.start()
            await eventually(lambda: _no_backlog(second), "the buffer drained after the broker is back",
                             on_fail=second.log)
            await asyncio.sleep(1.0)
            assert second.terminate() == 0
            n2, _, seq0_2, seq1_2, _, left2, dropped2 = _summary(second.log())
            assert (left2, dropped2) == (0, 0)
            assert seq0_1 == 0 and seq0_2 == seq1_1 + 1  # one sequence across the restart

            produced = n1 + n2
            stored = await eventually(lambda: _exactly(db, produced), f"{produced} readings stored",
                                      on_fail=d.log, timeout=30)
            assert stored == produced
            await asyncio.sleep(1.0)
            assert await _count(db) == produced  # and no more arrive later (none twice)
            gaps = d.metrics().get('plantwatch_sequence_gaps_total{collector="edge-test"}', 0.0)
            assert gaps == 0
            assert d.terminate() == 0
        finally:
            first.kill()
            second.kill()
            d.kill()
            await panel.stop()


async def _at_least(dsn: str, n: int) -> bool:
    return await _count(dsn) >= n


async def _exactly(dsn: str, n: int) -> int | None:
    got = await _count(dsn)
    assert got <= n, f"{got} readings stored, more than the {n} produced"
    return got if got == n else None


async def _no_backlog(c: CollectProcess) -> bool:
    from plantwatch.connectors.edge.buffer import Outbox as _Outbox

    # the collector's own buffer file, read alongside it (sqlite WAL allows a second reader)
    with _Outbox(c.cfg.parent / "buf.sqlite3") as box:
        return len(box) == 0 and "reconnected to MQTT" in c.log()


async def _logged(c: CollectProcess, text: str) -> bool:
    return text in c.log()


async def test_a_stopping_publisher_keeps_unsent_batches_and_retries_with_backoff(tmp_path):
    from plantwatch.connectors.edge.publisher import publish_outbox
    from plantwatch.connectors.mqtt import BrokerAddress
    from plantwatch.connectors.services import free_port

    with Outbox(tmp_path / "buf.sqlite3") as box:
        box.append("plantwatch/s/edge/readings", [{"sensor": "G0", "time": 1.0, "value": 1.0}])
        stop = asyncio.Event()
        stop.set()  # stopping, with no broker listening: flush for the grace period, then give up
        stats = await publish_outbox(box, BrokerAddress("127.0.0.1", free_port()), "edge", client_id=None,
                                     wake=asyncio.Event(), stop=stop, flush_grace=1.5)
        assert len(box) == 1  # kept for the next start
        assert 1 <= stats.errors <= 3  # attempts back off (0.5 s, 1 s) instead of spinning for the grace
