"""OPC UA trust as integrators meet it, against asyncua's own server through ``plantwatch collect``,
a real Mosquitto, the daemon and TimescaleDB: an unknown server certificate is refused (kept in the
PKI folder's rejected/, the log says how to trust it) until the operator trusts it; a wrong pin
says "certificate mismatch"; ``plantwatch collect certs`` makes the client certificate a server
that checks its clients accepts.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from .edge_helpers import (SERVER_URI, CollectProcess, OpcuaServer, collect_yaml, eventually, latest, logged,
                           make_certificate, start_daemon, teardown)

pytestmark = pytest.mark.slow

SENSORS = ["id: P0, kind: pressure, unit: bar, range: [0, 40]"]


def source(server: OpcuaServer, security: str, node: str | None = None) -> str:
    return f"""\
  - type: opcua
    id: secure
    url: {server.url}
    sampling_interval: 0.1
    publishing_interval: 0.2
    timeout: 2.0
    backoff_max: 1.0
    security: {security}
    channels:
      - {{sensor: P0, node: "{node or server.node_id('Pressure')}", scale: 0.001}}
"""


async def _secured_server(tmp_path):
    """A started SignAndEncrypt server, its certificate, and a client certificate and key."""
    srv_cert, srv_key = await make_certificate(tmp_path, "server", SERVER_URI, server=True)
    cli_cert, cli_key = await make_certificate(tmp_path, "collector", "urn:plantwatch:test:collect", server=False)
    server = OpcuaServer(["Pressure"], certificate=srv_cert, private_key=srv_key)
    await server.start({"Pressure": 17250.0})
    return server, srv_cert, cli_cert, cli_key


async def _p0(db: str) -> float | None:
    got = (await latest(db)).get("P0")
    return got[0] if got else None


async def test_unknown_server_certificate_is_rejected_until_the_operator_trusts_it(
        tmp_path, mosquitto, db, topic_prefix):
    """Without a pinned certificate the collector used to accept any server's certificate."""
    prefix = topic_prefix.rstrip("/")
    server, srv_cert, cli_cert, cli_key = await _secured_server(tmp_path)
    security = (f"{{mode: SignAndEncrypt, policy: Basic256Sha256, certificate: {cli_cert}, "
                f"private_key: {cli_key}}}")
    d = start_daemon(tmp_path, SENSORS, mosquitto, db, prefix)
    c = CollectProcess(tmp_path, collect_yaml(source(server, security), mosquitto=mosquitto, prefix=prefix,
                                              buffer=tmp_path / "buf.sqlite3", interval=0.2))
    rejected = tmp_path / "pki" / "rejected"  # the PKI folder defaults to "pki" next to the config
    try:
        await d.wait_connected()
        c.start()

        async def kept():
            files = list(rejected.glob("*.der")) if rejected.is_dir() else []
            return files or None

        [kept_file] = await eventually(kept, "the refused server certificate in pki/rejected/", timeout=30,
                                       on_fail=c.log)
        assert kept_file.read_bytes() == srv_cert.read_bytes()
        await eventually(lambda: logged(c, "is not trusted"), "the log line saying so", timeout=10, on_fail=c.log)
        line = next(x for x in c.log().splitlines() if "is not trusted" in x)
        assert f"mv '{kept_file}' '{tmp_path / 'pki' / 'trusted'}/'" in line, line
        assert await _p0(db) is None  # nothing was read from the untrusted server

        # the operator trusts it: the collector connects on its next attempt, without a restart
        shutil.move(kept_file, tmp_path / "pki" / "trusted" / kept_file.name)
        await eventually(lambda: _is(db, 17.25), "a reading once the server is trusted", on_fail=c.log)
        assert c.log().count("is not trusted") == 1  # said once, not at every retry
        assert c.terminate() == 0
        assert d.terminate() == 0
    finally:
        await teardown(c, d, server)


