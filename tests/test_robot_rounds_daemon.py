"""robot_baseline through the broker, the daemon and the database: a daily cycle common to the
whole site raises nothing, and a site-wide H2S rise over a robot's rounds is one site_shift alarm,
not a local anomaly at whichever place the robot was."""
from __future__ import annotations

import json
import time
import uuid

import asyncpg
import numpy as np

from plantwatch.daemon.lab.simulator.robot_rounds import robot_rounds
from plantwatch.connectors.wire import encode_batch

from .helpers import DaemonProcess, new_metrics_port, publish_batches, site_config, until

H = 3600.0
DETECTORS = ("detectors:\n  - {id: robot-base, type: robot_baseline, select: {kind: robot},"
             " params: {cell: 5.0, extent: [0, 0, 200, 100], direction: high}}\n")


async def _fetch(dsn: str, sql: str, *args):
    c = await asyncpg.connect(dsn)
    try:
        return await c.fetch(sql, *args)
    finally:
        await c.close()


def _rows(r):
    return [{"sensor": "R0", "time": float(t), "value": float(v), "x": float(xy[0]), "y": float(xy[1])}
            for t, v, xy in zip(r.t, np.maximum(r.value, 0.0), r.pos)]


async def _run_daemon(tmp_path, mosquitto, db, prefix, rows, detectors=DETECTORS):
    """Publish the robot's readings, wait until they are stored, stop the daemon; its alarm changes."""
    mport = new_metrics_port()
    cfg = tmp_path / f"site-{uuid.uuid4().hex[:6]}.yaml"
    cfg.write_text(site_config(mqtt=(mosquitto.host, mosquitto.port), prefix=prefix, dsn=db,
                               client_id=f"pw-{uuid.uuid4().hex[:8]}", metrics_port=mport, detectors=detectors,
                               n_gas=1, n_robot=1))
    d = DaemonProcess(cfg, mport)
    d.start()
    try:
        await d.wait_connected()
        batches = [encode_batch("robot1", k, rows[i:i + 200]) for k, i in enumerate(range(0, len(rows), 200))]
        await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/testsite/robot1/robot", batches)
        await until(lambda: _stored(db, len(rows)), timeout=120, what=f"{len(rows)} robot readings stored")
        assert d.terminate() == 0, d.log()
    finally:
        if d.proc and d.proc.poll() is None:
            d.kill()
    return await _fetch(db, "SELECT c.time, c.to_state, c.condition, c.cause FROM alarm_changes c JOIN alarms a"
                            " ON a.id = c.alarm_id WHERE a.detector_id = 'robot-base' ORDER BY c.time, c.id")


async def test_daily_cycle_through_the_daemon_raises_nothing(tmp_path, mosquitto, db, topic_prefix):
    """±5 around 30 on every place (a temperature-like daily cycle), 20 places, 3 days."""
    t0 = time.time() - 3 * 24 * H
    r = robot_rounds(places=20, days=3.0 - 1 / 24, mean=30.0, amplitude=5.0, noise=0.1, readings=1, seed=0,
                     spacing=18.0, per_row=10, t0=t0)
    detectors = DETECTORS.replace(", direction: high", "")
    changes = await _run_daemon(tmp_path, mosquitto, db, topic_prefix.rstrip("/"), _rows(r), detectors)
    raised = [c for c in changes if c["to_state"] == "unack"]
    print(f"{len(r.t)} robot readings with a daily cycle: {len(raised)} robot_baseline alarms raised")
    assert raised == []


async def test_site_wide_rise_through_the_daemon_is_one_site_alarm(tmp_path, mosquitto, db, topic_prefix):
    t0 = time.time() - 24 * H
    # 20 places over both areas (x 10..172 m), one reading per stop, +3 ppm everywhere 14 h .. 20 h
    r = robot_rounds(places=20, days=23.5 / 24, mean=0.5, amplitude=0.0, offset_sd=0.3, noise=0.05, readings=1,
                     seed=5, spacing=18.0, per_row=10, shift=(t0 + 14 * H, t0 + 20 * H, 3.0), t0=t0)
    rows = _rows(r)
    changes = await _run_daemon(tmp_path, mosquitto, db, topic_prefix.rstrip("/"), rows)
    conds = [c["condition"] for c in changes]
    raised = [c for c in changes if c["to_state"] == "unack"]
    print(f"{len(rows)} robot readings; alarm changes: {[(c['to_state'], c['condition']) for c in changes]}")
    assert set(conds) <= {"site_shift", "normal"}, conds
    assert len(raised) == 1 and raised[0]["condition"] == "site_shift"
    start = raised[0]["time"].timestamp()
    assert t0 + 14 * H <= start <= t0 + 14 * H + 1800
    cause = raised[0]["cause"]
    cause = json.loads(cause) if isinstance(cause, str) else cause
    assert "position" not in cause, cause  # a site-level alarm is not placed where the robot happened to be


async def _stored(dsn: str, n: int) -> bool:
    rows = await _fetch(dsn, "SELECT count(*) AS n FROM robot_readings")
    return rows[0]["n"] >= n
