"""The benchmark's latency phase: a daemon that falls behind still yields samples (late ones), and
a phase without samples says why."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import urllib.request
from pathlib import Path

import psutil
import pytest

from plantwatch.daemon.lab.bench.env import Services
from plantwatch.daemon.lab.bench.latency import latency, why_empty

pytestmark = pytest.mark.slow


def _daemons() -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if "plantwatch.daemon.cli.main" in cmd and "run" in cmd:
            out.append(p)
    return out


def _received(p: psutil.Process) -> float:
    cmd = p.cmdline()
    text = Path(cmd[cmd.index("--config") + 1]).read_text()
    port = int(re.search(r"metrics: \{port: (\d+)\}", text).group(1))
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    m = re.search(r"^plantwatch_readings_received_total (\S+)$", body, re.M)
    return float(m.group(1)) if m else 0.0


async def test_a_daemon_that_falls_behind_is_waited_for_and_measured(tmp_path, mosquitto, postgres):
    """The daemon is frozen (SIGSTOP) for longer than the publisher runs: the phase must wait for it
    to catch up and measure the late readings and alarms, not stop looking and report n=0."""
    svc = Services(broker=mosquitto, pg=postgres)
    frozen = {}

    async def freeze() -> None:
        # once the daemon receives readings (the phase is publishing), freeze it past the end of publishing
        for _ in range(600):
            ds = _daemons()
            if ds and _received(ds[0]) > 0:
                break
            await asyncio.sleep(0.1)
        (d,) = ds
        os.kill(d.pid, signal.SIGSTOP)
        frozen["pid"] = d.pid
        await asyncio.sleep(7.0)
        os.kill(d.pid, signal.SIGCONT)

    task = asyncio.create_task(freeze())
    try:
        r = await latency(svc, tmp_path, 200, 2000.0, 3.0, warmup=1.0, inject_per_s=5.0)
    finally:
        if "pid" in frozen:
            try:
                os.kill(frozen["pid"], signal.SIGCONT)
            except ProcessLookupError:
                pass
        await asyncio.gather(task, return_exceptions=True)
    assert frozen, "the daemon was never frozen"
    assert r["errors"] == {}
    assert r["facts"]["drained"], r["facts"]
    assert r["store"]["n"] > 0 and r["alarm"]["n"] > 0, r["why_empty"]
    assert r["alarm"]["max"] > 3.0  # the freeze is in the figures, not hidden
    assert r["why_empty"] == {}


def _result(**facts) -> dict:
    base = {"changes": 3, "raises": 2, "raises_in_window": 0, "probe_rows": 0, "published": 10_000,
            "stored_end": 10_000, "drain_waited": 0.5, "drained": True}
    return {"store": {"n": 0}, "alarm": {"n": 0}, "injected": 12, "alarm_changes": 3.0, "errors": {},
            "facts": base | facts}


def test_why_a_phase_has_no_sample():
    r = _result()
    assert "none of a reading inside the measuring window" in why_empty("alarm", r)
    assert why_empty("store", r) == "no row of the probe sensors appeared in the database"
    behind = _result(drained=False, stored_end=4_000, drain_waited=60.0)
    assert why_empty("alarm", behind).startswith("the daemon was still behind when the phase ended: 4,000 of 10,000")
    r = _result(changes=0, raises=0)
    assert "no alarm change arrived on alarms/changes although 12 crossings" in why_empty("alarm", r)
    r = _result()
    r["errors"]["alarm"] = "MqttError: Disconnected during message iteration"
    assert why_empty("alarm", r) == "the alarm subscriber failed: MqttError: Disconnected during message iteration"
    r["alarm"]["n"] = 5
    assert why_empty("alarm", r) is None
