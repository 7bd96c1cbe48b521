"""Sparkplug B node sessions survive a daemon restart: births (aliases, datatypes, bdSeq) and
the last sequence number are stored in the same transaction as the message that made them, and
restored at start, so what the broker kept for the daemon's persistent session while it was
down (QoS 1) is stored, not dead-lettered as ``sp_no_birth``, and no rebirth is asked for.
Payloads are built with pysparkplug (an independent implementation), through a real Mosquitto
into TimescaleDB, the daemon as a process."""
from __future__ import annotations

import asyncio
import time
import uuid

import aiomqtt
import asyncpg
import pysparkplug as ps
import pytest

from plantwatch.connectors.sparkplug.session import Sessions
from plantwatch.connectors.sparkplug.topic import parse

from .test_sparkplug import DT, EdgeNode, _birth_metrics, _ms, _sparkplug_site, _until


def test_sessions_say_what_to_store_and_restore_it():
    """Birth, data and death each describe their change; a new host restored from them reads
    alias-only data without a rebirth, and its sequence check goes on from the stored seq."""
    ms = _ms()
    a = Sessions()
    births = a.handle(parse("spBv1.0/g/NBIRTH/n"), ps.NBirth(ms, 0, _birth_metrics(ms)).encode(), 0.0)
    assert (births.change.kind, births.change.seq, births.change.bd_seq) == ("nbirth", 0, 0)
    dev = a.handle(parse("spBv1.0/g/DBIRTH/n/d"), ps.DBirth(ms, 1, [ps.Metric(ms, "x", DT.FLOAT, 1.0, alias=7)]).encode(), 0.0)
    assert (dev.change.kind, dev.change.device, dev.change.seq) == ("dbirth", "d", 1)
    data = a.handle(parse("spBv1.0/g/NDATA/n"), ps.NData(ms, 2, [ps.Metric(ms, None, DT.FLOAT, 2.5, alias=9)]).encode(), 0.0)
    assert (data.change.kind, data.change.seq) == ("seq", 2) and data.change.order > dev.change.order > births.change.order

    from plantwatch.connectors.sparkplug.session import StoredNode
    s = a.nodes[("g", "n")]
    b = Sessions()
    b.restore([StoredNode("g", "n", s.bd_seq, s.seq, s.node, dict(s.devices))])
    o = b.handle(parse("spBv1.0/g/DDATA/n/d"), ps.DData(ms, 3, [ps.Metric(ms, None, DT.FLOAT, 4.0, alias=7)]).encode(), 0.0)
    assert (o.refused, o.rebirth, o.gap, [(m.name, m.value) for m in o.metrics]) == (None, False, False, [("x", 4.0)])
    again = b.handle(parse("spBv1.0/g/DDATA/n/d"), ps.DData(ms, 3, [ps.Metric(ms, None, DT.FLOAT, 4.0, alias=7)]).encode(), 0.0)
    assert not again.gap and not again.rebirth  # the same message redelivered is not a gap
    gap = b.handle(parse("spBv1.0/g/NDATA/n"), ps.NData(ms, 9, [ps.Metric(ms, None, DT.FLOAT, 1.0, alias=9)]).encode(), 0.0)
    assert gap.gap and gap.rebirth


async def watch_commands(watcher: aiomqtt.Client, group: str) -> tuple[list[str], asyncio.Task]:
    """The topics of the NCMDs (rebirth requests) sent to the group's nodes, as they come, and
    the task that collects them (cancel it at the end)."""
    await watcher.subscribe(f"spBv1.0/{group}/NCMD/#", qos=1)
    commands: list[str] = []

    async def watch():
        async for m in watcher.messages:
            commands.append(str(m.topic))
    task = asyncio.create_task(watch())
    task.add_done_callback(lambda f: f.cancelled() or f.exception())  # the broker going away at the end
    return commands, task


ROUNDS_DOWN, ROUNDS_UP = 8, 8  # rounds of NDATA + 2 DDATA while the daemon is down, and after it is back


