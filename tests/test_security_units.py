"""A transfer declaration carries its unit (% of the tank's capacity, or the capacity's unit), is
converted with the tank's capacity, and is refused without a unit or when implausible: through the
CLI, MQTT (a real broker and database) and the detector."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid

import aiomqtt
import asyncpg
import numpy as np
import pytest

from plantwatch.connectors.mqtt import BrokerAddress
from plantwatch.connectors.wire import encode_batch
from plantwatch.daemon.config.model import ConfigError, load_config_text
from plantwatch.daemon.config.inventory import tank_scale, to_quantity
from plantwatch.daemon.detection import Watch
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.service import Daemon, Endpoints

from .helpers import publish_batches

SENSORS = """
sensors:
  - {id: TK-U1, kind: level, unit: '%', range: [0, 100], area: store}
  - {id: TK-B, kind: level, unit: '%', range: [0, 100], area: store}
  - {id: TK-T, kind: level, unit: '%', range: [0, 100], area: store}
  - {id: TK-K, kind: level, unit: kg, range: [0, 20000], area: store}
"""
INVENTORY = """
inventory:
  tanks:
    - {sensor: TK-T, capacity: 500, unit: t}
    - {sensor: TK-K, capacity: 20000, unit: kg, max_rate: 200000}
"""


def _config(prefix: str, mq, dsn: str) -> str:
    return f"""
site:
  id: unitsite
  areas: [{{id: store, bounds: [0, 0, 50, 50], collector: edge1}}]
