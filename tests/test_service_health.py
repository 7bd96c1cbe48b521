"""The daemon as a service, through a real Mosquitto and a real PostgreSQL/TimescaleDB: it runs as
an ordinary database role; /healthz, the lag gauge and the log tell a stalled or stopped database;
the API answers 503 instead of hanging and 404/400 for ids it cannot hold; SIGTERM acknowledges
what it commits while draining; ``plantwatch transfer`` works with the shipped broker ACL and
reports success only once the daemon has stored the declaration."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import asyncpg
import psutil
import pytest

from plantwatch.connectors.db_setup import provision
from plantwatch.connectors.services import MosquittoInstance, PostgresInstance, free_port
from plantwatch.connectors.wire import encode_batch
from plantwatch.daemon.alarms.api import hash_token

from .conftest import APP_ROLE
from .helpers import DaemonProcess, make_batches, new_metrics_port, publish_batches, site_config, superuser_dsn, until

pytestmark = pytest.mark.slow

SITE_ACL = Path(__file__).resolve().parents[1] / "deploy" / "site" / "mosquitto" / "acl"
TOKEN = "tok-ins-" + uuid.uuid4().hex
LAG = "plantwatch_ingest_lag_seconds"


def _daemon(tmp_path: Path, mosquitto, dsn: str, prefix: str, *, n_gas: int = 10, ingest: str = "",
            api: str = "", client_id: str | None = None, name: str = "site") -> tuple[DaemonProcess, int]:
    api_port, mport = free_port(), new_metrics_port()
    detectors = ("detectors:\n"
                 "  - {id: h2s-limit, type: limit, select: {kind: gas}, params: {high: 5, high_high: 10}}\n"
                 f"api: {{port: {api_port}, tokens: [{{name: ins, role: inspector, sha256: {hash_token(TOKEN)}}}]"
                 f"{', ' + api if api else ''}}}\n")
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(site_config(n_gas=n_gas, mqtt=(mosquitto.host, mosquitto.port), prefix=prefix, dsn=dsn,
                               client_id=client_id or f"pw-{uuid.uuid4().hex[:8]}", metrics_port=mport,
                               detectors=detectors, ingest=ingest))
    return DaemonProcess(cfg, mport), api_port


def _call(port: int, path: str, token: str | None = None, body: dict | None = None, timeout: float = 30):
    """(status, parsed JSON body); raises when the server does not answer within ``timeout``."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST" if body is not None else "GET",
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), json.loads(r.read())
    except urllib.error.HTTPError as e:
        data = e.read()
        ct = e.headers.get("Content-Type", "")
        return e.code, ct, (json.loads(data) if "json" in ct else data.decode(errors="replace"))


async def _acall(*args, **kw):
    return await asyncio.to_thread(_call, *args, **kw)



async def _count(dsn: str, table: str = "readings") -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(f"SELECT count(*) FROM {table}")
    finally:
        await conn.close()


async def _healthz(port: int, want: int):
    st, _, body = await _acall(port, "/healthz")
    return body if st == want else None


def _batch(seq: int, n: int = 10) -> bytes:
    """Readings of G0..G{n-1} stamped now, as a live collector sends them."""
    t = time.time() + seq * 0.001
    return encode_batch("edge1", seq, [{"sensor": f"G{i}", "time": t, "value": 1.0} for i in range(n)])


# --- 6: an ordinary database role ----------------------------------------------------------------
async def test_daemon_runs_as_an_ordinary_role_and_grafana_reader_reads(tmp_path, mosquitto, any_db, topic_prefix):
    admin = await asyncpg.connect(superuser_dsn(any_db))
    try:
        role = await admin.fetchrow("SELECT rolsuper, rolcreaterole, pg_has_role(rolname, 'pg_read_all_settings', 'USAGE')"
                                    " AS read_settings FROM pg_roles WHERE rolname = $1", APP_ROLE)
        assert dict(role) == {"rolsuper": False, "rolcreaterole": False, "read_settings": False}
        timescale = "timescaledb" in await admin.fetchval("SHOW shared_preload_libraries")
    finally:
        await admin.close()
    assert any_db.startswith(f"postgresql://{APP_ROLE}@")
    prefix = topic_prefix.rstrip("/")
    d, _ = _daemon(tmp_path, mosquitto, any_db, prefix)
    d.start()
    try:
        await d.wait_connected(60)
        await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/testsite/edge1/readings",
                              [_batch(k) for k in range(5)])
        await until(lambda: _count_ge(any_db, 50), what="50 readings stored")
        assert d.terminate() == 0, d.log()
    finally:
        d.kill()
    conn = await asyncpg.connect(any_db)
    try:
        hyper = await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
        assert bool(hyper) == timescale
        if timescale:
            names = {r[0] for r in await conn.fetch("SELECT hypertable_name FROM timescaledb_information.hypertables")}
            assert {"readings", "robot_readings", "readings_1m", "readings_1h"} <= names
    finally:
        await conn.close()
    # the read-only role the administrator created, granted by migration 002 run as the ordinary role
    reader = await asyncpg.connect(any_db.replace(f"//{APP_ROLE}@", "//plantwatch_reader@", 1))
    try:
        assert await reader.fetchval("SELECT count(*) FROM readings") == 50
        assert await reader.fetchval("SELECT count(*) FROM v_latest_readings WHERE time IS NOT NULL") == 10
        assert await reader.fetchval("SHOW statement_timeout") == "10s"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.fetch("SELECT * FROM config_versions")
        with pytest.raises(asyncpg.PostgresError):
            await reader.execute("DELETE FROM readings")
    finally:
        await reader.close()


