"""Throwaway services, site configs of any size and the daemon as a measured subprocess."""
from __future__ import annotations

import asyncio
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

from pathlib import Path

import psutil

from plantwatch.connectors.rig_db import create_database, drop_database
from plantwatch.connectors.services import MosquittoInstance, PostgresInstance, free_port

SITE = "benchsite"
N_AREAS = 10

#: the default detector set the benchmark runs (limit + stale + robust z-score on every sensor)
DETECTORS = """detectors:
  - {id: h2s-limit, type: limit, select: {kind: gas}, params: {high: 5, high_high: 10, deadband: 0.5}}
  - {id: stale, type: stale, select: {areas: [%(areas)s]}, params: {timeout: 120}}
  - {id: zscore, type: robust_zscore, select: {areas: [%(areas)s]}, params: {window: 300, refresh: 10, threshold: 8}}
"""


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu or platform.processor(),
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "kernel": platform.release()}


def sensor_tags(n: int) -> list[str]:
    """Gas sensors G…, 60 %; pressures P…, 20 %; temperatures T…, 20 % (ids stable per n)."""
    return [_tag(i) for i in range(n)]


def _tag(i: int) -> str:
    k = i % 5
    return f"G{i}" if k < 3 else (f"P{i}" if k == 3 else f"T{i}")


#: sensors per simulated collector (``edge000`` publishes G0..G999, ``edge001`` the next 1000, ...)
SENSORS_PER_COLLECTOR = 1000


def collector_of(i: int, per_collector: int = SENSORS_PER_COLLECTOR) -> str:
    return f"edge{i // per_collector:03d}"


def area_of(i: int) -> str:
    return f"A{i % N_AREAS}"


def site_yaml(n: int, *, host: str, port: int, prefix: str, dsn: str, client_id: str, metrics_port: int,
              ingest: str = "", cluster: str = "", detectors: str | None = None, database: str = "",
              per_collector: int = SENSORS_PER_COLLECTOR, state: str = "", record: str = "") -> str:
    areas = ", ".join(f"A{a}" for a in range(N_AREAS))
    lines = [f"site: {{id: {SITE}, areas: [{', '.join('{id: A%d}' % a for a in range(N_AREAS))}]}}",
             f"mqtt: {{host: {host}, port: {port}, topic_prefix: {prefix}, client_id: {client_id}}}",
             f'database: {{dsn: "{dsn}"{", " + database if database else ""}}}',
             f"metrics: {{port: {metrics_port}}}"]  # state snapshots at the default interval (60 s)
    if ingest:
        lines.append(f"ingest: {ingest}")
    if cluster:
        lines.append(f"cluster: {cluster}")
    if state:
        lines.append(f"state: {state}")
    if record:
        lines.append(f"record: {record}")
    lines.append("sensors:")
    for i in range(n):
        k = i % 5
        own = collector_of(i, per_collector)
        if k < 3:
            lines.append(f"  - {{id: G{i}, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: {area_of(i)}, collector: {own}}}")
        elif k == 3:
            lines.append(f"  - {{id: P{i}, kind: pressure, unit: bar, range: [0, 40], area: {area_of(i)}, collector: {own}}}")
        else:
            lines.append(f"  - {{id: T{i}, kind: temperature, unit: degC, range: [-50, 400], area: {area_of(i)}, collector: {own}}}")
    return "\n".join(lines) + "\n" + (detectors if detectors is not None else DETECTORS % {"areas": areas})


def base_value(i: int) -> float:
    k = i % 5
    return 1.0 if k < 3 else (12.0 if k == 3 else 80.0)