mqtt: {{host: {mq.host}, port: {mq.port}, topic_prefix: {prefix}, client_id: pw-{uuid.uuid4().hex[:8]}}}
database: {{dsn: "{dsn}"}}
metrics: {{port: 0}}
{SENSORS}
detectors:
  - id: loss
    type: unexplained_loss
    select: {{kind: level}}
    params: {{capacity: {{TK-U1: 50, TK-B: 500}}, min_loss: 1.0, window: 600, smooth: 3}}
{INVENTORY}"""


async def _active(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT s.tag, a.condition FROM alarms a JOIN sensors s ON s.id = a.sensor_id"
                                " WHERE a.active AND a.detector_id = 'loss'")
        return {r["tag"]: r["condition"] for r in rows}
    finally:
        await conn.close()


def _declare(cfg_file, tank: str, quantity: str, start: float, end: float, *unit: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", "transfer", "--config", str(cfg_file),
                           "--tank", tank, "--quantity", quantity, *unit, "--start", str(start), "--end", str(end),
                           "--by", "shift lead", "--reference", f"BOL-{tank}"], capture_output=True, text=True, timeout=90)


@pytest.mark.slow
async def test_declared_percent_is_percent_of_capacity_both_directions(mosquitto, db, topic_prefix, tmp_path):
    """TK-U1 (%, 50 t): 20 % declared, 40 % drawn -> 10 t unexplained, alarmed (the old code credited
    20 t and said nothing). TK-B (%, 500 t): 20 % declared and drawn -> quiet (the old code credited
    20 t of 100 t: a false alarm). TK-T (%, 500 t) declared in t, TK-K (kg) in kg: quiet."""
    prefix = topic_prefix.rstrip("/")
    text = _config(prefix, mosquitto, db)
    d = Daemon(load_config_text(text), Endpoints(BrokerAddress(mosquitto.host, mosquitto.port), db), metrics=Metrics())
    task = asyncio.create_task(d.run())
    await asyncio.wait_for(d.ready.wait(), 20)
    cfg_file = tmp_path / "site.yaml"
    cfg_file.write_text(text)
    t0 = time.time() - 900
    try:
        got = await asyncio.gather(*(asyncio.to_thread(_declare, cfg_file, tank, q, t0 + 290, t0 + 410) for tank, q in
                                     (("TK-U1", "20%"), ("TK-B", "20 %"), ("TK-T", "100 t"), ("TK-K", "5000 kg"))))
        for p in got:
            assert p.returncode == 0, p.stdout + p.stderr
        outs = sorted(p.stdout.strip() for p in got)
        assert any(o.startswith("declared and stored: 20 % (10 capacity units) out of TK-U1") for o in outs), outs
        assert any(o.startswith("declared and stored: 20 % (100 capacity units) out of TK-B") for o in outs), outs
        assert any(o.startswith("declared and stored: 100 t out of TK-T") for o in outs), outs
        batches = []
        for k in range(500):
            f = min(max(k - 300, 0), 100) / 100.0  # the draw-off: seconds 300..400
            batches.append(encode_batch("edge1", k, [
                {"sensor": "TK-U1", "time": t0 + k, "value": 80.0 - 40.0 * f},
                {"sensor": "TK-B", "time": t0 + k, "value": 80.0 - 20.0 * f},
                {"sensor": "TK-T", "time": t0 + k, "value": 80.0 - 20.0 * f},
                {"sensor": "TK-K", "time": t0 + k, "value": 15000.0 - 5000.0 * f}]))
        await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/unitsite/edge1/readings", batches)
        for _ in range(150):
            active = await _active(db)
            if "TK-U1" in active:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # any false alarm on the other tanks has had its readings too
        active = await _active(db)
        assert "TK-U1" in active, active
        assert set(active) == {"TK-U1"}, active
    finally:
        d.stop.set()
        await task
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch("SELECT s.tag, t.quantity, t.unit, t.declared_quantity, t.declared_unit FROM transfers t"
                                " JOIN sensors s ON s.id = t.sensor_id ORDER BY s.tag")
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [("TK-B", 100.0, "capacity units", 20.0, "%"), ("TK-K", 5000.0, "kg", 5000.0, "kg"),
                                        ("TK-T", 100.0, "t", 100.0, "t"), ("TK-U1", 10.0, "capacity units", 20.0, "%")]


@pytest.mark.slow
async def test_declarations_without_unit_or_implausible_are_refused_over_mqtt(mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    d = Daemon(load_config_text(_config(prefix, mosquitto, db)), Endpoints(BrokerAddress(mosquitto.host, mosquitto.port), db),
               metrics=Metrics())
    task = asyncio.create_task(d.run())
    await asyncio.wait_for(d.ready.wait(), 20)
    now = time.time()
    bodies = {
        "no_unit": {"tank": "TK-K", "start": now - 60, "end": now, "quantity": 20.0},
        "huge": {"tank": "TK-K", "start": now - 3600, "end": now, "quantity": 1e308, "unit": "kg"},
        "too_fast": {"tank": "TK-K", "start": now - 60, "end": now, "quantity": 10000.0, "unit": "kg"},
        "wrong_unit": {"tank": "TK-T", "start": now - 3600, "end": now, "quantity": 20.0, "unit": "kg"},
        "ok": {"tank": "TK-T", "start": now - 3600, "end": now, "quantity": 20.0, "unit": "%"},
    }
    receipts: dict[str, dict] = {}
    try:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as c:
            await c.subscribe(f"{prefix}/unitsite/transfers/receipts", qos=1)
            for body in bodies.values():
                await c.publish(f"{prefix}/unitsite/transfers/declared", json.dumps(body).encode(), qos=1)
            async with asyncio.timeout(20):
                async for msg in c.messages:
                    r = json.loads(bytes(msg.payload))
                    receipts[r["key"]] = r
                    if len(receipts) == len(bodies):
                        break
    finally:
        d.stop.set()
        await task
    by_status = {}
    for r in receipts.values():
        by_status.setdefault(r["status"], []).append(r)
    assert len(by_status.get("stored", [])) == 1 and by_status["stored"][0]["quantity"] == 100.0, receipts
    details = sorted(r["detail"] for r in by_status["rejected"])
    assert len(details) == 4 and all(r["reason"] == "bad_transfer" for r in by_status["rejected"]), receipts
    assert any("unit" in x and "missing" in x.lower() for x in details), details
    assert any("is more than tank 'TK-K' holds (20000 kg)" in x for x in details), details
    assert any("above the plausible maximum of tank 'TK-K', 200000 kg/h" in x for x in details), details
    assert any("unit 'kg' is not a unit of tank 'TK-T': declare it in % or t" in x for x in details), details


def _site(extra: str = INVENTORY, params: str = "{capacity: {TK-U1: 50, TK-B: 500}}") -> str:
    return f"""
site:
  id: unitsite
  areas: [{{id: store, bounds: [0, 0, 50, 50], collector: edge1}}]