async def _count_ge(dsn: str, n: int) -> bool:
    return await _count(dsn) >= n


# --- 14: ids the database cannot hold ---------------------------------------------------------------
async def test_api_ids_beyond_int64_are_404_and_non_numeric_400_as_json(tmp_path, mosquitto, db, topic_prefix):
    d, api_port = _daemon(tmp_path, mosquitto, db, topic_prefix.rstrip("/"))
    d.start()
    try:
        await d.wait_connected(60)
        await until(lambda: _healthz(api_port, 200), what="api up")
        huge = "99999999999999999999"
        for path, body in [(f"/api/alarms/{huge}", None), (f"/api/alarms/{huge}/ack", {}),
                           (f"/api/alarms/{huge}/shelve", {"duration": 60}), (f"/api/incidents/{huge}", None),
                           (f"/api/incidents/{huge}/report", None), ("/api/alarms/9223372036854775808", None),
                           ("/api/alarms/9223372036854775807", None)]:
            st, ct, got = await _acall(api_port, path, TOKEN, body)
            if path.endswith("/ack") or path.endswith("/shelve"):
                assert st in (403, 404), (path, st, got)  # an inspector may not act; never a 500
            else:
                assert st == 404, (path, st, got)
            assert "json" in ct and "error" in got, (path, got)
        for path in ("/api/alarms/abc", "/api/alarms/-1", "/api/incidents/1e3", "/api/alarms/%20/ack"):
            st, ct, got = await _acall(api_port, path, TOKEN, {} if path.endswith("ack") else None)
            assert st == 400 and "json" in ct and "error" in got, (path, st, got)
        assert d.terminate() == 0, d.log()
    finally:
        d.kill()


