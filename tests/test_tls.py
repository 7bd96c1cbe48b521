"""TLS everywhere, against real services with certificates made by the shipped
deploy/tls/make-site-ca.sh: the daemon and a collector over a Mosquitto TLS listener that requires
client certificates (readings stored), each way a connection can be wrong refused with one clear
log line (wrong CA, expired certificate, wrong host name, plain TCP to the TLS port, another
site's certificate), the API and /metrics over HTTPS (/metrics with basic authentication), and the
daemon on PostgreSQL with sslmode=verify-full against a cluster with ssl = on."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import ssl
import time
import urllib.error
import urllib.request
import uuid

import asyncpg
import pytest

from plantwatch.connectors.edge.buffer import Outbox
from plantwatch.connectors.edge.publisher import publish_outbox
from plantwatch.connectors.mqtt import BrokerAddress
from plantwatch.connectors.services import free_port
from plantwatch.connectors.tls import ClientTls
from plantwatch.connectors.wire import topic as wire_topic
from plantwatch.daemon.config.model import ConfigError, load_config_text
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.runtime import DaemonHandle

from .conftest import _fresh_database
from .helpers import until

SITE = "tlssite"


def _site(prefix: str, mqtt: str, dsn: str, extra: str = "") -> str:
    return (f"site: {{id: {SITE}, areas: [{{id: a1, collector: edge1}}]}}\n"
            f"mqtt: {mqtt}\n"
            f'database: {dsn}\n'
            "metrics: {port: 0}\n"
            "sensors:\n  - {id: G0, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: a1}\n"
            "  - {id: G1, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: a1}\n" + extra)


def _mqtt(broker, prefix: str, tls: str, host: str | None = None) -> str:
    return (f"{{host: {host or broker.host}, port: {broker.port}, topic_prefix: {prefix}, "
            f"client_id: pw-{uuid.uuid4().hex[:8]}{', tls: ' + tls if tls else ''}}}")


async def _count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM readings")
    finally:
        await conn.close()


async def _count_is(dsn: str, n: int) -> bool:
    return await _count(dsn) == n


def _errors(m: Metrics, reason: str) -> float:
    return m.registry.get_sample_value("plantwatch_mqtt_connect_errors_total", {"reason": reason}) or 0.0


async def _collect(tmp_path, broker: BrokerAddress, prefix: str, n: int, *, seconds: float = 30.0) -> int:
    """Put ``n`` one-reading batches of collector edge1 into a buffer and let the edge
    collector's publisher drain it to ``broker``; returns how many the broker acknowledged."""
    t0 = time.time() - 60
    with Outbox(tmp_path / f"buf-{uuid.uuid4().hex[:6]}.sqlite3") as box:
        topic = wire_topic(prefix, SITE, "edge1", "readings")
        for k in range(n):
            box.append(topic, [{"sensor": f"G{k % 2}", "time": t0 + k, "value": 1.0}])
        stop, wake = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(publish_outbox(box, broker, "edge1", client_id="edge1", wake=wake, stop=stop,
                                                  max_backoff=0.5))
        try:
            await until(lambda: len(box) == 0, seconds, "the collector's buffer drained")
        except AssertionError:
            pass
        stop.set()
        stats = await task
        return stats.published


