"""Chemical security through the daemon: an inventory falling without a declared transfer alarms;
the same fall, declared over MQTT, does not. Robot readings reach position-aware detectors."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid

import asyncpg
import pytest

from plantwatch.connectors.mqtt import BrokerAddress
from plantwatch.connectors.wire import encode_batch
from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.service import Daemon, Endpoints

from .helpers import publish_batches

pytestmark = pytest.mark.slow


def _config(prefix: str, mq, dsn: str) -> str:
    return f"""
site:
  id: secsite
  areas: [{{id: store, bounds: [0, 0, 50, 50], collector: edge1}}, {{id: yard, bounds: [50, 0, 100, 50], collector: robot1}}]
mqtt: {{host: {mq.host}, port: {mq.port}, topic_prefix: {prefix}, client_id: pw-{uuid.uuid4().hex[:8]}}}
database: {{dsn: "{dsn}"}}
metrics: {{port: 0}}
sensors:
  - {{id: TK-1, kind: level, unit: m3, range: [0, 100], area: store}}
  - {{id: TK-2, kind: level, unit: m3, range: [0, 100], area: store}}
  - {{id: R-H2S, kind: robot, quantity: H2S, unit: ppm, range: [0, 100], area: yard}}
detectors:
  - {{id: loss, type: unexplained_loss, select: {{kind: level}}, params: {{min_loss: 2.0, window: 600, smooth: 3}}}}
  - {{id: robot, type: robot_baseline, select: {{kind: robot}}, params: {{cell: 10.0, extent: [0, 0, 100, 50], global_warmup: 20, threshold: 6.0,
                                                                confirm_after: 0}}}}
"""


async def _alarms(dsn: str) -> dict[tuple[str, str], str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT a.detector_id, s.tag, a.condition FROM alarms a JOIN sensors s ON s.id = a.sensor_id"
                                " WHERE a.active")
        return {(r["detector_id"], r["tag"]): r["condition"] for r in rows}
    finally:
        await conn.close()


async def test_undeclared_loss_alarms_declared_does_not(mosquitto, db, topic_prefix, tmp_path):
    prefix = topic_prefix.rstrip("/")
    cfg = load_config_text(_config(prefix, mosquitto, db))
    d = Daemon(cfg, Endpoints(BrokerAddress(mosquitto.host, mosquitto.port), db), metrics=Metrics())
    task = asyncio.create_task(d.run())
    await asyncio.wait_for(d.ready.wait(), 20)
    topic = f"{prefix}/secsite/edge1/readings"
    t0 = time.time() - 900
    try:
        # both tanks steady at 50 m3 for 5 minutes, then both lose 10 m3 over 100 s; TK-2's draw-off is declared
        # declared with the CLI, as a shift lead would
        cfg_file = tmp_path / "site.yaml"
        cfg_file.write_text(_config(prefix, mosquitto, db))
        # in a thread: the command waits for the receipt of the daemon running in this event loop
        p = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "plantwatch.daemon.cli.main", "transfer", "--config", str(cfg_file),
                             "--tank", "TK-2", "--quantity", "10", "--unit", "m3", "--start", str(t0 + 290), "--end", str(t0 + 410),
                             "--by", "shift lead", "--reference", "BOL-7"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert "stored" in p.stdout
        batches = []
        for k in range(500):
            level = 50.0 - (min(max(k - 300, 0), 100) * 0.1)
            batches.append(encode_batch("edge1", k, [{"sensor": "TK-1", "time": t0 + k, "value": level},
                                                     {"sensor": "TK-2", "time": t0 + k, "value": level}]))
        # robot: steady 1 ppm along its route, then 9 ppm at a place where it has always read 1
        # (one reading: the detector has confirm_after 0, so it need not wait for the next pass)
        for k in range(400):  # ten passes along the route, so every place has its own baseline
            x = 55.0 + (k % 40)
            v = 9.0 if k == 399 else 1.0 + 0.05 * (k % 3)
            batches.append(encode_batch("robot1", k, [{"sensor": "R-H2S", "time": t0 + k, "value": v, "x": x, "y": 20.0}]))
        await publish_batches(mosquitto.host, mosquitto.port, topic, batches[:500])
        await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/secsite/robot1/robot", batches[500:])
        for _ in range(100):
            active = await _alarms(db)
            if ("loss", "TK-1") in active and ("robot", "R-H2S") in active:
                break
            await asyncio.sleep(0.1)
        assert active.get(("loss", "TK-1")) == "unexplained_loss"
        assert ("loss", "TK-2") not in active
        assert ("robot", "R-H2S") in active
    finally:
        d.stop.set()
        await task
    conn = await asyncpg.connect(db)
    try:
        row = await conn.fetchrow("SELECT s.tag, t.quantity, t.declared_by, t.reference FROM transfers t JOIN sensors s ON s.id = t.sensor_id")
        assert dict(row) == {"tag": "TK-2", "quantity": 10.0, "declared_by": "shift lead", "reference": "BOL-7"}
        assert await conn.fetchval("SELECT count(*) FROM robot_readings") == 400
    finally:
        await conn.close()
