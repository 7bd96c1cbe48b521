"""An edge collector and its site must agree, and misrouted readings must not vanish.

``plantwatch config check`` and ``plantwatch collect --site`` compare a collect config's channels
with the site config: an unknown sensor, another measuring range or unit, a sensor of another
collector, another site or topic prefix: each an error at the collect config's file:line:col. At run
time the daemon announces what it serves on retained topics, and a collector that hears no daemon
for its site and collector keeps its batches in its buffer, says so loudly and in its metrics; once
the right daemon is heard, the kept batches are delivered (end to end, with the real Mosquitto,
daemon and TimescaleDB).
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import urllib.request

import asyncpg
import pytest

from plantwatch.connectors.edge.sources import CollectMetrics
from plantwatch.daemon.config.model import load_config_text

from .edge_helpers import CollectProcess, ModbusServer, collect_yaml, eventually, free_tcp_port, start_daemon

SITE = """\
site:
  id: testsite
  areas:
    - {id: area1, collector: edge-test}
    - {id: area2, collector: edge-other}
mqtt: {host: 127.0.0.1, port: 1883, topic_prefix: plant}
sensors:
  - {id: G0, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: area1}
  - {id: G1, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: area1}
  - {id: G2, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: area2}
  - {id: G3, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: area1}
"""
COLLECT = """\
collector: edge-test
site: testsite
mqtt: {topic_prefix: plantwatch}
sources:
  - type: modbus
    id: panel
    host: 127.0.0.1
    channels:
      - {sensor: G0, address: 0, scale: 0.001, loop: {range: [0, 50]}}
      - {sensor: G1, address: 1, unit: "%LEL"}
      - {sensor: G2, address: 2}
      - {sensor: G9, address: 3}
"""
GOOD = """\
collector: edge-test
site: testsite
mqtt: {topic_prefix: plant}
sources:
  - type: modbus
    id: panel
    host: 127.0.0.1
    channels:
      - {sensor: G0, address: 0, scale: 0.001, loop: {range: [0, 100]}}
      - {sensor: G1, address: 1, unit: ppm, range: [0, 100]}
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", *args], capture_output=True, text=True,
                          timeout=120)


def _files(tmp_path, collect: str = COLLECT):
    (tmp_path / "site.yaml").write_text(SITE)
    (tmp_path / "collect.yaml").write_text(collect)
    return str(tmp_path / "site.yaml"), str(tmp_path / "collect.yaml")


def test_config_check_compares_a_collect_config_with_its_site_either_way_round(tmp_path):
    site, collect = _files(tmp_path)
    expected = [
        f"{collect}:3:8: mqtt.topic_prefix: topic prefix 'plantwatch' is not 'plant', the prefix of {site}",
        f"{collect}:9:55: sources[panel].channels[G0].loop.range: range [0, 50] of sensor 'G0' differs from "
        f"[0, 100] ppm in {site}:8:5",
        f"{collect}:10:34: sources[panel].channels[G1].unit: unit '%LEL' of sensor 'G1' differs from 'ppm' in {site}:9:5",
        f"{collect}:11:10: sources[panel].channels[G2].sensor: sensor 'G2' is published by collector 'edge-other'",
        f"{collect}:12:10: sources[panel].channels[G9].sensor: sensor 'G9' is not in the sensor registry of site "
        "'testsite'",
    ]
    for args in (["config", "check", collect, "--site", site], ["config", "check", site, "--collect", collect]):
        r = _cli(*args)
        out = r.stdout + r.stderr
        assert r.returncode == 2, out
        assert "5 problem(s)" in out and "Traceback" not in out
        lines = [ln.strip() for ln in out.splitlines()]
        for want in expected:
            assert any(ln.startswith(want) for ln in lines), (want, out)
    # plantwatch collect refuses to start, before connecting to anything
    r = _cli("collect", "--config", collect, "--site", site)
    assert r.returncode == 2 and "5 problem(s)" in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr
    # an agreeing pair passes, with a note on the site's sensor of this collector that no channel reads
    site, collect = _files(tmp_path, GOOD)
    r = _cli("config", "check", site, "--collect", collect)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "agrees with" in r.stdout + r.stderr and "no channel reads (they will go stale): G3" in r.stdout + r.stderr


def test_the_daemon_announces_what_it_serves():
    from plantwatch.daemon.ingest.site_status import announcements

    cfg = load_config_text(SITE)
    got = {t: json.loads(p) for t, p in announcements(cfg, now=1.0)}
    reg = got["plant/testsite/status/registry"]
    assert reg["collectors"] == ["edge-other", "edge-test"] and reg["wire"] == {
        "version": 1, "flags": ["over_range", "signal_failure"]}
    served = got["plant/testsite/status/collectors/edge-test"]
    assert [s["id"] for s in served["sensors"]] == ["G0", "G1", "G3"]
    assert served["sensors"][0] == {"id": "G0", "kind": "gas", "unit": "ppm", "range": [0.0, 100.0]}


