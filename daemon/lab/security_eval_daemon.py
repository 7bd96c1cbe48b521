"""The security scenarios through a real broker, database and daemon (``security-eval --daemon``).

The ``normal`` and ``drawoff`` cases of :mod:`.security_sim` are published as a collector would
(wire-format batches on ``{prefix}/{site}/edge1/readings``, past timestamps), their declarations on
``transfers/declared`` in `%` or t at the moment the simulated shift lead made them; the daemon
runs the new detector set from the site config (the tank's capacity from ``inventory.tanks``).
The alarms are read back from the database: first raise after the event and false raises.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiomqtt

from plantwatch.connectors import demo_queries, inspection
from plantwatch.connectors.mqtt import BrokerAddress
from plantwatch.connectors.wire import encode_batch

from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.lab.security_sim import WEEK, TankSpec, detector_sets, simulate
from plantwatch.daemon.service import Daemon, Endpoints

PER_BATCH = 30  # timestamps per batch (two readings each)


def site_config(host: str, port: int, dsn: str, prefix: str, spec: TankSpec) -> str:
    dets = []
    for typ, params, with_temp in detector_sets(spec)["new"]:
        params = {k: v for k, v in params.items() if k != "capacity"}  # from inventory.tanks
        sel = ["TK-S", "TT-S"] if with_temp else ["TK-S"]
        dets.append(f"  - {{id: {typ.replace('_', '-')}, type: {typ}, select: {{sensors: {json.dumps(sel)}}},"
                    f" params: {json.dumps(params)}}}")
    return f"""
site:
  id: sec
  areas: [{{id: store, bounds: [0, 0, 50, 50], collector: edge1}}]
mqtt: {{host: {host}, port: {port}, topic_prefix: {prefix}, client_id: pw-{uuid.uuid4().hex[:8]}}}
database: {{dsn: "{dsn}"}}
metrics: {{port: 0}}
ingest: {{max_age: 1209600}}
sensors:
  - {{id: TK-S, kind: level, unit: '%', range: [0, 100], area: store}}
  - {{id: TT-S, kind: temperature, unit: degC, range: [-40, 80], area: store}}
inventory:
  tanks:
    - {{sensor: TK-S, capacity: {spec.capacity}, unit: t}}
detectors:
""" + "\n".join(dets) + "\n"


async def run_case(case: str, hours: float, event_at: float, host: str, port: int, dsn: str) -> dict:
    spec = TankSpec()
    sc = simulate(case, hours, spec, seed=1, event_at=event_at)
    prefix = f"pwsec{uuid.uuid4().hex[:6]}"
    cfg = load_config_text(site_config(host, port, dsn, prefix, spec))
    base = time.time() - hours * 3600.0 - 600.0
    d = Daemon(cfg, Endpoints(BrokerAddress(host, port), dsn), metrics=Metrics())
    task = asyncio.create_task(d.run())
    try:
        await asyncio.wait_for(d.ready.wait(), 60)
        decl = list(sc.declarations)
        async with aiomqtt.Client(host, port, max_inflight_messages=1000, max_queued_outgoing_messages=0) as c:
            for seq, k0 in enumerate(range(0, len(sc.t), PER_BATCH)):
                k1 = min(k0 + PER_BATCH, len(sc.t))
                while decl and decl[0][0] <= sc.t[k0]:
                    _, s, e, q = decl.pop(0)
                    await c.publish(f"{prefix}/sec/transfers/declared", json.dumps(
                        {"tank": "TK-S", "start": base + s, "end": base + e, "quantity": q, "unit": "t",
                         "by": "shift lead", "reference": f"sim-{seq}"}).encode(), qos=1)
                rs = []
                for k in range(k0, k1):
                    rs += [{"sensor": "TK-S", "time": base + float(sc.t[k]), "value": float(sc.level[k])},
                           {"sensor": "TT-S", "time": base + float(sc.t[k]), "value": float(sc.temp[k])}]
                await c.publish(f"{prefix}/sec/edge1/readings", encode_batch("edge1", seq, rs), qos=1)
        async with inspection.connection(dsn) as conn:
            async with asyncio.timeout(600):
                while await demo_queries.count_rows(conn, "readings") < 2 * len(sc.t):
                    await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
            raises = await demo_queries.fetch_first_raises(conn)
            stored = await demo_queries.count_rows(conn, "transfers")
    finally:
        d.stop.set()
        await task
    start = None if sc.event_start is None else base + sc.event_start
    false = [r for r in raises if start is None or r["t"] < start]
    hit = next((r for r in raises if start is not None and r["t"] >= start), None)
    span = (start - base) if start is not None else hours * 3600.0
    return {"case": case, "first": f"{hit['detector_id']}:{hit['condition']}" if hit else "-",
            "delay_s": (hit["t"] - start) if hit else None, "false": len(false),
            "false_which": sorted({f"{r['detector_id']}:{r['condition']}" for r in false}),
            "false_per_week": len(false) / span * WEEK, "declarations": stored, "readings": 2 * len(sc.t)}


async def _all(quick: bool) -> list[dict]:
    from plantwatch.daemon.lab.bench.env import Services

    svc = Services(fast_db=True).start()
    try:
        out = []
        hours, event_at = (28.0, 21.0) if quick else (7 * 24.0, 105.0)
        for case in ("normal", "drawoff"):
            dsn = await svc.fresh_db()
            try:
                out.append(await run_case(case, hours, event_at, svc.broker.host, svc.broker.port, dsn))
            finally:
                await svc.drop_db(dsn)
        return out
    finally:
        svc.stop()


def run_through_daemon(quick: bool) -> str:
    rows = asyncio.run(_all(quick))
    lines = ["through broker, database and daemon (new detectors):",
             f"{'case':<10} {'first alarm after the event':<40} {'delay':>9} {'false':>6} {'false/week':>10}"
             f" {'declared':>9} {'readings':>9}"]
    for r in rows:
        delay = "-" if r["delay_s"] is None else f"{r['delay_s']:.0f} s"
        lines.append(f"{r['case']:<10} {r['first']:<40} {delay:>9} {r['false']:>6} {r['false_per_week']:>10.1f}"
                     f" {r['declarations']:>9} {r['readings']:>9}  {' '.join(r['false_which'])}")
    return "\n".join(lines)