async def test_restart_while_a_node_keeps_publishing_loses_nothing(tmp_path, mosquitto, db):
    group = f"g{uuid.uuid4().hex[:10]}"
    d = _sparkplug_site(tmp_path, mosquitto, db, group)
    d.start()
    conn = await asyncpg.connect(db)
    try:
        await d.wait_connected()
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as watcher, \
                aiomqtt.Client(mosquitto.host, mosquitto.port, max_inflight_messages=1000) as pub:
            commands, watching = await watch_commands(watcher, group)
            node = EdgeNode(pub, group)
            t = round(time.time() - 60, 3)
            await node.births(t, 1.0)
            for i in range(3):
                await node.data(t + 1 + i, 2.0 + i)
            await _until(conn, "SELECT count(*) FROM readings", 7 * 4)
            assert d.terminate() == 0, d.log()
            for i in range(ROUNDS_DOWN):  # the broker keeps these (QoS 1) for the daemon's session
                await node.data(t + 10 + i, 10.0 + i)
            d.start()
            await d.wait_connected()
            for i in range(ROUNDS_UP):
                await node.data(t + 30 + i, 30.0 + i)
                await asyncio.sleep(0.1)
            sent = 3 * (ROUNDS_DOWN + ROUNDS_UP)
            want = 7 * (4 + ROUNDS_DOWN + ROUNDS_UP)
            try:
                await _until(conn, "SELECT count(*) FROM readings", want, timeout=30)
            finally:
                dead = await conn.fetch("SELECT reason, count(*) AS n FROM dead_letters GROUP BY reason")
                print(f"after the restart: {sent} NDATA/DDATA sent, readings stored"
                      f" {await conn.fetchval('SELECT count(*) FROM readings')} of {want},"
                      f" dead letters {[(r['reason'], r['n']) for r in dead]}")
            assert dead == []
            await asyncio.sleep(1.0)
            assert commands == []  # the state was known: no rebirth asked for
            m = d.metrics()
            assert m.get("plantwatch_sparkplug_sessions_restored_total") == 1
            watching.cancel()
        assert d.terminate() == 0, d.log()
    finally:
        await conn.close()
        if d.proc and d.proc.poll() is None:
            d.kill()


async def test_stored_sessions_follow_arrival_order_on_both_databases(any_db):
    """Units commit in parallel: a change written after a newer one does not undo it (an older
    birth, an older seq, a death older than the birth after it); plain PostgreSQL and TimescaleDB."""
    from plantwatch.connectors.sparkplug.session import MetricTable, SessionChange
    from plantwatch.connectors.store import Store

    store = await Store.open(any_db)
    try:
        old, new = MetricTable({1: "a"}, {"a": 9}), MetricTable({2: "b"}, {"b": 10})
        dev = MetricTable({3: "c"}, {"c": 9})
        await store.write(None, sessions=[SessionChange("nbirth", "g", "n", 20, 0, 5, table=new),
                                          SessionChange("dbirth", "g", "n", 21, 1, device="d", table=dev),
                                          SessionChange("seq", "g", "n", 22, 2)])
        # an older unit committing late: its birth, its seq and its death change nothing
        await store.write(None, sessions=[SessionChange("nbirth", "g", "n", 10, 0, 4, table=old),
                                          SessionChange("seq", "g", "n", 11, 7),
                                          SessionChange("ndeath", "g", "n", 12)])
        [s] = await store.sparkplug_sessions(["g"])
        assert (s.bd_seq, s.seq, s.table, s.devices) == (5, 2, new, {"d": dev})
        await store.write(None, sessions=[SessionChange("ddeath", "g", "n", 30, 3, device="d")])
        [s] = await store.sparkplug_sessions(["g"])
        assert (s.seq, s.devices) == (3, {})
        await store.write(None, sessions=[SessionChange("ndeath", "g", "n", 40)])
        assert await store.sparkplug_sessions(["g"]) == []
        # a late seq of the dead session leaves no session behind (no birth: unknown)
        await store.write(None, sessions=[SessionChange("seq", "g", "n", 35, 4)])
        assert await store.sparkplug_sessions(["g"]) == [] and await store.sparkplug_sessions(["other"]) == []
    finally:
        await store.close()