def _https(url: str, ca: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=ca)
    headers = {"Authorization": "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()} if auth else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), context=ctx, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.slow
async def test_a_site_over_tls_stores_readings_and_serves_https(tls_mosquitto_broker, site_ca, db, topic_prefix,
                                                                 tmp_path):
    broker = tls_mosquitto_broker
    prefix = topic_prefix.rstrip("/")
    daemon_cert, daemon_key = site_ca.client("plantwatch")
    api_cert, api_key = site_ca.server("plantwatch-http", "127.0.0.1", "localhost")
    password = "metrics-" + uuid.uuid4().hex
    api_port, metrics_port = free_port(), free_port()
    tls = f"{{ca_file: {site_ca.ca_file}, cert_file: {daemon_cert}, key_file: {daemon_key}}}"
    text = _site(prefix, _mqtt(broker, prefix, tls), f'{{dsn: "{db}"}}').replace(
        "metrics: {port: 0}",
        f"metrics: {{port: {metrics_port}, tls: {{cert_file: {api_cert}, key_file: {api_key}}},"
        f" basic_auth: {{username: prometheus, password_sha256: {hashlib.sha256(password.encode()).hexdigest()}}}}}"
    ) + f"api: {{port: {api_port}, tls: {{cert_file: {api_cert}, key_file: {api_key}}}}}\n"
    cfg = load_config_text(text)
    assert cfg.api.url.startswith("https://")
    handle = DaemonHandle(cfg, metrics=Metrics())
    task = asyncio.create_task(handle.run())
    try:
        await until(lambda: handle.daemon is not None and handle.daemon.ready.is_set(), 30, "the daemon subscribed")
        # the collector: its own certificate (common name = its MQTT user name), the site CA
        edge_cert, edge_key = site_ca.client("edge1")
        edge = BrokerAddress(broker.host, broker.port, tls=ClientTls(site_ca.ca_file, edge_cert, edge_key))
        assert await _collect(tmp_path, edge, prefix, 40) == 40
        await until(lambda: _count_is(db, 40), 30, "40 readings stored")

        # the API and console over HTTPS, verified against the site CA
        status, body = await asyncio.to_thread(_https, f"https://127.0.0.1:{api_port}/healthz", site_ca.ca_file)
        assert status == 200, body
        # /metrics: HTTPS and basic authentication
        url = f"https://127.0.0.1:{metrics_port}/metrics"
        assert (await asyncio.to_thread(_https, url, site_ca.ca_file))[0] == 401
        assert (await asyncio.to_thread(_https, url, site_ca.ca_file, ("prometheus", "wrong")))[0] == 401
        status, body = await asyncio.to_thread(_https, url, site_ca.ca_file, ("prometheus", password))
        assert status == 200 and b"plantwatch_readings_received_total 40.0" in body
        # plain HTTP to either port gets nothing
        for port in (api_port, metrics_port):
            with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
                await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        handle.request_stop()
        await asyncio.wait_for(task, 60)


def _broker_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
            and r.name in ("plantwatch.broker", "plantwatch.collect.publisher", "plantwatch.daemon.alarms.publisher")]


