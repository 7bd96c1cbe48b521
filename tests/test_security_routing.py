"""Security alarms go to the security role and position: their own MQTT topic, the API's security
view, and only the security role may acknowledge or shelve them (an operator gets 403 with the
reason); every action is audit-chained. Real broker, database and daemon."""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
import aiomqtt
import asyncpg
import pytest

from plantwatch.connectors import audit
from plantwatch.connectors.mqtt import BrokerAddress
from plantwatch.connectors.services import free_port
from plantwatch.connectors.wire import encode_batch
from plantwatch.daemon.alarms.api import hash_token
from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.service import Daemon, Endpoints

from .helpers import publish_batches

pytestmark = pytest.mark.slow
OPERATOR, OFFICER = "op-" + uuid.uuid4().hex, "sec-" + uuid.uuid4().hex


def _config(prefix: str, mq, dsn: str, api_port: int) -> str:
    return f"""
site:
  id: secsite
  areas: [{{id: store, bounds: [0, 0, 50, 50], collector: edge1}}]
mqtt: {{host: {mq.host}, port: {mq.port}, topic_prefix: {prefix}, client_id: pw-{uuid.uuid4().hex[:8]}}}
database: {{dsn: "{dsn}"}}
metrics: {{port: 0}}
api:
  port: {api_port}
  tokens:
    - {{name: ann, role: operator, sha256: {hash_token(OPERATOR)}}}
    - {{name: sam, role: security, sha256: {hash_token(OFFICER)}}}
sensors:
  - {{id: TK-1, kind: level, unit: m3, range: [0, 100], area: store}}
  - {{id: G1, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: store}}
detectors:
  - {{id: loss, type: unexplained_loss, select: {{kind: level}}, params: {{min_loss: 2.0, window: 600, smooth: 3}}}}
  - {{id: h2s, type: limit, select: {{kind: gas}}, params: {{high: 10}}}}
"""


async def test_security_alarm_goes_to_security_and_an_operator_may_not_ack_or_shelve_it(mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    api_port = free_port()
    cfg = load_config_text(_config(prefix, mosquitto, db, api_port))
    d = Daemon(cfg, Endpoints(BrokerAddress(mosquitto.host, mosquitto.port), db), metrics=Metrics())
    task = asyncio.create_task(d.run())
    await asyncio.wait_for(d.ready.wait(), 20)
    base = f"http://127.0.0.1:{api_port}/api"
    t0 = time.time() - 600
    try:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as sub:
            await sub.subscribe(f"{prefix}/secsite/alarms/security", qos=1)
            batches = [encode_batch("edge1", k, [{"sensor": "TK-1", "time": t0 + k, "value": 50.0 - 0.1 * max(0, min(k - 300, 100))},
                                                 {"sensor": "G1", "time": t0 + k, "value": 20.0 if k > 450 else 1.0}])
                       for k in range(500)]
            await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/secsite/edge1/readings", batches)
            async with asyncio.timeout(30):
                async for m in sub.messages:
                    msg = json.loads(m.payload)
                    break
        assert (msg["detector"], msg["sensor"], msg["condition"], msg["position"]) == \
            ("loss", "TK-1", "unexplained_loss", "security"), msg
        async with aiohttp.ClientSession() as http:
            def auth(tok):
                return {"Authorization": f"Bearer {tok}"}

            for _ in range(100):
                async with http.get(f"{base}/alarms", headers=auth(OPERATOR)) as r:
                    rows = (await r.json())["alarms"]
                if {x["detector_id"] for x in rows} >= {"loss", "h2s"}:
                    break
                await asyncio.sleep(0.1)
            routes = {x["detector_id"]: x["route"] for x in rows}
            assert routes == {"loss": "security", "h2s": "operator"}, rows
            async with http.get(f"{base}/alarms?route=security", headers=auth(OFFICER)) as r:
                assert [x["sensor"] for x in (await r.json())["alarms"]] == ["TK-1"]
            loss_id = next(x["id"] for x in rows if x["detector_id"] == "loss")
            h2s_id = next(x["id"] for x in rows if x["detector_id"] == "h2s")
            for action, body in (("ack", {}), ("shelve", {"reason": "nuisance", "duration": 600})):
                async with http.post(f"{base}/alarms/{loss_id}/{action}", json=body, headers=auth(OPERATOR)) as r:
                    assert r.status == 403, await r.text()
                    assert "security alarm" in (await r.json())["error"] and "'security' role" in (await r.json())["error"]
            async with http.post(f"{base}/alarms/{h2s_id}/ack", json={}, headers=auth(OFFICER)) as r:
                assert r.status == 403 and "security alarms only" in (await r.json())["error"]
            async with http.post(f"{base}/alarms/{loss_id}/ack", json={"reason": "on my way"}, headers=auth(OFFICER)) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["state"] == "ack"
    finally:
        d.stop.set()
        await task
    conn = await asyncpg.connect(db)
    try:
        acts = await conn.fetch("SELECT action, actor, role FROM operator_actions ORDER BY id")
        assert [tuple(a) for a in acts] == [("ack", "sam", "security")]
        causes = [json.loads(c[0]) for c in await conn.fetch("SELECT c.cause::text FROM alarm_changes c JOIN alarms a"
                                                             " ON a.id = c.alarm_id WHERE a.detector_id = 'loss'")]
        assert causes and all(c.get("route") == "security" for c in causes), causes
        verdict = await audit.verify(conn)
        assert verdict.ok and verdict.entries > 0, verdict.problems
    finally:
        await conn.close()
