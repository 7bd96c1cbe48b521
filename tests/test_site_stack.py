"""The shipped site stack (deploy/site/) as it is, without Docker: its site.yaml passes `config
check`, the demo profile's simulator command runs its scenario against it, and a real Mosquitto
started from the shipped mosquitto.conf and ACL, with the password file written by the command
compose.yaml runs, lets every collector the site config names publish its own readings (and no
other collector's) and the daemon, logged in as the shipped daemon user, read them all."""
from __future__ import annotations

import asyncio
import importlib
import os
import re
import shlex
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiomqtt
import asyncpg
import pytest
import yaml

from plantwatch.connectors.services import free_port
from plantwatch.connectors.tls_services import SiteBroker
from plantwatch.connectors.wire import encode_batch
from plantwatch.daemon.cli.main import PASSTHROUGH, build_parser
from plantwatch.daemon.config.model import load_config, load_config_text
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.runtime import DaemonHandle

from .helpers import until

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / "deploy" / "site"
COMPOSE = yaml.safe_load((SITE / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def site_config():
    return load_config(SITE / "plantwatch" / "site.yaml", check_files=False)


def collectors(cfg) -> list[str]:
    return sorted({cfg.collector_of(s) for s in cfg.sensors})


def _mounts(service: str) -> dict[str, Path]:
    """container path -> local file of a service's bind mounts"""
    out = {}
    for v in SERVICES[service].get("volumes") or []:
        src, dst = v.split(":")[:2]
        if src.startswith("."):
            out[dst] = (SITE / src).resolve()
    return out


def parse_cli(argv: list[str]) -> None:
    """Parse ``argv`` (``plantwatch ...``) with the real CLI's parsers; SystemExit if it does not exist."""
    assert argv[0] == "plantwatch", argv
    args, rest = build_parser().parse_known_args(argv[1:])
    if args.cmd in PASSTHROUGH:
        importlib.import_module(PASSTHROUGH[args.cmd][0])._parser().parse_args(rest)
    elif args.cmd == "grafana":
        from plantwatch.daemon.cli.grafana import render_parser

        assert rest[:1] == ["render"], rest
        render_parser().parse_args(rest[1:])
    else:
        assert not rest, rest


# --- files and commands ------------------------------------------------------------------------

def test_config_check_passes_on_the_shipped_site_yaml():
    proc = subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli", "config", "check", "--skip-files",
                           str(SITE / "plantwatch" / "site.yaml")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert ": OK" in proc.stdout and proc.stderr == "", (proc.stdout, proc.stderr)


def test_every_image_and_command_the_compose_file_references_exists():
    built = {svc["image"] for svc in SERVICES.values() if svc.get("build")}
    assert built == {"plantwatch:site"}
    for name, svc in SERVICES.items():
        image = svc.get("image")
        if image in built:
            assert (SITE / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file() if svc.get("build") else True
        else:  # an outside image: pinned to a version, never :latest
            assert re.fullmatch(r"[\w./-]+:v?\d[\w.-]*", image), f"{name}: {image}"
        cmd = svc.get("command")
        if image in built:
            assert isinstance(cmd, list) and cmd[0] == "plantwatch", f"{name}: {cmd}"
            parse_cli(cmd)
            # every file the command names is mounted from the repository or the stack's volumes
            mounts = _mounts(name)
            for arg in cmd:
                if arg.startswith("/etc/plantwatch/") and not arg.startswith("/etc/plantwatch/tls/"):
                    assert arg in mounts and mounts[arg].is_file(), f"{name}: {arg} is not mounted"
    # the Dockerfile copies what pip needs
    docker = (SITE / "Dockerfile").read_text()
    for path in re.findall(r"^COPY (\S+)", docker, re.M):
        assert (REPO / path).exists(), path


def test_site_yaml_names_a_console_the_dashboards_link_to_and_every_collector_has_a_certificate():
    cfg = site_config()
    assert cfg.api is not None and cfg.api.tls is not None
    assert f"{cfg.api.port}:{cfg.api.port}" in SERVICES["plantwatch"]["ports"]
    from plantwatch.daemon.cli.grafana import console_url_of

    url = console_url_of(str(SITE / "plantwatch" / "site.yaml"))
    assert url is not None and url.startswith("https://") and url.endswith(f":{cfg.api.port}")
    cmd = SERVICES["dashboards"]["command"]
    assert cmd[:3] == ["plantwatch", "grafana", "render"] and "/etc/plantwatch/site.yaml" in cmd
    out = cmd[cmd.index("--out") + 1]
    (vol,) = [v.split(":")[0] for v in SERVICES["dashboards"]["volumes"] if v.split(":")[1] == out]
    assert f"{vol}:/var/lib/grafana/dashboards/plantwatch:ro" in SERVICES["grafana"]["volumes"]
    # the certificates the stack's README says to make: every collector's, and the simulator's
    made = set(re.findall(r"make-site-ca\.sh --dir tls client (\S+)", (SITE / "tls" / "README.md").read_text()))
    assert set(collectors(cfg)) | {"simulator"} <= made, set(collectors(cfg)) - made
    # the simulator runs in the demo profile only, with its own certificate (its user in the ACL)
    assert SERVICES["simulator"]["profiles"] == ["demo"]
    assert "/etc/plantwatch/tls/simulator.crt" in SERVICES["simulator"]["command"]
    assert "user simulator\n" in (SITE / "mosquitto" / "acl").read_text()
    for name, svc in SERVICES.items():
        if name != "simulator":
            assert "simulator" not in " ".join(svc.get("command") or []) or name == "tls-files", name


# --- the stack run ------------------------------------------------------------------------------

class DocumentedPasswordFile(SiteBroker):
    """The shipped broker, whose password file is written by compose's mosquitto-passwd command
    itself (run with sh, /mosquitto/auth pointed at the broker's folder, the .env values given)."""

    def __init__(self, ca, env: dict[str, str]):
        super().__init__(ca, {})
        self.env = env

    def _password_file(self, shipped: str, mounts: dict[str, str]) -> str:
        script = SERVICES["mosquitto-passwd"]["command"][0].replace("$$", "$")
        script = script.replace("/mosquitto/auth/", mounts["/mosquitto/auth/"])
        script = script.replace("chown -R mosquitto:mosquitto", ": ")  # the container's user; not here
        env = dict(os.environ) | self.env
        proc = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return shipped.replace("/mosquitto/auth/", mounts["/mosquitto/auth/"])


def _tls(ca: str, cert: tuple[str, str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(*cert)
    return ctx


async def _count(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@pytest.mark.slow
async def test_the_shipped_stack_carries_every_collectors_readings_and_the_simulators(site_ca, db, tmp_path,
                                                                                       monkeypatch):
    cfg = site_config()
    env = {k: f"pw-{uuid.uuid4().hex}" for k in re.findall(r"\$\$(\w+)", SERVICES["mosquitto-passwd"]["command"][0])}
    broker = DocumentedPasswordFile(site_ca, env)
    await asyncio.to_thread(broker.start)
    try:
        # the daemon: site.yaml with the addresses of this machine, the password from the environment
        # as compose gives it
        data = yaml.safe_load((SITE / "plantwatch" / "site.yaml").read_text())
        data["mqtt"] |= {"host": "127.0.0.1", "port": broker.local(cfg.mqtt.port), "tls": {"ca_file": site_ca.ca_file},
                         "client_id": f"pw-{uuid.uuid4().hex[:8]}"}
        data["database"] = {"dsn": db}
        data["metrics"] = {"port": 0}
        cert, key = site_ca.server("plantwatch", "127.0.0.1", "localhost")
        (tmp_path / "tokens").write_text("")
        data["api"] |= {"host": "127.0.0.1", "port": free_port(), "tls": {"cert_file": cert, "key_file": key},
                        "token_file": str(tmp_path / "tokens")}
        data["state"] = {"data_dir": str(tmp_path / "state")}
        compose_env = SERVICES["plantwatch"]["environment"]["PLANTWATCH_MQTT_PASSWORD"]
        monkeypatch.setenv("PLANTWATCH_MQTT_PASSWORD", env[re.match(r"\$\{(\w+)", compose_env).group(1)])
        handle = DaemonHandle(load_config_text(yaml.safe_dump(data), "site.yaml"), metrics=Metrics())
        task = asyncio.create_task(handle.run())
        await until(lambda: task.done() or (handle.daemon is not None and handle.daemon.ready.is_set()), 60,
                    "the daemon subscribed")
        if task.done():
            task.result()
        try:
            edge_port = broker.local(int(SERVICES["mosquitto"]["ports"][0].split(":")[-1]))
            t0 = time.time() - 300
            names = collectors(cfg)
            by = {c: [s for s in cfg.sensors if cfg.collector_of(s) == c] for c in names}
            # a collector may not publish as another one: this batch is dropped by the ACL
            first, second = names[0], names[1]
            async with aiomqtt.Client("127.0.0.1", edge_port, identifier=second,
                                      tls_context=_tls(site_ca.ca_file, site_ca.client(second))) as c:
                await c.publish(f"{cfg.mqtt.topic_prefix}/{cfg.site.id}/{first}/readings",
                                encode_batch(first, 0, [{"sensor": by[first][0].id, "time": t0 - 1, "value": 1.0}]),
                                qos=1)
            for coll in names:
                ctx = _tls(site_ca.ca_file, site_ca.client(coll))
                async with aiomqtt.Client("127.0.0.1", edge_port, identifier=coll, tls_context=ctx) as c:
                    fixed = [{"sensor": s.id, "time": t0, "value": 1.0} for s in by[coll] if s.kind != "robot"]
                    robot = [{"sensor": s.id, "time": t0, "value": 1.0, "x": 10.0, "y": 10.0}
                             for s in by[coll] if s.kind == "robot"]
                    for kind, readings in (("readings", fixed), ("robot", robot)):
                        if readings:
                            await c.publish(f"{cfg.mqtt.topic_prefix}/{cfg.site.id}/{coll}/{kind}",
                                            encode_batch(coll, 0 if kind == "readings" else 1, readings), qos=1)
            n = len(cfg.sensors)
            sql = (f"SELECT (SELECT count(*) FROM readings WHERE time = to_timestamp({t0}))"
                   f" + (SELECT count(*) FROM robot_readings WHERE time = to_timestamp({t0}))")
            try:
                await until(lambda: _is(db, sql, n), 60, f"the {n} readings of {names} stored")
            except AssertionError:
                stored = await _count(db, sql)
                dead = await _rows(db, "SELECT topic, reason, detail FROM dead_letters")
                near = await _rows(db, "SELECT s.tag, r.time FROM (SELECT sensor_id, time FROM readings UNION ALL"
                                       " SELECT sensor_id, time FROM robot_readings) r JOIN sensors s ON s.id = r.sensor_id"
                                       f" WHERE r.time BETWEEN to_timestamp({t0 - 1}) AND to_timestamp({t0 + 1})")
                raise AssertionError(f"{stored} of {n} readings stored at to_timestamp({t0}); stored near it: {near};"
                                     f" dead letters {dead};"
                                     f" broker log:\n{broker.log_path.read_text()[-3000:]}") from None
            assert await _count(db, f"SELECT count(*) FROM readings WHERE time = to_timestamp({t0 - 1})") == 0

            # the demo profile's simulator, its command as compose runs it, for a few seconds
            cmd = list(SERVICES["simulator"]["command"])
            mounts = _mounts("simulator")
            files = {"/etc/plantwatch/tls/ca.crt": site_ca.ca_file}
            files["/etc/plantwatch/tls/simulator.crt"], files["/etc/plantwatch/tls/simulator.key"] = \
                site_ca.client("simulator")
            cmd = [str(mounts.get(a) or files.get(a) or a) for a in cmd]
            cmd[cmd.index("--broker") + 1] = f"127.0.0.1:{edge_port}"
            cmd[cmd.index("--truth") + 1] = str(tmp_path / "truth.json")
            before = await _count(db, "SELECT count(*) FROM readings")
            proc = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "plantwatch.daemon.cli"] + cmd[1:] + ["--duration", "4"],
                capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, (shlex.join(cmd), proc.stdout, proc.stderr)
            assert re.search(r"simulated 4 s of site 'demo'.* 0 dropped, 0 unsent", proc.stdout), proc.stdout
            fixed = sum(1 for s in cfg.sensors if s.kind != "robot")
            await until(lambda: _at_least(db, "SELECT count(*) FROM readings", before + 3 * fixed), 30,
                        "the simulator's readings stored")
            assert await _count(db, "SELECT count(*) FROM dead_letters") == 0
        finally:
            handle.request_stop()
            await asyncio.wait_for(task, 60)
    finally:
        await asyncio.to_thread(broker.stop)


async def _rows(dsn: str, sql: str) -> list:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def _is(dsn: str, sql: str, n: int) -> bool:
    return await _count(dsn, sql) == n


async def _at_least(dsn: str, sql: str, n: int) -> bool:
    return await _count(dsn, sql) >= n
