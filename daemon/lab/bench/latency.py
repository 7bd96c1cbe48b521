"""Latency under a paced load: publish → stored and publish → alarm raised.

A publisher process sends readings at a fixed rate (a fraction of the maximum measured in the same
run) with limit exceedances injected on gas sensors; one task reads ``alarms/changes`` (the time
from a crossing's reading to its raise arriving on MQTT), another polls probe sensors in the
database (the time from a reading to its row being visible). After the publisher stops, the phase
waits for the daemon to store everything it was sent (up to ``drain_timeout``), so a daemon that
fell behind yields late samples, not none.

A phase that gathers no samples says why (:func:`why_empty`): a probe that failed (with its
error), no crossing injected, no alarm change on MQTT, only raises from before the measuring
window, no probe row, or a daemon still behind when the phase ended (by how much).
"""
from __future__ import annotations

import asyncio
import json
import queue
import time
import uuid
from pathlib import Path

import aiomqtt
import numpy as np

from plantwatch.connectors.rig_db import QUERY_ERRORS, RigDb
from plantwatch.daemon.lab.bench.e2e import start_daemon
from plantwatch.daemon.lab.bench.env import SITE, Services
from plantwatch.daemon.lab.bench.load import LoadSpec, Publisher


def pcts(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    a = np.asarray(xs)
    return {"n": len(a), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


async def _stored(d, default: float = 0.0) -> float:
    """Rows the daemon has stored (its metric); ``default`` while it does not answer."""
    try:
        return await asyncio.to_thread(d.stored)
    except OSError:
        return default


def why_empty(kind: str, r: dict) -> str | None:
    """Why the ``kind`` ("store" or "alarm") measurement of a latency result has no sample; None when it has."""
    if r[kind]["n"]:
        return None
    f, errors = r["facts"], r["errors"]
    if kind in errors:
        return f"the {'alarm subscriber' if kind == 'alarm' else 'database probe'} failed: {errors[kind]}"
    if "publisher" in errors:
        return f"the publisher failed: {errors['publisher']}"
    behind = None if f["drained"] else (
        f"the daemon was still behind when the phase ended: {f['stored_end']:,.0f} of {f['published']:,} readings "
        f"stored {f['drain_waited']:.0f} s after the last publish")
    if kind == "alarm":
        if r["injected"] == 0:
            return "no limit crossing was injected"
        if f["changes"] == 0:
            return (behind or f"no alarm change arrived on alarms/changes although {r['injected']} crossings were "
                    f"injected (the daemon counted {r['alarm_changes']:.0f} alarm changes)")
        if f["raises_in_window"] == 0:
            return behind or (f"{f['changes']} alarm changes arrived, {f['raises']} of them raises, none of a reading "
                              f"inside the measuring window")
    elif f["probe_rows"] == 0:
        return behind or "no row of the probe sensors appeared in the database"
    return behind or "no sample although the daemon kept up (a probe defect)"


async def latency(svc: Services, workdir: Path, n: int, rate: float, seconds: float, *,
                  inject_per_s: float = 5.0, warmup: float = 5.0, drain_timeout: float = 60.0) -> dict:
    """Paced load at ``rate`` readings/s for ``warmup + seconds``; samples of readings published
    after the warm-up only."""
    d, dsn, prefix = await start_daemon(svc, workdir, n, name=f"daemon-lat-{n}-{int(rate)}")
    alarm_lat: list[float] = []
    store_lat: list[float] = []
    errors: dict[str, str] = {}
    facts = {"changes": 0, "raises": 0, "raises_in_window": 0, "probe_rows": 0}
    stop = asyncio.Event()
    try:
        db = await RigDb.connect(dsn)
        probes_tags = [f"G{i}" for i in range(n // 2, n, max(1, n // 40)) if i % 5 < 3][:20]
        probe_ids = list((await db.sensor_ids(probes_tags)).values())
        pub = Publisher(LoadSpec(svc.broker.host, svc.broker.port, prefix, SITE, n, duration=seconds + warmup,
                                 rate=rate, inject_per_s=inject_per_s, client_id=f"pub-{uuid.uuid4().hex[:6]}"))
        t_begin = time.time()
        subscribed = asyncio.Event()

        async def alarms() -> None:
            try:
                async with aiomqtt.Client(svc.broker.host, svc.broker.port, identifier=f"lat-{uuid.uuid4().hex[:6]}",
                                          keepalive=30) as c:
                    await c.subscribe(f"{prefix}/{SITE}/alarms/changes", qos=1)
                    subscribed.set()
                    async for m in c.messages:
                        now = time.time()
                        ch = json.loads(m.payload)
                        facts["changes"] += 1
                        if ch.get("to") == "unack":
                            facts["raises"] += 1
                            if ch.get("time", 0) >= t_begin + warmup:
                                facts["raises_in_window"] += 1
                                alarm_lat.append(now - ch["time"])
            except (aiomqtt.MqttError, ValueError, KeyError) as e:
                errors["alarm"] = f"{type(e).__name__}: {e}"
                subscribed.set()

        async def stored() -> None:
            last = {i: t_begin + warmup for i in probe_ids}
            since = t_begin + warmup
            try:
                while not stop.is_set():
                    rs = await db.times_after(probe_ids, since)
                    now = time.time()
                    facts["probe_rows"] += len(rs)
                    for sensor_id, t in rs:
                        if t > last[sensor_id]:
                            store_lat.append(now - t)
                            last[sensor_id] = t
                    if last:
                        since = min(last.values())
                    d.sample_rss()
                    await asyncio.sleep(0.02)
            except QUERY_ERRORS as e:
                errors["store"] = f"{type(e).__name__}: {e}"

        ta = asyncio.create_task(alarms())
        await subscribed.wait()
        pub.start()
        ts = asyncio.create_task(stored())
        try:
            res = await asyncio.to_thread(pub.result, seconds + warmup + 120)
        except queue.Empty:
            errors["publisher"] = f"it did not finish within {seconds + warmup + 120:.0f} s"
            pub.stop()
            res = {"sent": 0, "t_start": t_begin, "t_end": time.time(), "injected": 0}
        # let a daemon that fell behind finish: its late samples are the measurement
        t_end = time.time()
        stored_end = await _stored(d)
        while stored_end < res["sent"] and time.time() - t_end < drain_timeout and d.proc.poll() is None:
            await asyncio.sleep(0.2)
            stored_end = await _stored(d, stored_end)
        drain_waited = time.time() - t_end
        await asyncio.sleep(1.0)  # the last alarm changes and probe rows
        stop.set()
        await ts
        ta.cancel()
        await asyncio.gather(ta, return_exceptions=True)
        await db.close()
        m = d.metrics()
        out = {"sensors": n, "rate_target": rate,
               "rate_sent": res["sent"] / max(1e-9, res["t_end"] - res["t_start"]),
               "injected": res["injected"], "store": pcts(store_lat), "alarm": pcts(alarm_lat),
               "store_poll_resolution_s": 0.02, "peak_rss": max(d.peak_rss, d.hwm()),
               "alarm_changes": sum(v for k, v in m.items() if k.startswith("plantwatch_alarm_changes_total")),
               "errors": errors,
               "facts": facts | {"published": res["sent"], "stored_end": stored_end, "drain_waited": drain_waited,
                                 "drained": stored_end >= res["sent"] > 0}}
        out["why_empty"] = {k: w for k in ("store", "alarm") if (w := why_empty(k, out)) is not None}
        return out
    finally:
        stop.set()
        d.terminate()
        await svc.drop_db(dsn)