# --- 12: a stalled or stopped database ------------------------------------------------------------
async def test_stalled_write_turns_health_red_grows_lag_and_is_logged(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    d, api_port = _daemon(tmp_path, mosquitto, db, prefix, ingest="{stall_after: 1.5}")
    topic = f"{prefix}/testsite/edge1/readings"
    d.start()
    lock = await asyncpg.connect(superuser_dsn(db))
    try:
        await d.wait_connected(60)
        await until(lambda: _healthz(api_port, 200), what="healthy")
        await publish_batches(mosquitto.host, mosquitto.port, topic, [_batch(0)])
        await until(lambda: _count_ge(db, 10), what="first batch stored")
        tx = lock.transaction()
        await tx.start()
        await lock.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")  # every write now waits
        await publish_batches(mosquitto.host, mosquitto.port, topic, [_batch(k) for k in range(1, 4)])
        body = await until(lambda: _healthz(api_port, 503), what="/healthz 503 during the stall")
        assert body["ok"] is False and "commit" in body["reason"], body
        lag1 = d.metrics()[LAG]
        await asyncio.sleep(1.0)
        lag2 = d.metrics()[LAG]
        assert lag2 > lag1 >= 1.5, (lag1, lag2)  # computed when scraped: it keeps growing
        await until(lambda: d.log().count("database write stalled") >= 2, what="repeated stall warnings")
        await tx.rollback()
        await until(lambda: _count_ge(db, 40), what="the stalled batches stored")
        await until(lambda: _healthz(api_port, 200), what="healthy again")
        await until(lambda: "database writes resumed" in d.log(), what="the resumption logged")
        assert d.terminate() == 0, d.log()
    finally:
        await lock.close()
        d.kill()


def _cluster(pg: PostgresInstance) -> list[psutil.Process]:
    main = psutil.Process(pg._server_pid())  # noqa: SLF001
    return [main, *main.children(recursive=True)]


async def test_frozen_and_stopped_database_api_503_not_a_hang_and_nothing_lost(tmp_path, mosquitto, topic_prefix):
    base = Path(tempfile.mkdtemp(prefix="plantwatch-stop-"))
    base.chmod(0o755)  # the postgres OS user must reach its data directory
    pg = PostgresInstance(timescaledb=True, fast=True, data_dir=base / "pg")
    pg.start()
    prefix = topic_prefix.rstrip("/")
    topic = f"{prefix}/testsite/edge1/readings"
    try:
        await provision(pg.admin_dsn, pg.dsn_for("pw"), role=APP_ROLE, database="pw", timescaledb=True)
        dsn = pg.dsn_for("pw").replace("//postgres@", f"//{APP_ROLE}@", 1)
        d, api_port = _daemon(tmp_path, mosquitto, dsn, prefix, ingest="{stall_after: 1.5}", api="db_timeout: 1.5")
        d.start()
        try:
            await d.wait_connected(60)
            await publish_batches(mosquitto.host, mosquitto.port, topic, [_batch(0)])
            await until(lambda: _count_ge(dsn, 10), what="first batch stored")
            assert (await _acall(api_port, "/api/alarms", TOKEN))[0] == 200

            frozen = _cluster(pg)
            for p in frozen:
                p.suspend()  # SIGSTOP: connections stay open, nothing answers
            try:
                await publish_batches(mosquitto.host, mosquitto.port, topic, [_batch(k) for k in range(1, 3)])
                st, ct, got = await _acall(api_port, "/api/alarms", TOKEN, timeout=20)
                assert st == 503 and "json" in ct and "database" in got["error"], (st, got)
                st, ct, got = await _acall(api_port, "/api/incidents", TOKEN, timeout=20)
                assert st == 503 and "json" in ct, (st, got)
                body = await until(lambda: _healthz(api_port, 503), what="/healthz 503 while frozen")
                assert body["ok"] is False, body
            finally:
                for p in frozen:
                    p.resume()
            await until(lambda: _count_ge(dsn, 30), what="the frozen batches stored")
            await until(lambda: _healthz(api_port, 200), what="healthy after the freeze")

            pg.stop()  # a real stop
            await publish_batches(mosquitto.host, mosquitto.port, topic, [_batch(k) for k in range(3, 5)])
            body = await until(lambda: _healthz(api_port, 503), what="/healthz 503 while stopped")
            assert body["ok"] is False and body["reason"], body
            st, ct, got = await _acall(api_port, "/api/alarms", TOKEN, timeout=20)
            assert st == 503 and "json" in ct and "database" in got["error"], (st, got)
            pg.start()
            await until(lambda: _count_ge(dsn, 50), timeout=90, what="the batches of the outage stored")
            await until(lambda: _healthz(api_port, 200), what="healthy after the restart")
            assert await _count(dsn) == 50
            assert d.terminate() == 0, d.log()
        finally:
            d.kill()
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


# --- 13: SIGTERM acknowledges what the drain commits ---------------------------------------------
@pytest.mark.parametrize("mode", ["single", "cluster"])
async def test_sigterm_drain_acknowledges_what_it_commits(tmp_path, mosquitto, db, topic_prefix, mode):
    prefix = topic_prefix.rstrip("/")
    client_id = f"pw-{uuid.uuid4().hex[:8]}"
    sensors = [f"G{i}" for i in range(1000)]
    batches = make_batches("edge1", sensors, 600, t0=time.time() - 3600, per_batch=100)  # 60,000 readings
    topic = f"{prefix}/testsite/edge1/readings"
    d, _ = _daemon(tmp_path, mosquitto, db, prefix, n_gas=1000, client_id=client_id)
    if mode == "cluster":  # one instance holding every partition: one MQTT session per partition
        d.cfg.write_text(d.cfg.read_text().replace("sensors:\n", "cluster: {instance_id: a, partitions: 2,"
                                                   " collectors: [edge1], lease_seconds: 4, renew_interval: 1}\nsensors:\n", 1))
    d.start()
    try:
        await d.wait_connected(60)

        async def stream() -> None:  # a steady stream, so that the drain always has work in flight
            for k in range(0, len(batches), 10):
                await publish_batches(mosquitto.host, mosquitto.port, topic, batches[k:k + 10])
                await asyncio.sleep(0.02)

        producer = asyncio.create_task(stream())
        await until(lambda: d.stored() >= 5_000, what="the stream under way")
        assert await asyncio.to_thread(d.terminate) == 0, d.log()  # SIGTERM in the middle of the stream
        first = await _count(db)
        assert 0 < first < 60_000
        await producer
        if mode == "cluster":  # another instance takes the partitions (and their MQTT sessions) over
            d.cfg.write_text(d.cfg.read_text().replace("instance_id: a,", "instance_id: b,"))
        d.start()  # same client id: the broker redelivers what was not acknowledged
        await d.wait_connected(60)
        await until(lambda: _count_ge(db, 60_000), timeout=120, what="every reading stored")
        await until(lambda: d.metrics().get("plantwatch_messages_acked_total", 0) >= 600 - first / 100,
                     what="the rest acknowledged")
        m = d.metrics()
        assert m.get("plantwatch_readings_duplicate_total", 0) == 0, f"already stored readings came back:\n{d.log()}"
        assert m["plantwatch_messages_received_total"] == 600 - first / 100
        assert d.terminate() == 0, d.log()
    finally:
        d.kill()
    assert await _count(db) == 60_000


# --- 8: transfers through the shipped ACL ----------------------------------------------------------
def _password_file(path: Path, users: dict[str, str]) -> Path:
    path.touch(mode=0o600)
    for user, pw in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), user, pw], check=True, capture_output=True)
    return path