mqtt: {{host: 127.0.0.1, port: 1, topic_prefix: pw}}
database: {{dsn: "postgresql://nobody@127.0.0.1:1/x"}}
{SENSORS}
detectors:
  - {{id: loss, type: unexplained_loss, select: {{kind: level}}, params: {params}}}
{extra}"""


def test_cli_refuses_a_declaration_without_its_unit_in_one_line(tmp_path):
    cfg = tmp_path / "site.yaml"
    cfg.write_text(_site())
    for tank, q, unit, says in (("TK-T", "20", (), "a declaration needs its unit"),
                                ("TK-T", "20", ("--unit", "kg"), "unit 'kg' is not a unit of tank 'TK-T'"),
                                ("TK-K", "1e308 kg", (), "is more than tank 'TK-K' holds"),
                                ("TK-K", "5 t", ("--unit", "kg"), "says 't', --unit says 'kg'")):
        p = _declare(cfg, tank, q, time.time() - 60, time.time(), *unit)
        assert p.returncode == 2, p.stdout + p.stderr
        err = (p.stdout + p.stderr).strip()
        assert says in err and len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_detector_credits_the_converted_quantity_both_directions():
    """Through the daemon's Watch (capacity from inventory.tanks) and the conversion the daemon uses."""
    cfg = load_config_text(_site())
    sensors = {s.id: s for s in cfg.sensors}
    w = Watch(cfg.detectors[0], list(range(len(cfg.sensors))), cfg)
    det = w.detector
    assert det.conv.tolist() == [0.5, 5.0, 5.0, 1.0]  # % -> t for TK-U1 (50 t), TK-B and TK-T (500 t)

    def declared(tank, q, unit):
        return to_quantity(tank_scale(cfg, sensors[tank]), q, unit, 1000.0, 1200.0, top=sensors[tank].range[1])

    assert declared("TK-U1", 20, "%") == 10.0 and declared("TK-T", 20, "%") == 100.0 and declared("TK-T", 100, "t") == 100.0
    det.declare_transfer("TK-U1", 1000, 1200, declared("TK-U1", 20, "%"))
    det.declare_transfer("TK-B", 1000, 1200, declared("TK-B", 20, "%"))
    det.declare_transfer("TK-T", 1000, 1200, declared("TK-T", 100, "t"))
    codes = np.zeros(4, dtype=int)
    for k in range(1500):
        f = min(max(k - 1000, 0), 200) / 200.0
        out = det.update(np.arange(4), np.full(4, float(k)),
                         np.array([80 - 40 * f, 80 - 20 * f, 80 - 20 * f, 15000 - 5000 * f]))
        codes = np.maximum(codes, out.code)
    assert codes.tolist()[:3] == [2, 0, 0] and codes[3] == 1  # TK-K's 5000 kg fall was not declared here


def test_inventory_config_errors_say_where():
    with pytest.raises(ConfigError) as e:
        load_config_text(_site("""
inventory:
  tanks:
    - {sensor: TK-X, capacity: 5, unit: t}
    - {sensor: TK-K, capacity: 20, unit: t}
    - {sensor: TK-U1, capacity: 60, unit: t}
    - {sensor: TK-B, capacity: 500, unit: '%'}
"""))
    text = str(e.value)
    assert "inventory.tanks[0].sensor: unknown sensor 'TK-X'" in text, text
    assert "inventory.tanks[1].unit: sensor 'TK-K' reports in 'kg', the tank's unit is 't'" in text, text
    assert "inventory.tanks[2].capacity: 60 disagrees with the loss detector's capacity 50" in text, text
    assert "inventory.tanks[3].unit: the capacity's unit is a quantity" in text, text


def test_transfer_schema_and_decoder_agree():
    """connectors/schema/transfer-v1.json and wire.decode_transfer accept and refuse the same documents."""
    from importlib import resources

    import jsonschema

    from plantwatch.connectors.wire import decode_transfer

    schema = json.loads(resources.files("plantwatch.connectors").joinpath("schema/transfer-v1.json").read_text())
    good = {"tank": "TK-1", "start": 1.7e9, "end": "2026-01-01T00:00:00+00:00", "quantity": 20.0, "unit": "%"}
    docs = [(good, True), ({**good, "by": "ann", "reference": "BOL-1"}, True),
            ({k: v for k, v in good.items() if k != "unit"}, False), ({**good, "extra": 1}, False),
            ({**good, "quantity": "20"}, False), ({**good, "unit": 5}, False)]
    for doc, ok in docs:
        assert jsonschema.Draft202012Validator(schema).is_valid(doc) is ok, doc
        try:
            decode_transfer(json.dumps(doc).encode())
            decoded = True
        except ValueError:
            decoded = False
        assert decoded is ok, doc


def test_plausibility_bounds_a_tank_without_inventory_config_by_its_range():
    """Issue 14: 1e308 m3 for a 0-1000 m3 tank was stored with a 'stored' receipt."""
    from plantwatch.daemon.ingest.validate import Registry, validate_transfer

    cfg = load_config_text("""
site: {id: s, areas: [{id: a, collector: e}]}
sensors:
  - {id: TK, kind: level, unit: m3, range: [0, 1000], area: a}
""")
    reg = Registry.build(cfg, {"TK": 1})
    got = {}
    for q, dur in ((1e308, 3600), (1000.0, 3600), (900.0, 60), (10.0, 0)):
        body = {"tank": "TK", "start": 1.79e9, "end": 1.79e9 + dur, "quantity": q, "unit": "m3"}
        v = validate_transfer("plantwatch/s/transfers/declared", json.dumps(body).encode(), cfg, reg)
        got[q] = v.transfer.quantity if v.transfer else v.rejected[0].detail
    assert "is more than tank 'TK' holds (1000 m3)" in got[1e308]
    assert got[1000.0] == 1000.0 and got[10.0] == 10.0  # a whole tank in an hour; 10 m3 "at once" is one minute
    assert "rate 54000 m3/h" in got[900.0] and "plausible maximum of tank 'TK', 10000 m3/h" in got[900.0]
