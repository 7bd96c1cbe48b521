"""Test helpers: site configs of any size, a daemon in a subprocess, publishing, metrics."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiomqtt

from plantwatch.connectors.services import free_port
from plantwatch.connectors.wire import encode_batch


def site_config(*, n_gas: int = 10, n_pressure: int = 0, n_robot: int = 0, mqtt: tuple[str, int] | None = None,
                prefix: str = "plantwatch", dsn: str | None = None, client_id: str = "plantwatch-test",
                metrics_port: int = 0, detectors: str | None = None, ingest: str = "", state: str = "") -> str:
    """YAML for a one-area site; gas sensors G0.., pressures P0.., robot channels R0.."""
    lines = ["site:", "  id: testsite", "  areas:", "    - {id: area1, bounds: [0, 0, 100, 100]}",
             "    - {id: area2, bounds: [100, 0, 200, 100]}"]
    if mqtt:
        lines += [f"mqtt: {{host: {mqtt[0]}, port: {mqtt[1]}, topic_prefix: {prefix}, client_id: {client_id}}}"]
    if dsn:
        lines += [f'database: {{dsn: "{dsn}"}}']
    lines += [f"metrics: {{port: {metrics_port}}}"]
    if ingest:
        lines += [f"ingest: {ingest}"]
    if state:
        lines += [f"state: {state}"]
    lines += ["sensors:"]
    lines += [f"  - {{id: G{i}, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: area1, location: [{i % 100}, 5]}}"
              for i in range(n_gas)]
    lines += [f"  - {{id: P{i}, kind: pressure, unit: bar, range: [0, 40], area: area2}}" for i in range(n_pressure)]
    lines += [f"  - {{id: R{i}, kind: robot, quantity: H2S, unit: ppm, range: [0, 100], area: area1}}"
              for i in range(n_robot)]
    if detectors is None:
        detectors = ("detectors:\n"
                     "  - {id: h2s-limit, type: limit, select: {kind: gas}, params: {high: 5, high_high: 10, deadband: 0.5}}\n")
    return "\n".join(lines) + "\n" + detectors


def readings(sensors: list[str], t: float, value: float = 1.0) -> list[dict]:
    return [{"sensor": s, "time": t, "value": value} for s in sensors]


async def publish_batches(host: str, port: int, topic: str, batches: list[bytes], *, qos: int = 1) -> None:
    async with aiomqtt.Client(host, port, max_inflight_messages=1000, max_queued_outgoing_messages=0) as c:
        for b in batches:
            await c.publish(topic, b, qos=qos)


def make_batches(collector: str, sensors: list[str], n_batches: int, *, t0: float, per_batch: int | None = None,
                 seq0: int = 0) -> list[bytes]:
    """Batches of ``per_batch`` readings cycling over ``sensors``, distinct (sensor, time) pairs."""
    per_batch = per_batch or len(sensors)
    out, k = [], 0
    for b in range(n_batches):
        rs = []
        for _ in range(per_batch):
            s = sensors[k % len(sensors)]
            rs.append({"sensor": s, "time": round(t0 + (k // len(sensors)) * 0.001, 6), "value": 1.0 + (k % 7) * 0.1})
            k += 1
        out.append(encode_batch(collector, seq0 + b, rs, time.time()))
    return out


class DaemonProcess:
    """``plantwatch run`` in a subprocess, with its /metrics endpoint for observation."""

    def __init__(self, config_path: Path, metrics_port: int):
        self.config_path = config_path
        self.metrics_port = metrics_port
        self.proc: subprocess.Popen | None = None
        self.log_path = config_path.with_suffix(".log")

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "plantwatch.daemon.cli", "run", "--config",
                                      str(self.config_path)], stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def metrics(self) -> dict[str, float]:
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).read().decode()
        out: dict[str, float] = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out

    async def wait_connected(self, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.metrics().get("plantwatch_mqtt_connected") == 1.0:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"daemon not connected after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def new_metrics_port() -> int:
    return free_port()
