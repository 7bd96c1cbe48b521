"""Backtest sees everything the live daemon sees: declared transfers and robot readings are
replayed, so a backtest of the stored data raises the same alarms as the live daemon did."""
from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import pytest

from plantwatch.connectors.mqtt import BrokerAddress
from plantwatch.connectors.store import Store
from plantwatch.connectors.wire import encode_batch
from plantwatch.daemon.lab.backtest import backtest
from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.service import Daemon, Endpoints

from .helpers import publish_batches
from .test_daemon_security import _config

pytestmark = pytest.mark.slow


async def test_backtest_raises_the_alarms_the_live_daemon_raised(mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    text = _config(prefix, mosquitto, db)
    cfg = load_config_text(text)
    d = Daemon(cfg, Endpoints(BrokerAddress(mosquitto.host, mosquitto.port), db), metrics=Metrics())
    task = asyncio.create_task(d.run())
    await asyncio.wait_for(d.ready.wait(), 20)
    t0 = time.time() - 900
    try:
        # TK-2's draw-off is declared (before its readings, as a shift lead would); TK-1's is not
        await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/secsite/transfers/declared", [json.dumps(
            {"tank": "TK-2", "start": t0 + 290, "end": t0 + 410, "quantity": 10, "unit": "m3"}).encode()])
        fixed = [encode_batch("edge1", k, [{"sensor": s, "time": t0 + k, "value": 50.0 - 0.1 * min(max(k - 300, 0), 100)}
                                           for s in ("TK-1", "TK-2")]) for k in range(500)]
        robot = [encode_batch("robot1", k, [{"sensor": "R-H2S", "time": t0 + k, "x": 55.0 + (k % 40), "y": 20.0,
                                             "value": 9.0 if k == 399 else 1.0 + 0.05 * (k % 3)}]) for k in range(400)]
        await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/secsite/edge1/readings", fixed)
        await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/secsite/robot1/robot", robot)
        conn = await asyncpg.connect(db)
        try:
            for _ in range(200):
                n = await conn.fetchval("SELECT count(*) FROM readings")
                m = await conn.fetchval("SELECT count(*) FROM robot_readings")
                if n == 1000 and m == 400:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            live = {(r["detector_id"], r["tag"]) for r in await conn.fetch(
                "SELECT a.detector_id, s.tag FROM alarms a JOIN sensors s ON s.id = a.sensor_id"
                " WHERE a.raised_at IS NOT NULL")}
            assert await conn.fetchval("SELECT count(*) FROM transfers") == 1
        finally:
            await conn.close()
    finally:
        d.stop.set()
        await task
    assert ("loss", "TK-1") in live and ("robot", "R-H2S") in live and ("loss", "TK-2") not in live, live
    store = await Store.open(db)
    try:
        res = await backtest(store, {"live": cfg}, t0 - 1, time.time() + 1, warmup=0.0)
    finally:
        await store.close()
    replayed = {(a.detector, a.sensor) for a in res.runs[0].activations}
    assert replayed == live, (replayed, live)
    assert res.readings == 1400  # fixed and robot readings


async def test_security_eval_through_broker_database_and_daemon(mosquitto, db):
    """The scenario suite's daemon pass: an undeclared 20 % draw-off within 2 min, declarations in t
    stored, no false alarm before it (28 simulated hours with declared loadings and refills)."""
    from plantwatch.daemon.lab.security_eval_daemon import run_case

    r = await run_case("drawoff", 28.0, 21.0, mosquitto.host, mosquitto.port, db)
    assert r["readings"] == 2 * 28 * 360 and r["declarations"] == 4, r
    assert r["first"] == "unexplained-loss:unexplained_loss" and r["delay_s"] <= 120, r
    assert r["false"] == 0, r
