"""plantwatch end to end: max sustained rate, memory, and the naive baseline (latency: ``latency.py``)."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import aiomqtt

from plantwatch.connectors.rig_db import RigDb
from plantwatch.connectors.seal import sealed_summary
from plantwatch.daemon.lab.bench.env import SITE, CpuMeter, Daemon, Services, new_port, site_yaml
from plantwatch.daemon.lab.bench.load import LoadSpec, Publisher


async def _count(dsn: str, table: str = "readings") -> int:
    async with await RigDb.connect(dsn) as db:
        return await db.count(table)


async def start_daemon(svc: Services, workdir: Path, n: int, *, name: str = "daemon", ingest: str = "",
                       database: str = "", cluster: str = "", client_id: str | None = None,
                       dsn: str | None = None, record: str = "") -> tuple[Daemon, str, str]:
    dsn = dsn or await svc.fresh_db()
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    port = new_port()
    y = site_yaml(n, host=svc.broker.host, port=svc.broker.port, prefix=prefix, dsn=dsn,
                  client_id=client_id or f"pw-{uuid.uuid4().hex[:8]}", metrics_port=port, ingest=ingest,
                  cluster=cluster, database=database, record=record)
    d = Daemon(workdir, y, port, name=name)
    d.start()
    await d.wait_connected()
    return d, dsn, prefix


async def throughput(svc: Services, workdir: Path, n: int, total: int, *, per_message: int = 100,
                     profile: Path | None = None, ingest: str = "", database: str = "",
                     max_ahead: int | None = 400_000, record: str = "") -> dict:
    """Publish ``total`` readings as fast as possible; sustained rate = rows stored per second."""
    d, dsn, prefix = await start_daemon(svc, workdir, n, name=f"daemon-{n}", ingest=ingest, database=database,
                                        record=record)
    spy = None
    try:
        if profile is not None:
            import subprocess
            import sys
            from pathlib import Path as P
            exe = P(sys.executable).with_name("py-spy")
            spy = subprocess.Popen([str(exe), "record", "-o", str(profile), "-r", "100", "-p", str(d.pid),
                                    "-f", {".json": "speedscope", ".txt": "raw"}.get(profile.suffix, "flamegraph"), "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        meter = CpuMeter(svc, d.pid)
        pub = Publisher(LoadSpec(svc.broker.host, svc.broker.port, prefix, SITE, n, per_message=per_message,
                                 total=total, client_id=f"pub-{uuid.uuid4().hex[:6]}",
                                 max_ahead=max_ahead)).start()
        samples: list[tuple[float, float]] = []
        t0 = time.time()
        last_change = time.time()
        prev = -1.0
        while True:
            await asyncio.sleep(0.1)
            s = d.stored()
            pub.progress.value = s
            now = time.time()
            samples.append((now, s))
            d.sample_rss()
            if s != prev:
                prev, last_change = s, now
            if s >= total and not pub.proc.is_alive():
                break
            if now - last_change > 30:
                break
        res = pub.result(timeout=60)
        cpu = meter.done()
        t_done = samples[-1][0]
        for (ta, sa) in samples:  # first sample with anything stored → end-to-end window
            if sa > 0:
                break
        rows = await _count(dsn)
        sealed = await sealed_summary(dsn)  # what was sealed during the run
        m = d.metrics()
        rss_end = d.sample_rss()
        # steady state: rate between 10 % and 90 % of the total stored
        lo = next(t for t, s in samples if s >= 0.1 * total) if samples[-1][1] >= 0.1 * total else t0
        hi = next(t for t, s in samples if s >= 0.9 * total) if samples[-1][1] >= 0.9 * total else t_done
        rate = rows / max(1e-9, t_done - res["t_start"])
        # too short a run for a steady window (a few samples): the overall rate stands in
        steady = 0.8 * total / (hi - lo) if hi - lo >= 1.0 else rate
        return {
            "sensors": n, "published": res["sent"], "max_ahead": max_ahead, "rows": rows, "accounted": rows == res["sent"],
            "publish_seconds": res["t_end"] - res["t_start"],
            "publish_rate": res["sent"] / max(1e-9, res["t_end"] - res["t_start"]),
            "seconds": t_done - res["t_start"], "rate": rows / max(1e-9, t_done - res["t_start"]),
            "steady_rate": steady, "cpu_s": cpu, **sealed,
            "cpu_us_per_reading": {k: v / max(1, rows) * 1e6 for k, v in cpu.items() if k != "wall"},
            "peak_rss": max(d.peak_rss, d.hwm()), "rss_end": rss_end, "write_batches": m.get("plantwatch_write_batches_total", 0),
            "duplicates": m.get("plantwatch_readings_duplicate_total", 0),
            "rejected": sum(v for k, v in m.items() if k.startswith("plantwatch_readings_rejected_total")),
        }
    finally:
        if spy is not None:
            spy.send_signal(2)
            try:
                spy.wait(30)
            except Exception:  # noqa: BLE001
                spy.kill()
        d.terminate()
        await svc.drop_db(dsn)


async def naive(svc: Services, n: int, seconds: float) -> dict:
    """The baseline: a plain subscriber (aiomqtt, QoS 1, automatic acks), json.loads, one insert
    statement (autocommit) per reading."""
    from plantwatch.connectors.store import Store
    from plantwatch.daemon.config.model import load_config_text

    dsn = await svc.fresh_db()
    prefix = f"naive{uuid.uuid4().hex[:6]}"
    try:
        store = await Store.open(dsn, connections=1)
        cfg = load_config_text(site_yaml(n, host="h", port=1, prefix=prefix, dsn=dsn, client_id="x", metrics_port=0))
        ids = await store.sync_registry(cfg.site, cfg.sensors)
        await store.close()
        db = await RigDb.connect(dsn)
        count = 0
        async with aiomqtt.Client(svc.broker.host, svc.broker.port, identifier=f"naive-{uuid.uuid4().hex[:6]}") as c:
            await c.subscribe(f"{prefix}/{SITE}/+/readings", qos=1)
            pub = Publisher(LoadSpec(svc.broker.host, svc.broker.port, prefix, SITE, n, duration=seconds + 5,
                                     rate=20_000, client_id=f"pub-{uuid.uuid4().hex[:6]}")).start()
            t0 = time.perf_counter()
            async for m in c.messages:
                b = json.loads(m.payload)
                for r in b["readings"]:
                    await db.insert_reading(r["time"], ids[r["sensor"]], r["value"])
                    count += 1
                if time.perf_counter() - t0 >= seconds:
                    break
            el = time.perf_counter() - t0
            pub.stop()
        rows = await db.count("readings")
        await db.close()
        return {"seconds": el, "rows": rows, "rate": rows / el}
    finally:
        await svc.drop_db(dsn)