async def test_a_wrong_pin_says_certificate_mismatch(tmp_path, mosquitto, db, topic_prefix):
    """A pinned certificate that is not the server's used to end in a TimeoutError."""
    prefix = topic_prefix.rstrip("/")
    server, _, cli_cert, cli_key = await _secured_server(tmp_path)
    other_cert, _ = await make_certificate(tmp_path, "other-server", SERVER_URI, server=True)
    security = (f"{{mode: SignAndEncrypt, policy: Basic256Sha256, certificate: {cli_cert}, private_key: {cli_key}, "
                f"server_certificate: {other_cert}}}")
    c = CollectProcess(tmp_path, collect_yaml(source(server, security), mosquitto=mosquitto, prefix=prefix,
                                              buffer=tmp_path / "buf.sqlite3", interval=0.2))
    try:
        c.start()
        await eventually(lambda: logged(c, "opcua secure: "), "the collector's verdict on the server", timeout=30,
                         on_fail=c.log)
        log = c.log()
        assert "certificate mismatch" in log, log
        assert "TimeoutError" not in log
        assert f"the pinned server_certificate {other_cert}" in log
        assert c.terminate() == 0
    finally:
        await teardown(c, None, server)


async def test_collect_certs_makes_the_certificate_a_checking_server_accepts(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    from cryptography import x509

    from plantwatch.connectors.edge.opcua import certificate_uri

    srv_cert, srv_key = await make_certificate(tmp_path, "server", SERVER_URI, server=True)
    server_trusts = tmp_path / "server-trusted"
    server_trusts.mkdir()
    await make_certificate(server_trusts, "another-client", "urn:elsewhere", server=False)  # trusted, not ours
    for key in server_trusts.glob("*.pem"):
        key.unlink()
    server = OpcuaServer(["Pressure"], certificate=srv_cert, private_key=srv_key, trusted_clients=server_trusts)
    uri = "urn:plantwatch:test:collect-certs"
    security = f"{{mode: SignAndEncrypt, policy: Basic256Sha256, server_certificate: {srv_cert}, application_uri: {uri}}}"
    cfg_text = collect_yaml(source(server, security, "nsu=urn:plantwatch:test;s=Pressure"), mosquitto=mosquitto, prefix=prefix,
                            buffer=tmp_path / "buf.sqlite3", interval=0.2)
    (tmp_path / "collect.yaml").write_text(cfg_text)
    # before: the config names a client certificate that does not exist yet
    check = subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", "config", "check",
                            str(tmp_path / "collect.yaml")], capture_output=True, text=True, timeout=60)
    assert check.returncode == 2 and "plantwatch collect certs makes" in check.stdout + check.stderr
    r = subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", "collect", "certs", "--config",
                        str(tmp_path / "collect.yaml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    own = tmp_path / "pki" / "own" / "cert.der"
    assert f"wrote {own}" in r.stdout and f"application URI {uri}" in r.stdout and "SHA-1 " in r.stdout
    assert certificate_uri(own) == uri
    assert x509.load_der_x509_certificate(own.read_bytes())  # DER, as OPC UA servers take it
    assert (tmp_path / "pki" / "own" / "key.pem").stat().st_mode & 0o077 == 0
    await server.start({"Pressure": 18500.0})
    d = start_daemon(tmp_path, SENSORS, mosquitto, db, prefix)
    c = CollectProcess(tmp_path, cfg_text)
    try:
        await d.wait_connected()
        c.start()
        # the server does not know the collector's certificate yet: it refuses the session
        await eventually(lambda: logged(c, "opcua secure: "), "the refused session", timeout=30, on_fail=c.log)
        assert await _p0(db) is None
        # the operator installs it on the server, as the command said (the server reads its trust list at start)
        await server.stop()
        shutil.copy(own, server_trusts / "plantwatch-collect.der")
        await server.start({"Pressure": 18500.0})
        await eventually(lambda: _is(db, 18.5), "a reading over the session with the new certificate", on_fail=c.log)
        assert c.terminate() == 0
        assert d.terminate() == 0
    finally:
        await teardown(c, d, server)


async def _is(db: str, value: float) -> bool:
    v = await _p0(db)
    return v is not None and round(v, 6) == value