@pytest.mark.slow
async def test_each_wrong_connection_is_refused_with_one_clear_line(tls_mosquitto_broker, mosquitto, site_ca, db,
                                                                    topic_prefix, tmp_path, caplog):
    """The daemon keeps retrying (a renewed certificate is picked up), but says what is wrong
    once, in one line, and counts each attempt by reason."""
    broker = tls_mosquitto_broker
    prefix = topic_prefix.rstrip("/")
    other = type(site_ca)(tmp_path / "other-site")  # another site's CA and certificates
    good_cert, good_key = site_ca.client("plantwatch")
    old_cert, old_key = site_ca.client("expired-daemon", days=-1)
    foreign_cert, foreign_key = other.client("plantwatch")

    def tls(ca=site_ca.ca_file, cert=good_cert, key=good_key) -> str:
        return f"{{ca_file: {ca}, cert_file: {cert}, key_file: {key}}}"

    cases = [  # (what, mqtt section, metric reason, words the one line must have)
        ("plain TCP to the TLS port", _mqtt(broker, prefix, ""), "not_tls", ["expects TLS", "plain text"]),
        ("wrong CA", _mqtt(broker, prefix, tls(ca=other.ca_file)), "tls_unknown_ca",
         ["not signed by the CA in", other.ca_file]),
        ("expired client certificate", _mqtt(broker, prefix, tls(cert=old_cert, key=old_key)), "tls_client_expired",
         ["refused our client certificate", "expired"]),
        ("wrong host name", _mqtt(broker, prefix, tls(), host="localhost"), "tls_hostname",
         ["does not name localhost"]),
        ("another site's client certificate", _mqtt(broker, prefix, tls(cert=foreign_cert, key=foreign_key)),
         "tls_client_unknown_ca", ["does not trust our client certificate"]),
        ("TLS to a plain-text port", _mqtt(mosquitto, prefix, tls()), "not_tls", ["does not speak TLS"]),
    ]
    caplog.set_level(logging.INFO)
    for what, mqtt, reason, words in cases:
        caplog.clear()
        m = Metrics()
        handle = DaemonHandle(load_config_text(_site(prefix, mqtt, f'{{dsn: "{db}"}}')), metrics=m)
        task = asyncio.create_task(handle.run())
        try:
            # three attempts at least (backoff 0.5 + 1 + 2 s)
            try:
                await until(lambda: _errors(m, reason) >= 3, 20, f"{what}: three refused attempts counted as {reason}")
            except AssertionError as e:
                said = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING
                        and ("MQTT" in r.getMessage() or r.name == "mqtt")]
                raise AssertionError(f"{e}\nwhat the daemon logged ({len(said)} lines): {said[:4]}") from None
        finally:
            handle.request_stop()
            await asyncio.wait_for(task, 30)
        lines = _broker_lines(caplog)
        assert len(lines) == 1, f"{what}: expected one line, got {lines}"
        assert all(w in lines[0] for w in words), f"{what}: {lines[0]!r} lacks {words}"
        assert "reset by peer" not in caplog.text and "failed to receive" not in caplog.text, caplog.text
        assert handle.daemon.ready.is_set() is False

    # the edge collector's publisher: the same explanation, once
    caplog.clear()
    edge_cert, edge_key = site_ca.client("edge1")
    wrong = BrokerAddress(broker.host, broker.port, tls=ClientTls(other.ca_file, edge_cert, edge_key))
    assert await _collect(tmp_path, wrong, prefix, 1, seconds=3) == 0
    lines = _broker_lines(caplog)
    assert len([x for x in lines if "still buffered" not in x]) == 1 and "not signed by the CA in" in lines[0], lines


async def test_a_refused_client_certificate_is_named_even_when_the_alert_was_lost(tls_mosquitto_broker, site_ca):
    """TLS 1.3: the broker judges the client certificate after the client's handshake, when the
    client has already sent CONNECT; its close can reset the connection before the alert is read,
    and the client sees only "EOF occurred in violation of protocol". The explanation must still
    name the certificate (it was "unavailable", a transient warning, about one connect in ten)."""
    import aiomqtt

    from plantwatch.connectors.mqtt import diagnose

    broker = tls_mosquitto_broker
    other = type(site_ca)(site_ca.dir.parent / "other-site-lost-alert")
    lost = aiomqtt.MqttError("failed to receive on socket: EOF occurred in violation of protocol (_ssl.c:2427)")
    for cert_key, reason in ((site_ca.client("expired-lost", days=-1), "tls_client_expired"),
                             (other.client("plantwatch"), "tls_client_unknown_ca")):
        cert, key = cert_key
        address = BrokerAddress(broker.host, broker.port, tls=ClientTls(site_ca.ca_file, cert, key))
        err = await diagnose(lost, lost.args[0], address)
        assert (err.reason, err.config) == (reason, True), f"{cert}: {err.reason}: {err}"
        assert "failed to receive" not in str(err), str(err)
    # a certificate the broker accepts: no alert, the failure stays transient
    good, good_key = site_ca.client("plantwatch-lost")
    err = await diagnose(lost, lost.args[0], BrokerAddress(broker.host, broker.port,
                                                           tls=ClientTls(site_ca.ca_file, good, good_key)))
    assert (err.reason, err.config) == ("unavailable", False), str(err)