def test_the_collector_holds_its_batches_until_its_daemon_is_heard_and_checks_what_it_announces(tmp_path, caplog):
    from plantwatch.daemon.collect.config import load_collect_config_located
    from plantwatch.daemon.collect.watch import SiteWatch
    from plantwatch.daemon.ingest.site_status import announcements, collector_topic, registry_topic

    _, collect = _files(tmp_path, COLLECT.replace("topic_prefix: plantwatch", "topic_prefix: plant"))
    cfg, located = load_collect_config_located(collect)
    m = CollectMetrics()
    w = SiteWatch(cfg, m, located)
    value = lambda name: m.registry.get_sample_value(name)  # noqa: E731
    assert not w.gate.is_set() and value("plantwatch_collect_publishing_held") == 1
    announced = dict(announcements(load_config_text(SITE)))
    other = json.dumps({"v": 1, "site": "testsite", "collectors": ["edge-other"]}).encode()
    with caplog.at_level(logging.INFO, logger="plantwatch.collect.site"):
        w.on_message(registry_topic("plant", "testsite"), other)  # a daemon of the site, not for this collector
        assert not w.gate.is_set()
        assert "serves collectors edge-other, not 'edge-test'" in caplog.text
        w.on_message(registry_topic("plant", "testsite"), announced["plant/testsite/status/registry"])
        assert not w.gate.is_set()  # its own topic has not come yet
        w.on_message(collector_topic("plant", "testsite", "edge-test"),
                     announced["plant/testsite/status/collectors/edge-test"])
    assert w.gate.is_set() and value("plantwatch_collect_site_announced") == 1
    assert value("plantwatch_collect_publishing_held") == 0
    assert value("plantwatch_collect_site_problems") == 4  # G0's range, G1's unit, G2's owner, G9 unknown
    assert f"{collect}:9:55: sources[panel].channels[G0].loop.range: range [0, 50]" in caplog.text
    w.on_message(registry_topic("plant", "testsite"), b"not json")  # ignored, the gate stays open
    assert w.gate.is_set()


async def test_no_announcement_within_the_timeout_is_an_error_repeated_while_it_lasts(tmp_path, caplog):
    import asyncio

    from plantwatch.connectors.edge.buffer import Outbox
    from plantwatch.daemon.collect.config import load_collect_config_text
    from plantwatch.daemon.collect.watch import SiteWatch

    cfg = load_collect_config_text(GOOD + "daemon: {timeout: 0.2}\n")
    w = SiteWatch(cfg, CollectMetrics())
    stop = asyncio.Event()
    with Outbox(tmp_path / "b.sqlite3") as box, caplog.at_level(logging.ERROR, logger="plantwatch.collect.site"):
        box.append("t", [{"sensor": "G0", "time": 1.0, "value": 1.0}])
        task = asyncio.create_task(w.run(stop, box))
        await asyncio.sleep(0.5)
        stop.set()
        await task
    assert ("no plantwatch daemon has announced site 'testsite' and collector 'edge-test' on mqtt://127.0.0.1:1883"
            " under topic prefix 'plant'") in caplog.text
    assert "1 batches are kept in the buffer and not published" in caplog.text


# --- end to end -----------------------------------------------------------------------------------
SENSORS = [f"id: G{i}, kind: gas, quantity: H2S, unit: ppm, range: [0, 100]" for i in range(2)]


def _sources(port: int, declared: bool = True) -> str:
    g0 = "{sensor: G0, address: 0, range: [0, 100], unit: ppm}" if declared else "{sensor: G0, address: 0}"
    return f"""\
  - type: modbus
    id: panel
    host: 127.0.0.1
    port: {port}
    interval: 0.2
    channels: [{g0}, {{sensor: G1, address: 1}}]
"""


def _metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the collector's metrics")


def _metric_or_zero(port: int, name: str) -> float:
    try:
        return _metric(port, name)
    except OSError:  # the collector's metrics endpoint is not up yet
        return 0.0


async def _stored(dsn: str) -> list[float]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["t"] for r in await conn.fetch("SELECT extract(epoch FROM time)::float8 AS t FROM readings"
                                                 " ORDER BY time")]
    finally:
        await conn.close()