def _transfer(cfg: Path, *extra: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    now = time.time()
    return subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", "transfer", "--config", str(cfg),
                           "--tank", "TK-1", "--quantity", "10 m3", "--start", str(now - 60), "--end", str(now + 60),
                           "--by", "shift lead", "--reference", "BOL-9", *extra],
                          capture_output=True, text=True, timeout=90, env={**os.environ, **env})


async def test_transfer_with_the_shipped_acl_waits_for_the_daemon(tmp_path, db):
    pw = {"plantwatch": "pw-daemon", "transfers": "pw-transfers", "edge-01": "pw-edge"}
    broker = MosquittoInstance(options={"allow_anonymous": False, "acl_file": str(SITE_ACL),
                                        "password_file": str(_password_file(tmp_path / "passwd", pw))})
    broker.start()
    mport = new_metrics_port()
    try:
        site = ("site: {id: acl, areas: [{id: store, collector: edge-store}]}\n"
                f"mqtt: {{host: {broker.host}, port: {broker.port}, topic_prefix: plantwatch, username: plantwatch,"
                f" password: {pw['plantwatch']}, client_id: pw-acl}}\n"
                f'database: {{dsn: "{db}"}}\nmetrics: {{port: {mport}}}\n'
                "sensors:\n  - {id: TK-1, kind: level, unit: m3, range: [0, 100], area: store}\n")
        cfg = tmp_path / "acl.yaml"
        cfg.write_text(site)
        # the transfers user, from the environment; the daemon is not running yet: no confirmation
        env = {"PLANTWATCH_MQTT_USERNAME": "transfers", "PLANTWATCH_MQTT_PASSWORD": pw["transfers"]}
        p = _transfer(cfg, "--timeout", "3", env=env)
        assert p.returncode != 0 and "not confirmed" in p.stderr + p.stdout, (p.returncode, p.stdout, p.stderr)
        # a collector may not declare transfers: refused by the broker, reported as such
        p = _transfer(cfg, "--timeout", "3", env={"PLANTWATCH_MQTT_USERNAME": "edge-01",
                                                  "PLANTWATCH_MQTT_PASSWORD": pw["edge-01"]})
        assert p.returncode != 0, (p.stdout, p.stderr)

        d = DaemonProcess(cfg, mport)
        d.start()
        try:
            await d.wait_connected(60)
            p = _transfer(cfg, "--timeout", "30", env=env)
            assert p.returncode == 0, (p.stdout, p.stderr, d.log())
            assert "stored" in p.stdout
            conn = await asyncpg.connect(db)
            try:
                row = await conn.fetchrow("SELECT s.tag, t.quantity, t.declared_by, t.reference FROM transfers t"
                                          " JOIN sensors s ON s.id = t.sensor_id")
            finally:
                await conn.close()
            assert dict(row) == {"tag": "TK-1", "quantity": 10.0, "declared_by": "shift lead", "reference": "BOL-9"}
            assert await _count(db, "transfers") == 1  # the unconfirmed declarations were never stored
            assert d.terminate() == 0, d.log()
        finally:
            d.kill()
    finally:
        broker.stop()
