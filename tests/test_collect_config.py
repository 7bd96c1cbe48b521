"""``plantwatch collect`` config: located errors, security options, the example config loads."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from plantwatch.daemon.collect.config import load_collect_config, load_collect_config_text
from plantwatch.daemon.config.model import ConfigError

EXAMPLE = Path(__file__).parent.parent / "deploy" / "edge" / "collect.example.yaml"

BAD = """\
collector: edge-gas
site: testsite
sources:
  - type: modbus
    id: panel1
    host: 127.0.0.1
    colour: blue
    channels:
      - {sensor: G0, address: 0, type: int17}
      - {sensor: G1, address: 65535, type: float32}
  - type: opcua
    id: opc1
    url: opc.tcp://10.0.0.5:4840
    security: {mode: SignAndEncrypt, certificate: /nonexistent/cert.pem}
    channels:
      - {sensor: G2, node: "not a node"}
  - type: snmp
    id: x
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_collect_config_text(text, "collect.yaml")
    return e.value.problems


def test_errors_name_file_line_column_and_path():
    problems = _problems(BAD)
    # sources by their id and channels by their sensor, not by index
    assert "collect.yaml:7:5: sources[panel1].colour: unknown key 'colour'" in problems
    assert any(p.startswith("collect.yaml:9:34: sources[panel1].channels[G0].type: Input should be 'int16'")
               for p in problems)
    assert any(p.startswith("collect.yaml:10:") and "sources[panel1].channels[G1]" in p for p in problems)
    assert any(p.startswith("collect.yaml:10:") and "runs past register 65535" in p for p in problems)
    assert any(p.startswith("collect.yaml:14:") and "security.certificate: no such file: /nonexistent/cert.pem" in p
               for p in problems)
    assert any(p.startswith("collect.yaml:16:") and "not an OPC UA node id or browse path: 'not a node'" in p for p in problems)
    assert any(p.startswith("collect.yaml:16:") and "sources[opc1].channels[G2].node" in p for p in problems)
    assert any(p.startswith("collect.yaml:17:5: sources[x]:") and "'modbus', 'opcua'" in p for p in problems)


def test_sensor_read_by_two_sources_and_reserved_collector():
    text = """\
collector: alarms
site: s
sources:
  - {type: modbus, id: a, host: h, channels: [{sensor: G0, address: 0}]}
  - {type: modbus, id: b, host: h2, channels: [{sensor: G0, address: 0}]}
"""
    problems = _problems(text)
    assert any(p.startswith("collect.yaml:1:") and "'alarms' is reserved" in p for p in problems)
    text = text.replace("collector: alarms", "collector: edge-1")
    problems = _problems(text)
    assert problems == ["collect.yaml:5:49: sources[b].channels[G0].sensor: sensor 'G0' is already read by source 'a'"]


def test_two_sources_on_one_gateway_or_serial_port_are_refused():
    """Unit ids behind one gateway are channels of one source (one connection), not sources of their own."""
    problems = _problems("""\
collector: e
site: s
sources:
  - {type: modbus, id: gw-u1, host: 10.0.0.5, channels: [{sensor: G0, address: 0}]}
  - {type: modbus, id: gw-u7, host: 10.0.0.5, unit: 7, channels: [{sensor: G1, address: 0}]}
  - {type: modbus, id: other-port, host: 10.0.0.5, port: 503, channels: [{sensor: G2, address: 0}]}
  - {type: modbus, id: rs485-a, serial: {port: /dev/ttyS1}, channels: [{sensor: G3, address: 0}]}
  - {type: modbus, id: rs485-b, serial: {port: /dev/ttyS1}, unit: 2, channels: [{sensor: G4, address: 0}]}
""")
    assert problems == [
        "collect.yaml:5:5: sources[gw-u7]: gateway 10.0.0.5:502 is already read by source 'gw-u1' (one connection "
        "serves every unit id behind it): put these channels in source 'gw-u1', each with its unit_id",
        "collect.yaml:8:5: sources[rs485-b]: serial port /dev/ttyS1 is already read by source 'rs485-a' (one "
        "connection serves every unit id behind it): put these channels in source 'rs485-a', each with its unit_id"]


async def test_security_modes_with_certificates(tmp_path):
    from .edge_helpers import make_certificate

    cert, key = await make_certificate(tmp_path, "collector", "urn:plantwatch:test:collect", server=False)
    for mode in ("Sign", "SignAndEncrypt"):
        cfg = load_collect_config_text(f"""\
collector: e
site: s
sources:
  - type: opcua
    id: o
    url: opc.tcp://h:4840
    security: {{mode: {mode}, policy: Aes256Sha256RsaPss, certificate: {cert}, private_key: {key}}}
    channels: [{{sensor: G0, node: "ns=2;i=7"}}]
""")
        assert cfg.sources[0].security.security_string() == f"Aes256Sha256RsaPss,{mode},{cert},{key}"
    not_a_cert = tmp_path / "junk.pem"
    not_a_cert.write_text("-----BEGIN CERTIFICATE-----\nnonsense\n-----END CERTIFICATE-----\n")
    problems = _problems(f"collector: e\nsite: s\nsources:\n  - {{type: opcua, id: o, url: 'opc.tcp://h:1', security: "
                         f"{{mode: Sign, certificate: {not_a_cert}, private_key: {key}}}, "
                         f"channels: [{{sensor: G, node: 'ns=1;i=1'}}]}}\n")
    assert problems == [f"collect.yaml:4:71: sources[o].security.certificate: {not_a_cert} is not a PEM or DER X.509 "
                        "certificate"]
    assert "mode" in _problems("collector: e\nsite: s\nsources:\n  - {type: opcua, id: o, url: 'opc.tcp://h:1', "
                               "security: {mode: Encrypt}, channels: [{sensor: G, node: 'ns=1;i=1'}]}\n")[0]


def test_relative_buffer_path_is_next_to_the_config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("collector: e\nsite: s\nbuffer: {path: buf.sqlite3}\n"
                 "sources: [{type: modbus, id: m, host: h, channels: [{sensor: G0, address: 0}]}]\n")
    assert load_collect_config(p).buffer.path == tmp_path / "buf.sqlite3"


def test_example_config_loads():
    cfg = load_collect_config(EXAMPLE)
    assert {s.type for s in cfg.sources} == {"modbus", "opcua"}


def test_cli_reports_config_errors_and_exits_2(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(BAD)
    r = subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", "collect", "--config", str(p)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"{p}:7:5: sources[panel1].colour: unknown key 'colour'" in r.stdout + r.stderr


def test_collect_certs_errors_are_one_line(tmp_path):
    def certs(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", "collect", "certs", *args],
                              capture_output=True, text=True, timeout=60)

    r = certs("--pki", str(tmp_path / "pki"))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "plantwatch collect certs: --pki needs --uri (the application URI the server will see)"]
    p = tmp_path / "c.yaml"
    p.write_text("collector: e\nsite: s\nsources: [{type: modbus, id: m, host: h, channels: [{sensor: G0, address: 0}]}]\n")
    r = certs("--config", str(p))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"plantwatch collect certs: {p} has no OPC UA source with security mode Sign or SignAndEncrypt"]
    assert certs("--pki", str(tmp_path / "pki"), "--uri", "urn:x").returncode == 0
    r = certs("--pki", str(tmp_path / "pki"), "--uri", "urn:x")
    assert r.returncode == 2 and "exists (--force replaces it" in r.stderr and "Traceback" not in r.stderr