@pytest.mark.slow
async def test_a_misrouted_collector_keeps_its_batches_until_the_right_daemon_is_heard(tmp_path, mosquitto, db,
                                                                                        topic_prefix):
    import time

    prefix = topic_prefix.rstrip("/")
    panel = ModbusServer()
    await panel.start()
    await panel.set("holding", 0, [5, 7])
    d = start_daemon(tmp_path, SENSORS, mosquitto, db, prefix)
    buffer = tmp_path / "buf.sqlite3"
    port = free_tcp_port()
    wrong = collect_yaml(_sources(panel.port, declared=False), mosquitto=mosquitto, prefix=prefix + "-typo",
                         buffer=buffer, metrics_port=port)
    c = CollectProcess(tmp_path, wrong, name="misrouted")
    try:
        await d.wait_connected()
        c.start()
        # no daemon reads that prefix: the batches stay in the buffer (the broker would take and drop them)
        await eventually(lambda: _async(_metric_or_zero(port, "plantwatch_collect_batches_total") >= 5),
                         "batches made", on_fail=c.log)
        assert _metric(port, "plantwatch_collect_buffer_batches") >= 5, c.log()
        assert _metric(port, "plantwatch_collect_batches_published_total") == 0
        assert _metric(port, "plantwatch_collect_publishing_held") == 1
        assert _metric(port, "plantwatch_collect_site_announced") == 0
        assert await _stored(db) == []
        assert c.terminate() == 0
        assert "(no daemon has announced this site and collector)" in c.log()
        assert _kept_from_log(c.log()) >= 5, c.log()
        made = _readings_from_log(c.log())
        # corrected: the same buffer, the right prefix; the kept batches arrive, nothing vanished
        restarted = time.time()
        right = CollectProcess(tmp_path, collect_yaml(_sources(panel.port), mosquitto=mosquitto, prefix=prefix,
                                                      buffer=buffer, metrics_port=port), name="corrected")
        right.start()
        try:
            async def all_kept_stored():
                n = len([t for t in await _stored(db) if t < restarted])
                return n if n >= made else None

            assert await eventually(all_kept_stored, f"the {made} readings of the misrouted run",
                                    on_fail=right.log) == made
            assert "a daemon announces site 'testsite' and collector 'edge-test': publishing" in right.log()
            assert _metric(port, "plantwatch_collect_site_problems") == 0
            assert right.terminate() == 0
        finally:
            right.kill()
        assert d.terminate() == 0
    finally:
        c.kill()
        d.kill()
        await panel.stop()


async def _async(value):
    return value


def _readings_from_log(log: str) -> int:
    import re

    found = re.findall(r"collect: (\d+) readings in \d+ batches", log)
    assert found, log
    return int(found[-1])


def _kept_from_log(log: str) -> int:
    import re

    found = re.findall(r"stopping with (\d+) batches still buffered", log)
    return int(found[-1]) if found else 0


@pytest.mark.slow
async def test_with_the_shipped_acl_a_collector_reads_its_own_announcement_only(tmp_path, db):
    import asyncio
    from pathlib import Path

    import aiomqtt

    from plantwatch.connectors.services import MosquittoInstance

    from .helpers import DaemonProcess, new_metrics_port

    acl = Path(__file__).resolve().parents[1] / "deploy" / "site" / "mosquitto" / "acl"
    passwd = tmp_path / "passwd"
    passwd.touch(mode=0o600)
    pw = {"plantwatch": "pw-daemon", "edge-a": "pw-edge"}
    for user, secret in pw.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, secret], check=True, capture_output=True)
    broker = MosquittoInstance(options={"allow_anonymous": False, "acl_file": str(acl), "password_file": str(passwd)})
    broker.start()
    mport = new_metrics_port()
    try:
        cfg = tmp_path / "acl.yaml"
        cfg.write_text("site: {id: aclsite, areas: [{id: a, collector: edge-a}, {id: b, collector: edge-b}]}\n"
                       f"mqtt: {{host: {broker.host}, port: {broker.port}, topic_prefix: plantwatch, username: plantwatch,"
                       f" password: {pw['plantwatch']}, client_id: pw-acl-status}}\n"
                       f'database: {{dsn: "{db}"}}\nmetrics: {{port: {mport}}}\n'
                       "sensors:\n  - {id: GA, kind: gas, unit: ppm, range: [0, 100], area: a}\n"
                       "  - {id: GB, kind: gas, unit: ppm, range: [0, 100], area: b}\n")
        d = DaemonProcess(cfg, mport)
        d.start()
        try:
            await d.wait_connected(60)
            got: dict[str, bytes] = {}
            async with aiomqtt.Client(broker.host, broker.port, username="edge-a", password=pw["edge-a"]) as c:
                for t in ("registry", "collectors/edge-a", "collectors/edge-b"):
                    await c.subscribe(f"plantwatch/aclsite/status/{t}", qos=1)

                async def collect():
                    async for m in c.messages:
                        got[str(m.topic)] = bytes(m.payload)

                reader = asyncio.create_task(collect())
                for _ in range(100):
                    if len(got) >= 2:
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1.0)  # anything the ACL let through has arrived by now
                reader.cancel()
            assert set(got) == {"plantwatch/aclsite/status/registry", "plantwatch/aclsite/status/collectors/edge-a"}
            assert [s["id"] for s in json.loads(got["plantwatch/aclsite/status/collectors/edge-a"])["sensors"]] == ["GA"]
            assert d.terminate() == 0
        finally:
            d.kill()
    finally:
        broker.stop()
