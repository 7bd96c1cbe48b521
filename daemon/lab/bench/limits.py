"""Limits of this machine, measured in the same run: the broker's raw rate and the database's
raw COPY rate into the same readings table."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import msgspec
import numpy as np

from plantwatch.connectors import pgcopy
from plantwatch.connectors.rig_db import RigDb
from plantwatch.connectors.store import Store

from plantwatch.daemon.lab.bench.env import SITE, CpuMeter, Services, _tag, base_value
from plantwatch.daemon.lab.bench.load import LoadSpec, Publisher


def _messages(n_sensors: int, n_msgs: int, per_message: int) -> list[bytes]:
    t = time.time()
    out = []
    k = 0
    for m in range(n_msgs):
        rs = []
        for _ in range(per_message):
            i = k % n_sensors
            rs.append({"sensor": _tag(i), "time": round(t + k * 1e-5, 6), "value": base_value(i)})
            k += 1
        out.append(msgspec.json.encode({"v": 1, "collector": "edge000", "seq": m, "readings": rs, "sent": t}))
    return out


async def broker_raw(svc: Services, *, n_msgs: int, per_message: int = 100, n_sensors: int = 50_000) -> dict:
    """QoS 1 through the broker with the C clients (mosquitto_pub -l | broker | mosquitto_sub -C),
    or a lean Python (paho) publisher and subscriber when the C clients are not installed."""
    msgs = _messages(n_sensors, n_msgs, per_message)
    size = sum(len(m) for m in msgs) / len(msgs)
    topic = f"raw{uuid.uuid4().hex[:6]}/{SITE}/edge000/readings"
    pub_bin, sub_bin = shutil.which("mosquitto_pub"), shutil.which("mosquitto_sub")
    meter = CpuMeter(svc)
    if pub_bin and sub_bin:
        client = "mosquitto_pub/mosquitto_sub (C)"
        with tempfile.NamedTemporaryFile("wb", suffix=".lines", delete=False) as f:
            f.write(b"\n".join(msgs) + b"\n")
            path = f.name
        sub = subprocess.Popen([sub_bin, "-h", svc.broker.host, "-p", str(svc.broker.port), "-t", topic, "-q", "1",
                                "-C", str(n_msgs), "-i", f"rawsub-{uuid.uuid4().hex[:6]}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        await asyncio.sleep(0.5)  # subscribed
        t0 = time.perf_counter()
        with open(path, "rb") as stdin:
            pub = subprocess.Popen([pub_bin, "-h", svc.broker.host, "-p", str(svc.broker.port), "-t", topic, "-q", "1",
                                    "-l", "-M", "1000", "-i", f"rawpub-{uuid.uuid4().hex[:6]}"], stdin=stdin,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            while sub.poll() is None:
                await asyncio.sleep(0.01)
                if time.perf_counter() - t0 > 300:
                    sub.kill()
                    break
        el = time.perf_counter() - t0
        pub.wait(30)
        Path(path).unlink(missing_ok=True)
    else:
        client = "paho (Python)"
        el = await asyncio.to_thread(_paho_raw, svc, topic, msgs)
    cpu = meter.done()
    return {"client": client, "messages": n_msgs, "bytes_per_message": round(size), "per_message": per_message,
            "seconds": el, "msg_per_s": n_msgs / el, "readings_per_s": n_msgs * per_message / el,
            "broker_cpu_us_per_msg": cpu["broker"] / n_msgs * 1e6}


def _paho_raw(svc: Services, topic: str, msgs: list[bytes]) -> float:
    import threading

    import paho.mqtt.client as mqtt

    got = threading.Event()
    count = [0]

    def on_message(c, u, m):
        count[0] += 1
        if count[0] >= len(msgs):
            got.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"rawsub-{uuid.uuid4().hex[:6]}")
    sub.on_message = on_message
    sub.connect(svc.broker.host, svc.broker.port)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    time.sleep(0.5)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"rawpub-{uuid.uuid4().hex[:6]}")
    pub.max_inflight_messages_set(1000)
    pub.connect(svc.broker.host, svc.broker.port)
    pub.loop_start()
    t0 = time.perf_counter()
    for m in msgs:
        pub.publish(topic, m, qos=1)
    got.wait(300)
    el = time.perf_counter() - t0
    for c in (pub, sub):
        c.loop_stop()
        c.disconnect()
    return el


async def copy_limit(svc: Services, *, connections: int, seconds: float, batch: int = 20_000,
                     n_sensors: int = 50_000) -> dict:
    """Binary COPY of pre-encoded batches straight into ``readings`` (plantwatch's schema, fresh
    database), from ``connections`` connections at once, for ``seconds``."""
    dsn = await svc.fresh_db()
    try:
        store = await Store.open(dsn, connections=1)
        await store.close()
        t_base = time.time() - 3600
        # enough distinct batches for the whole span; each connection its own time slice
        n_batches = int(seconds * 450_000 / batch) + 8  # more than one connection can write in `seconds`
        encoded: list[list[bytes]] = []
        for c in range(connections):
            mine = []
            for b in range(n_batches):
                k = np.arange(batch) + b * batch
                sid = (k % n_sensors + 1).astype(np.int32)
                t = t_base + c * 1000.0 + (k // n_sensors) * 1.0 + (k % n_sensors) * 1e-5
                mine.append(pgcopy.encode([("timestamptz", t), ("int4", sid), ("float8", np.ones(batch)),
                                           ("int2", np.zeros(batch, np.int16))]))
            encoded.append(mine)
        conns = [await RigDb.connect(dsn) for _ in range(connections)]
        meter = CpuMeter(svc)
        done = [0] * connections
        stop_at = time.perf_counter() + seconds

        async def run(i: int) -> None:
            db = conns[i]
            for data in encoded[i]:
                if time.perf_counter() >= stop_at:
                    break
                await db.copy_readings(data, transaction=True)
                done[i] += batch

        t0 = time.perf_counter()
        await asyncio.gather(*(run(i) for i in range(connections)))
        el = time.perf_counter() - t0
        cpu = meter.done()
        rows = await conns[0].count("readings")
        for c in conns:
            await c.close()
        assert rows == sum(done)
        return {"connections": connections, "batch": batch, "rows": rows, "seconds": el, "rows_per_s": rows / el,
                "db_cpu_us_per_row": cpu["db"] / max(1, rows) * 1e6}
    finally:
        await svc.drop_db(dsn)
