"""How the daemon process starts, reconnects and ends, with a real Mosquitto and a real
TimescaleDB: a busy metrics or API port is one clear line and exit code 2 (not a traceback); the
MQTT reconnect delay is capped and jittered, so a broker back after an outage sees the daemon
within seconds whatever the outage's length."""
from __future__ import annotations

import asyncio
import random
import socket
import time
import uuid

import pytest

from plantwatch.connectors.services import MosquittoInstance, free_port
from plantwatch.daemon.ingest.reconnect import RECONNECT_CAP, Backoff

from .helpers import DaemonProcess, new_metrics_port, site_config, until


def test_backoff_is_capped_and_jittered():
    b = Backoff(rng=random.Random(1))
    delays = [b.next() for _ in range(40)]
    assert max(delays) <= RECONNECT_CAP and min(delays) > 0
    assert len({round(x, 6) for x in delays[10:]}) == 30  # jittered: no two sessions retry in lockstep
    b.reset()
    assert b.next() <= delays[0] * 2


@pytest.mark.slow
@pytest.mark.parametrize("which", ["metrics", "api"])
async def test_a_busy_port_is_one_line_and_exit_code_2(tmp_path, mosquitto, db, topic_prefix, which):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    mport = port if which == "metrics" else new_metrics_port()
    api = f"api: {{port: {port}}}\n" if which == "api" else ""
    cfg = tmp_path / "site.yaml"
    cfg.write_text(site_config(mqtt=(mosquitto.host, mosquitto.port), prefix=topic_prefix.rstrip("/"), dsn=db,
                               client_id=f"pw-{uuid.uuid4().hex[:8]}", metrics_port=mport,
                               detectors="detectors: []\n" + api))
    d = DaemonProcess(cfg, mport)
    try:
        d.start()
        code = await asyncio.to_thread(d.proc.wait, 60)
    finally:
        d.kill()
        busy.close()
    log = d.log()
    assert code == 2, log
    assert "Traceback" not in log, log
    line = [x for x in log.splitlines() if "cannot listen" in x]
    assert len(line) == 1 and f"127.0.0.1:{port}" in line[0] and which in line[0], log


@pytest.mark.slow
async def test_daemon_reconnects_within_seconds_after_a_long_broker_outage(tmp_path, db, topic_prefix):
    broker = MosquittoInstance(port=free_port())
    await asyncio.to_thread(broker.start)
    mport = new_metrics_port()
    cfg = tmp_path / "site.yaml"
    cfg.write_text(site_config(mqtt=(broker.host, broker.port), prefix=topic_prefix.rstrip("/"), dsn=db,
                               client_id=f"pw-{uuid.uuid4().hex[:8]}", metrics_port=mport))
    d = DaemonProcess(cfg, mport)
    try:
        d.start()
        await d.wait_connected(60)
        await asyncio.to_thread(broker.halt)
        await until(lambda: d.metrics().get("plantwatch_mqtt_connected") == 0.0, what="the daemon notices")
        await asyncio.sleep(16)  # long enough for a doubling backoff to wait 16 s and more
        await asyncio.to_thread(broker.start)
        t0 = time.monotonic()
        await until(lambda: d.metrics().get("plantwatch_mqtt_connected") == 1.0, timeout=60, what="reconnected")
        took = time.monotonic() - t0
        print(f"reconnected {took:.1f} s after the broker came back (cap {RECONNECT_CAP:g} s)")
        # the cap and a connect, with room for a loaded machine; a doubling backoff needs 15 s or more here
        assert took < 3 * RECONNECT_CAP + 2, (took, d.log())
        assert d.terminate(timeout=30) == 0, d.log()
    finally:
        d.kill()
        await asyncio.to_thread(broker.halt)
