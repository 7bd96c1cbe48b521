"""Test helpers: site configs of any size, a daemon in a subprocess, publishing, metrics."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiomqtt

from plantwatch.connectors.services import free_port
from plantwatch.connectors.wire import encode_batch
from plantwatch.daemon.lab.bench.env import Daemon


def site_config(*, n_gas: int = 10, n_pressure: int = 0, n_robot: int = 0, mqtt: tuple[str, int] | None = None,
                prefix: str = "plantwatch", dsn: str | None = None, client_id: str = "plantwatch-test",
                metrics_port: int = 0, detectors: str | None = None, ingest: str = "", state: str = "",
                collector: str = "edge1", collector_of: Callable[[str], str] | None = None) -> str:
    """YAML for a two-area site; gas sensors G0.., pressures P0.., robot channels R0...

    The areas' sensors are published by ``collector`` (or by ``collector_of(sensor id)``), the
    robot channels by ``robot1``."""
    lines = ["site:", "  id: testsite", "  areas:", f"    - {{id: area1, bounds: [0, 0, 100, 100], collector: {collector}}}",
             f"    - {{id: area2, bounds: [100, 0, 200, 100], collector: {collector}}}"]
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
    own = (lambda tag: f", collector: {collector_of(tag)}") if collector_of else (lambda tag: "")
    lines += [f"  - {{id: G{i}, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: area1, location: [{i % 100}, 5]{own(f'G{i}')}}}"
              for i in range(n_gas)]
    lines += [f"  - {{id: P{i}, kind: pressure, unit: bar, range: [0, 40], area: area2{own(f'P{i}')}}}" for i in range(n_pressure)]
    lines += [f"  - {{id: R{i}, kind: robot, quantity: H2S, unit: ppm, range: [0, 100], area: area1, collector: robot1}}"
              for i in range(n_robot)]
    if detectors is None:
        detectors = ("detectors:\n"
                     "  - {id: h2s-limit, type: limit, select: {kind: gas}, params: {high: 5, high_high: 10, deadband: 0.5}}\n")
    return "\n".join(lines) + "\n" + detectors


def superuser_dsn(dsn: str) -> str:
    """The administrator's DSN of a test database (the ``db`` fixtures yield the ordinary role's)."""
    user = dsn.split("://", 1)[1].split("@", 1)[0]
    return dsn.replace(f"://{user}@", "://postgres@", 1)


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


class DaemonProcess(Daemon):
    """``plantwatch run`` in a subprocess (the benchmark's own harness), for a config file."""

    def __init__(self, config_path: Path, metrics_port: int):
        super().__init__(config_path.parent, config_path.read_text(), metrics_port, name=config_path.stem)


def new_metrics_port() -> int:
    return free_port()


async def until(fn, timeout: float = 60.0, what: str = "condition"):
    """Poll ``fn`` (plain or coroutine function) every 0.2 s until it returns something truthy and
    return that; a connection refused (a server not listening yet) counts as not yet. Fails with
    ``what`` and the last result after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = fn()
            if asyncio.iscoroutine(last):
                last = await last
        except OSError as e:
            last = e
        else:
            if last:
                return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
