"""docs/operations.md followed on this machine, step by step, with the shipped files as they are:
the database set up by the administrator's statements on a TLS-only PostgreSQL + TimescaleDB,
the broker from the shipped mosquitto.conf and ACL with TLS, collector certificates and the
daemon's password file, the daemon and the edge collector started from the Exec lines of
deploy/systemd/*.service as written (without systemd: a notify socket of our own stands in for
it), a sensor added and applied with the unit's ExecReload, the console's /healthz and the
metrics the guide says to watch, and the dashboards rendered for the site."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import asyncpg
import pytest
import yaml

from plantwatch.connectors.services import free_port
from plantwatch.connectors.tls_services import TlsPostgres

from .conftest import _fresh_database, _started
from .edge_helpers import ModbusServer
from .helpers import until
from .test_site_stack import SERVICES, DocumentedPasswordFile

REPO = Path(__file__).resolve().parents[1]
UNITS = REPO / "deploy" / "systemd"
GUIDE = (REPO / "docs" / "operations.md").read_text()
VENV_BIN = Path(sys.executable).parent


def unit(name: str) -> dict[str, str]:
    """key -> value of a unit file (the keys used here appear once)."""
    out = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, v = line.split("=", 1)
            assert k not in out, f"{name}: {k} twice"
            out[k] = v
    return out


def test_units_run_as_a_dedicated_user_restart_always_and_are_hardened():
    for name in ("plantwatch.service", "plantwatch-collect.service"):
        u = unit(name)
        assert u["User"] == "plantwatch" and u["Restart"] == "always", name
        for key, want in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes"),
                          ("ProtectHome", "yes"), ("CapabilityBoundingSet", "")):
            assert u.get(key) == want, (name, key)
        assert u["WorkingDirectory"] == f"/var/lib/{u['StateDirectory']}", name
        assert u["ExecStart"].startswith("/opt/plantwatch/venv/bin/plantwatch "), name
    d = unit("plantwatch.service")
    assert d["Type"] == "notify" and int(d["WatchdogSec"]) > 0 and d["ExecReload"] == "/bin/kill -HUP $MAINPID"
    # the guide installs what the units run
    assert "python3.11 -m venv /opt/plantwatch/venv" in GUIDE and "pip install 'plantwatch[edge]'" in GUIDE
    assert "state: {data_dir: /var/lib/plantwatch}" in GUIDE and "plantwatch db migrate" in GUIDE


class Notifications:
    """A NOTIFY_SOCKET of our own, read all the time as systemd does: what the service sends."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pw-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.got: list[str] = []
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.got += self.sock.recv(4096).decode().split("\n")
            except TimeoutError:
                continue

    def read(self) -> list[str]:
        return list(self.got)

    def close(self):
        self._stop.set()
        self._reader.join(5)
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


def exec_line(line: str, paths: dict[str, str]) -> list[str]:
    argv = shlex.split(line)
    return [paths.get(a, a) for a in argv]


def env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def _https(url: str, ca: str) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=ca)
    try:
        with urllib.request.urlopen(url, timeout=10, context=ctx) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def _tags_stored(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn, ssl=ssl.create_default_context(cafile=_CA[0]))
    try:
        return {r["tag"] for r in await conn.fetch(
            "SELECT DISTINCT s.tag FROM readings r JOIN sensors s ON s.id = r.sensor_id")}
    finally:
        await conn.close()


_CA: list[str] = []


@pytest.mark.slow
async def test_the_operations_guide_on_this_machine(site_ca, tmp_path):
    _CA[:] = [site_ca.ca_file]
    pg = await asyncio.to_thread(_started, lambda: TlsPostgres(site_ca, fast=True))
    notes = Notifications()
    procs: list[subprocess.Popen] = []
    modbus = ModbusServer()
    try:
        async for dsn in _fresh_database(pg):  # step 2: the administrator's statements
            await _walk(site_ca, tmp_path, dsn, notes, procs, modbus)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        await modbus.stop()
        notes.close()
        await asyncio.to_thread(pg.stop)