async def test_plantwatch_transfer_says_what_is_wrong_in_one_line(tls_mosquitto_broker, site_ca, tmp_path):
    import subprocess
    import sys

    broker = tls_mosquitto_broker
    cert, key = site_ca.client("transfers")
    cfg = tmp_path / "site.yaml"
    cfg.write_text(_site("plantwatch", _mqtt(broker, "plantwatch", f"{{ca_file: {site_ca.ca_file}}}"),
                         '{dsn: "postgresql://nobody@127.0.0.1:1/x"}'))
    base = [sys.executable, "-m", "plantwatch.daemon.cli.main", "transfer", "--config", str(cfg), "--tank", "TK",
            "--quantity", "1", "--unit", "m3", "--timeout", "2"]
    cfg.write_text(cfg.read_text() + "  - {id: TK, kind: level, unit: m3, range: [0, 100], area: a1}\n")
    # no client certificate: the broker requires one
    p = await asyncio.to_thread(subprocess.run, base, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "requires a client certificate" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    # with it: connects (no daemon runs, so no receipt: "not confirmed")
    p = await asyncio.to_thread(subprocess.run, base + ["--tls-cert", cert, "--tls-key", key], capture_output=True,
                                text=True, timeout=60)
    assert p.returncode == 1 and "not confirmed" in p.stderr, p.stderr


@pytest.mark.slow
async def test_the_daemon_uses_postgres_with_verify_full(tls_postgres, site_ca, mosquitto, topic_prefix, tmp_path):
    prefix = topic_prefix.rstrip("/")
    async for dsn in _fresh_database(tls_postgres):
        # a connection without TLS is refused by the cluster (hostnossl reject)
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
            await asyncpg.connect(dsn + "?sslmode=disable")
        # another CA: verify-full refuses the server
        other = type(site_ca)(tmp_path / "other-site")
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncpg.connect(dsn + f"?sslmode=verify-full&sslrootcert={other.ca_file}")
        # through the config (database.tls) and through the DSN: both verified, both stored
        mqtt = f"{{host: {mosquitto.host}, port: {mosquitto.port}, topic_prefix: {prefix}, client_id: pw-{uuid.uuid4().hex[:8]}}}"
        for database in (f'{{dsn: "{dsn}", tls: {{mode: verify-full, ca_file: {site_ca.ca_file}}}}}',
                         f'{{dsn: "{dsn}?sslmode=verify-full&sslrootcert={site_ca.ca_file}"}}'):
            handle = DaemonHandle(load_config_text(_site(prefix, mqtt, database)), metrics=Metrics())
            task = asyncio.create_task(handle.run())
            try:
                await until(lambda: handle.daemon is not None and handle.daemon.ready.is_set(), 30, "subscribed")
                async with handle.daemon.store.pool.acquire() as conn:
                    row = await conn.fetchrow("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                assert row["ssl"] is True and row["version"] in ("TLSv1.2", "TLSv1.3"), dict(row)
            finally:
                handle.request_stop()
                await asyncio.wait_for(task, 30)
        conn = await asyncpg.connect(dsn + f"?sslmode=verify-full&sslrootcert={site_ca.ca_file}")
        try:
            # both runs wrote through TLS: the session the first established, the second found again
            row = await conn.fetchrow("SELECT count(*) AS n, sum(lost) AS lost FROM mqtt_sessions")
            assert (row["n"], row["lost"]) == (1, 0), dict(row)
        finally:
            await conn.close()


# --- config: what is checked at load -------------------------------------------------------------
def test_tls_config_errors_name_the_file_line_and_problem(site_ca, tmp_path):
    cert, key = site_ca.client("cfg-a")
    other_cert, _ = site_ca.client("cfg-b")
    base = ("site: {id: s, areas: [{id: a1, collector: c1}]}\n"
            "sensors:\n  - {id: G0, kind: gas, unit: ppm, range: [0, 100], area: a1}\n")

    def problems(section: str) -> str:
        with pytest.raises(ConfigError) as e:
            load_config_text(base + section, "site.yaml")
        return str(e.value)

    msg = problems(f"mqtt:\n  tls:\n    ca_file: {tmp_path}/missing.crt\n")
    assert f"site.yaml:6:5: mqtt.tls.ca_file: {tmp_path}/missing.crt: no such file" in msg, msg
    msg = problems(f"mqtt:\n  tls: {{ca_file: {site_ca.ca_file}, cert_file: {other_cert}, key_file: {key}}}\n")
    assert "mqtt.tls: key_file does not belong to cert_file" in msg, msg
    msg = problems(f"mqtt:\n  tls: {{cert_file: {cert}}}\n")
    assert "cert_file and key_file go together" in msg, msg
    msg = problems("metrics: {host: 0.0.0.0}\n")
    assert "site.yaml:4:" in msg and "metrics: serving /metrics on 0.0.0.0" in msg and "needs tls and basic_auth" in msg
    msg = problems("api: {host: 10.1.2.3}\n")
    assert "serving the API on 10.1.2.3" in msg and "needs tls" in msg, msg
    msg = problems('database: {dsn: "postgresql://x@db/y", tls: {mode: verify-full}}\n')
    assert "mode verify-full needs ca_file" in msg, msg
    # defaults: /metrics and the API on this machine only
    cfg = load_config_text(base + "api: {}\n")
    assert cfg.metrics.host == "127.0.0.1" and cfg.api.host == "127.0.0.1"
    # a site's config checked on another machine: the files are not looked at
    text = base + "mqtt: {tls: {ca_file: /etc/plantwatch/tls/ca.crt}}\n"
    assert load_config_text(text, check_files=False).mqtt.tls.ca_file == "/etc/plantwatch/tls/ca.crt"
    # the database's TLS goes into the DSN as libpq's parameters
    cfg = load_config_text(base + f'database: {{dsn: "postgresql://x@db:5432/y?application_name=pw",'
                                  f' tls: {{mode: verify-full, ca_file: {site_ca.ca_file}}}}}\n')
    assert cfg.database.url == (f"postgresql://x@db:5432/y?application_name=pw&sslmode=verify-full&sslrootcert="
                                + site_ca.ca_file.replace("/", "%2F"))


async def test_the_simulator_publishes_over_tls_with_its_certificate(tls_mosquitto_broker, site_ca, topic_prefix,
                                                                     tmp_path):
    from plantwatch.daemon.lab.simulator.collector import run_simulator
    from plantwatch.daemon.lab.simulator.scenario import default_scenario
    from plantwatch.daemon.lab.demo_site import load_demo_config

    cert, key = site_ca.client("simulator")
    stats = await run_simulator(load_demo_config(), tls_mosquitto_broker.host, tls_mosquitto_broker.port,
                                topic_prefix.rstrip("/"), 3, 10.0, default_scenario(), None,
                                tls=ClientTls(site_ca.ca_file, cert, key))
    assert stats.published == stats.batches > 0 and stats.unsent == 0 and not stats.errors, stats


def test_the_collectors_config_takes_tls_and_keeps_metrics_local(site_ca, tmp_path):
    from plantwatch.daemon.collect.config import load_collect_config_text

    cert, key = site_ca.client("edge-cfg")
    base = ("collector: edge-cfg\nsite: s\nsources:\n  - {type: modbus, id: m1, host: 127.0.0.1,"
            " channels: [{sensor: G0, address: 0}]}\n")
    cfg = load_collect_config_text(base + f"mqtt: {{port: 8883, tls: {{ca_file: {site_ca.ca_file}, cert_file: {cert},"
                                          f" key_file: {key}}}}}\n")
    assert cfg.mqtt.tls.settings() == ClientTls(site_ca.ca_file, cert, key)
    with pytest.raises(ConfigError) as e:
        load_collect_config_text(base + "metrics: {port: 9200, host: 0.0.0.0}\n", "collect.yaml")
    assert "collect.yaml:5:" in str(e.value) and "needs tls and basic_auth" in str(e.value), str(e.value)