class Services:
    """One Mosquitto and one PostgreSQL (TimescaleDB when installed) for the whole run."""

    def __init__(self, *, fast_db: bool = False, timescaledb: bool | None = None,
                 broker: MosquittoInstance | None = None, pg: PostgresInstance | None = None):
        """``broker`` / ``pg``: services already running (a test's) instead of new ones."""
        self.fast_db = fast_db
        self.broker = broker or MosquittoInstance()
        # honest durability (fsync on) unless asked; sized like a small production server
        self.pg = pg or PostgresInstance(fast=fast_db, timescaledb=timescaledb, settings={
            "shared_buffers": "2GB", "max_wal_size": "8GB", "checkpoint_timeout": "15min",
            "work_mem": "64MB", "maintenance_work_mem": "512MB", "effective_cache_size": "8GB",
            "wal_buffers": "64MB", "max_parallel_workers_per_gather": 2})

    def start(self) -> "Services":
        self.broker.start()
        self.pg.start()
        return self

    def stop(self) -> None:
        for s in (self.broker, self.pg):
            try:
                s.stop()
            except Exception:  # noqa: BLE001
                pass

    async def fresh_db(self) -> str:
        name = f"bench_{uuid.uuid4().hex[:10]}"
        await create_database(self.pg.admin_dsn, name)
        return self.pg.dsn_for(name)

    async def drop_db(self, dsn: str) -> None:
        await drop_database(self.pg.admin_dsn, dsn)


class CliProcess:
    """``plantwatch COMMAND --config FILE`` as a subprocess, its log in a file next to the config."""

    command = "run"
    log_tail: int | None = None  # characters of the log that :meth:`log` returns (None: all)
    stop_timeout = 120.0  # seconds :meth:`terminate` waits after SIGTERM before SIGKILL

    def __init__(self, workdir: Path, yaml_text: str, name: str):
        self.dir = workdir
        self.cfg = workdir / f"{name}.yaml"
        self.cfg.write_text(yaml_text)
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "plantwatch.daemon.cli.main", self.command, "--config", str(self.cfg)],
                                     stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def log(self) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return text[-self.log_tail:] if self.log_tail else text

    def terminate(self, timeout: float | None = None) -> int | None:
        """SIGTERM (graceful), then the exit code; SIGKILL if it does not end within ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(self.stop_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Daemon(CliProcess):
    """``plantwatch run`` as a subprocess: its metrics, its memory, py-spy on demand."""

    log_tail = 5000

    def __init__(self, workdir: Path, yaml_text: str, metrics_port: int, name: str = "daemon"):
        super().__init__(workdir, yaml_text, name)
        self.metrics_port = metrics_port
        self.peak_rss = 0
        self._ps: psutil.Process | None = None

    def start(self) -> None:
        super().start()
        self._ps = psutil.Process(self.proc.pid)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def metrics(self) -> dict[str, float]:
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        out: dict[str, float] = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out

    def stored(self) -> float:
        return self.metrics().get('plantwatch_readings_stored_total{table="readings"}', 0.0)

    def sample_rss(self) -> int:
        try:
            rss = self._ps.memory_info().rss if self._ps else 0
        except psutil.Error:
            rss = 0
        self.peak_rss = max(self.peak_rss, rss)
        return rss

    def hwm(self) -> int:
        """The kernel's own peak RSS of the process (VmHWM), in bytes."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def cpu_seconds(self) -> float:
        try:
            t = self._ps.cpu_times()
            return t.user + t.system
        except psutil.Error:
            return 0.0

    async def wait_connected(self, timeout: float = 180) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.metrics().get("plantwatch_mqtt_connected") == 1.0:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"daemon not connected after {timeout}s:\n{self.log()}")



def new_port() -> int:
    return free_port()


def cpu_tree(pid: int | None) -> float:
    """CPU seconds of a process, its reaped children and its live descendants."""
    if not pid:
        return 0.0
    try:
        p = psutil.Process(pid)
        t = p.cpu_times()
        s = t.user + t.system + t.children_user + t.children_system
        for c in p.children(recursive=True):
            try:
                ct = c.cpu_times()
                s += ct.user + ct.system
            except psutil.Error:
                pass
        return s
    except psutil.Error:
        return 0.0


class CpuMeter:
    """CPU seconds used by the broker, the database cluster and the daemon over a span."""

    def __init__(self, svc: "Services", daemon_pid: int | None = None):
        self.svc = svc
        self.daemon_pid = daemon_pid
        self.t0 = self._now()

    def _now(self) -> dict[str, float]:
        return {"broker": cpu_tree(self.svc.broker.pid), "db": cpu_tree(self.svc.pg._server_pid()),  # noqa: SLF001
                "daemon": cpu_tree(self.daemon_pid), "wall": time.monotonic()}

    def done(self) -> dict[str, float]:
        t1 = self._now()
        return {k: t1[k] - self.t0[k] for k in t1}