async def _walk(site_ca, tmp_path: Path, dsn: str, notes: Notifications, procs: list, modbus: ModbusServer):
    etc, state, edge_state = tmp_path / "etc", tmp_path / "state", tmp_path / "edge-state"
    for d in (etc, state, edge_state):
        d.mkdir()
    # step 3: the broker, TLS and users; the daemon's password as the stack writes it
    env = {k: f"pw-{os.urandom(8).hex()}" for k in re.findall(r"\$\$(\w+)", SERVICES["mosquitto-passwd"]["command"][0])}
    broker = DocumentedPasswordFile(site_ca, env)
    await asyncio.to_thread(broker.start)
    try:
        # plantwatch.env as the example shows it, with this site's secrets
        example = env_file(UNITS / "plantwatch.env.example")
        assert set(example) == {"PGPASSWORD", "PLANTWATCH_MQTT_PASSWORD"}
        (etc / "plantwatch.env").write_text(f"PGPASSWORD=unused-trust-auth\nPLANTWATCH_MQTT_PASSWORD={env['MQTT_PLANTWATCH_PASSWORD']}\n")

        # step 4: site.yaml from the shipped one, this machine's addresses, state in the state directory
        api_cert, api_key = site_ca.server("plantwatch", "127.0.0.1", "localhost")
        (etc / "api-tokens").write_text("")
        api_port, metrics_port = free_port(), free_port()
        site = yaml.safe_load((REPO / "deploy" / "site" / "plantwatch" / "site.yaml").read_text())
        site["mqtt"] |= {"host": "127.0.0.1", "port": broker.local(8884), "tls": {"ca_file": site_ca.ca_file},
                         "client_id": f"pw-{os.urandom(4).hex()}"}
        site["database"] = {"dsn": dsn, "tls": {"mode": "verify-full", "ca_file": site_ca.ca_file}}
        site["metrics"] = {"host": "127.0.0.1", "port": metrics_port}
        site["api"] |= {"host": "127.0.0.1", "port": api_port, "tls": {"cert_file": api_cert, "key_file": api_key},
                        "token_file": str(etc / "api-tokens")}
        site["state"] = {"data_dir": str(state)}
        (etc / "site.yaml").write_text(yaml.safe_dump(site, sort_keys=False))

        # step 5: the first collector, its certificate, a Modbus device
        await modbus.start()
        cert, key = site_ca.client("edge-tank-farm")
        channels = ["      - {sensor: TF-H2S-01, address: 0, scale: 0.001, loop: {range: [0, 100]}}",
                    "      - {sensor: TF-H2S-02, address: 1, scale: 0.001, loop: {range: [0, 100]}}",
                    "      - {sensor: PT-201, address: 2, scale: 0.001, loop: {range: [0, 16]}}"]

        def collect_yaml() -> str:
            return ("collector: edge-tank-farm\nsite: demo\n"
                    f"mqtt: {{host: 127.0.0.1, port: {broker.local(8883)}, topic_prefix: plantwatch,"
                    f" tls: {{ca_file: {site_ca.ca_file}, cert_file: {cert}, key_file: {key}}}}}\n"
                    f"buffer: {{path: {edge_state}/buffer.sqlite3, flush_grace: 5}}\nbatch: {{interval: 0.5}}\n"
                    f"sources:\n  - type: modbus\n    id: panel\n    host: 127.0.0.1\n    port: {modbus.port}\n"
                    "    interval: 0.5\n    channels:\n" + "\n".join(channels) + "\n")

        (etc / "collect.yaml").write_text(collect_yaml())
        for address, micro_amps in ((0, 4800), (1, 4800), (2, 12000)):
            await modbus.set("holding", address, [micro_amps])

        paths = {"/opt/plantwatch/venv/bin/plantwatch": str(VENV_BIN / "plantwatch"),
                 "/etc/plantwatch/site.yaml": str(etc / "site.yaml"),
                 "/etc/plantwatch/collect.yaml": str(etc / "collect.yaml")}
        d, c = unit("plantwatch.service"), unit("plantwatch-collect.service")
        base_env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        for u in (d, c):  # ExecStartPre: the config check, as the unit runs it
            pre = subprocess.run(exec_line(u["ExecStartPre"], paths), capture_output=True, text=True, timeout=60)
            assert pre.returncode == 0 and ": OK" in pre.stdout + pre.stderr, pre

        daemon_env = base_env | env_file(etc / "plantwatch.env") | {
            "NOTIFY_SOCKET": notes.path, "WATCHDOG_USEC": str(2_000_000)}
        daemon_log = open(tmp_path / "daemon.log", "wb")
        daemon = subprocess.Popen(exec_line(d["ExecStart"], paths), cwd=state, env=daemon_env, stdout=daemon_log,
                                  stderr=subprocess.STDOUT)
        procs.append(daemon)
        log = lambda: (tmp_path / "daemon.log").read_text(errors="replace")[-4000:]  # noqa: E731
        await until(lambda: daemon.poll() is not None or "READY=1" in notes.read(), 120, "READY=1 from the daemon")
        assert daemon.poll() is None, log()
        await until(lambda: notes.read().count("WATCHDOG=1") >= 2, 10, "WATCHDOG=1 every WatchdogSec/2")
        assert (state / "plantwatch.pid").read_text().strip() == str(daemon.pid)

        collector_log = open(tmp_path / "collect.log", "wb")

        def start_collector() -> subprocess.Popen:
            p = subprocess.Popen(exec_line(c["ExecStart"], paths), cwd=edge_state, env=base_env,
                                 stdout=collector_log, stderr=subprocess.STDOUT)
            procs.append(p)
            return p

        collector = start_collector()
        await until(lambda: _has(dsn, {"TF-H2S-01", "TF-H2S-02", "PT-201"}), 60,
                    "the collector's readings stored")

        # step 6: a sensor added: config check, ExecReload, its channel, the collector restarted
        site["sensors"].append({"id": "TF-H2S-03", "kind": "gas", "quantity": "H2S", "unit": "ppm", "range": [0, 100],
                                "area": "tank-farm", "location": [60, 20]})
        (etc / "site.yaml").write_text(yaml.safe_dump(site, sort_keys=False))
        check = subprocess.run([str(VENV_BIN / "plantwatch"), "config", "check", str(etc / "site.yaml")],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0 and "9 sensors" in check.stdout, check
        before = len(notes.read())
        reload_ = subprocess.run(exec_line(d["ExecReload"].replace("$MAINPID", str(daemon.pid)), paths), timeout=30)
        assert reload_.returncode == 0
        await until(lambda: "READY=1" in notes.read()[before:], 60, "READY=1 after the reload")
        assert "RELOADING=1" in notes.read()[before:]
        outcome = json.loads((state / "config-reload.json").read_text())
        assert outcome["ok"] and "9 sensors" in outcome["message"], outcome
        channels.append("      - {sensor: TF-H2S-03, address: 3, scale: 0.001, loop: {range: [0, 100]}}")
        (etc / "collect.yaml").write_text(collect_yaml())
        await modbus.set("holding", 3, [4800])
        collector.terminate()
        assert collector.wait(60) == 0
        collector = start_collector()
        await until(lambda: _has(dsn, {"TF-H2S-03"}), 60, "the new sensor's readings stored")
        assert daemon.poll() is None  # never restarted

        # step 7: the dashboards rendered for the site link to its console
        out = tmp_path / "dashboards"
        r = subprocess.run([str(VENV_BIN / "plantwatch"), "grafana", "render", "--config", str(etc / "site.yaml"),
                            "--out", str(out)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r
        overview = json.loads((out / "plant-overview.json").read_text())
        assert overview["timezone"] == "utc"
        assert {v["query"] for v in overview["templating"]["list"] if v["name"] == "console_url"} == {
            site["notify"]["console_url"]}

        # step 10: what to watch
        try:
            status, body = await asyncio.to_thread(_https, f"https://127.0.0.1:{api_port}/healthz", site_ca.ca_file)
        except OSError as e:
            raise AssertionError(f"/healthz: {e}\n{log()}") from None
        assert status == 200 and json.loads(body)["ok"] is True, body
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        watched = re.findall(r"^\| `(plantwatch_\w+)` \|", GUIDE, re.M)
        assert len(watched) >= 6
        for name in watched:
            assert re.search(rf"^# TYPE {name} ", metrics, re.M), \
                f"{name} (docs/operations.md) not exported"
        for rule in re.findall(r"\((`pw-[\w-]+`)\)", GUIDE):
            assert f"uid: {rule.strip('`')}" in (REPO / "dashboards" / "provisioning" / "alerting" / "rules.yaml").read_text()

        # a graceful stop: STOPPING=1, exit 0, the pid file removed; the collector flushes and exits 0
        collector.terminate()
        assert collector.wait(60) == 0
        daemon.terminate()
        assert daemon.wait(60) == 0, log()
        assert "STOPPING=1" in notes.read() and not (state / "plantwatch.pid").exists()
    finally:
        await asyncio.to_thread(broker.stop)


async def _has(dsn: str, tags: set[str]) -> bool:
    return tags <= await _tags_stored(dsn)


def test_a_unit_file_drift_is_caught(tmp_path):
    """The command-line check would fail on a unit naming an option the CLI does not have."""
    from .test_site_stack import parse_cli

    for name in ("plantwatch.service", "plantwatch-collect.service"):
        u = unit(name)
        for key in ("ExecStartPre", "ExecStart"):
            argv = shlex.split(u[key])
            assert argv[0] == "/opt/plantwatch/venv/bin/plantwatch"
            parse_cli(["plantwatch"] + argv[1:])
    with pytest.raises(SystemExit):
        parse_cli(["plantwatch", "run", "--site-config", "/etc/plantwatch/site.yaml"])
    assert time.time() > 0


def test_sd_notify_never_blocks_on_a_reader_that_lags():
    """A notify socket nobody reads fills up (net.unix.max_dgram_qlen); the daemon's event loop
    must not wait on it: the send fails at once instead (seen: a graceful stop hung on it)."""
    from plantwatch.connectors.systemd_notify import notify, watchdog_interval

    d = tempfile.mkdtemp(prefix="pw-notify-")
    path = os.path.join(d, "n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        t0 = time.monotonic()
        with pytest.raises(BlockingIOError):
            for _ in range(10_000):
                notify("WATCHDOG=1", env={"NOTIFY_SOCKET": path})
        assert time.monotonic() - t0 < 5
        s.settimeout(1)
        assert s.recv(100) == b"WATCHDOG=1"
    os.unlink(path)
    os.rmdir(d)
    assert notify("READY=1", env={}) is False
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}) is None
