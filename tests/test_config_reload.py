"""Config reload without a restart (`plantwatch config apply`, SIGHUP): a daemon with an active
alarm takes a config that adds a sensor; the alarm stays active (and the limit detector still
knows its condition: the alarm returns to normal with the next good reading), the new sensor's
readings are accepted and alarmed, the config is versioned in the database, and the process is
the same. A candidate that fails its checks, or changes what needs a restart, is refused whole."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import asyncpg

from plantwatch.connectors.wire import encode_batch

from .helpers import DaemonProcess, new_metrics_port, publish_batches, site_config, until


def plantwatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli", *args], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))


async def _fetch(dsn: str, sql: str, *args):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def _alarm(dsn: str, tag: str) -> tuple[str, bool] | None:
    rows = await _fetch(dsn, "SELECT a.state, a.active FROM alarms a JOIN sensors s ON s.id = a.sensor_id"
                             " WHERE s.tag = $1 AND a.detector_id = 'h2s-limit'", tag)
    return (rows[0]["state"], rows[0]["active"]) if rows else None


async def test_an_active_alarm_survives_a_reload_that_adds_a_sensor(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    mport = new_metrics_port()
    text = site_config(n_gas=3, mqtt=(mosquitto.host, mosquitto.port), prefix=prefix, dsn=db,
                       client_id=f"pw-{uuid.uuid4().hex[:8]}", metrics_port=mport,
                       state=f"{{data_dir: {tmp_path / 'state'}}}")
    (tmp_path / "site.yaml").write_text(text)
    d = DaemonProcess(tmp_path / "site.yaml", mport)
    d.start()
    topic = f"{prefix}/testsite/edge1/readings"
    try:
        await d.wait_connected()
        now = time.time()
        await publish_batches(mosquitto.host, mosquitto.port, topic, [
            encode_batch("edge1", 0, [{"sensor": s, "time": now - 60, "value": 1.0} for s in ("G0", "G1", "G2")]),
            encode_batch("edge1", 1, [{"sensor": "G0", "time": now - 50, "value": 12.0}])])
        await until(lambda: _is(db, "G0", ("unack", True)), 30, "G0's alarm raised")
        changes_before = len(await _fetch(db, "SELECT 1 FROM alarm_changes"))

        # the operator's screen must not drop: the same process takes the new config
        added = text.replace("sensors:\n", "sensors:\n  - {id: G9, kind: gas, quantity: H2S, unit: ppm, range: [0, 100],"
                                           " area: area1, location: [9, 9]}\n", 1)
        d.cfg.write_text(added)
        p = plantwatch("config", "apply", str(d.cfg))
        assert p.returncode == 0, (p.stdout, p.stderr, d.log())
        assert p.stdout.startswith(f"applied {d.cfg}") and "4 sensors" in p.stdout and "active alarms kept" in p.stdout
        assert d.proc.poll() is None
        assert await _alarm(db, "G0") == ("unack", True)
        assert len(await _fetch(db, "SELECT 1 FROM alarm_changes")) == changes_before  # nothing cleared or re-raised
        versions = await _fetch(db, "SELECT content FROM config_versions ORDER BY last_loaded_at")
        assert versions[-1]["content"] == added

        # the new sensor is ingested and alarmed; the limit detector still knows G0 was high
        t = time.time()
        await publish_batches(mosquitto.host, mosquitto.port, topic, [
            encode_batch("edge1", 2, [{"sensor": "G9", "time": t - 40, "value": 1.0}]),
            encode_batch("edge1", 3, [{"sensor": "G9", "time": t - 30, "value": 15.0},
                                      {"sensor": "G0", "time": t - 30, "value": 1.0}])])
        await until(lambda: _is(db, "G9", ("unack", True)), 30, "G9's alarm raised")
        await until(lambda: _is(db, "G0", ("rtn_unack", False)), 30, "G0 back to normal, awaiting its ack")
        assert (await _fetch(db, "SELECT count(*) AS n FROM dead_letters"))[0]["n"] == 0

        # refused as a whole: a config that fails its checks (here, before it reaches the daemon) ...
        d.cfg.write_text(added.replace("range: [0, 100], area: area1, location: [9, 9]", "range: [100, 0], area: area1"))
        p = plantwatch("config", "apply", str(d.cfg))
        assert p.returncode == 2 and "sensors[G9].range" in p.stderr and "nothing was applied" in p.stderr, p.stderr
        # ... and one that passes them but changes what needs a restart, with a new sensor besides
        restart = added.replace("sensors:\n", "sensors:\n  - {id: G8, kind: gas, quantity: H2S, unit: ppm,"
                                " range: [0, 100], area: area1}\n", 1).replace(f"port: {mosquitto.port}", "port: 1")
        d.cfg.write_text(restart)
        os.kill(d.pid, signal.SIGHUP)  # what systemctl reload does
        await until(lambda: "mqtt changed: that needs a restart" in d.log(), 30, "the refusal logged")
        assert not await _fetch(db, "SELECT 1 FROM sensors WHERE tag = 'G8'")
        assert await _alarm(db, "G9") == ("unack", True) and d.proc.poll() is None
        d.cfg.write_text(added)
        assert d.terminate() == 0, d.log()
    finally:
        d.kill()


async def _is(dsn: str, tag: str, want) -> bool:
    return await _alarm(dsn, tag) == want


def test_config_apply_without_a_running_daemon_says_so(tmp_path):
    cfg = tmp_path / "site.yaml"
    cfg.write_text(site_config(n_gas=1, state=f"{{data_dir: {tmp_path}}}"))
    p = plantwatch("config", "apply", str(cfg))
    assert p.returncode == 1 and "no running daemon" in p.stderr and "plantwatch.pid" in p.stderr, p.stderr
    assert asyncio.iscoroutinefunction(_is)
