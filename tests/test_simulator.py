"""Plant simulator: demo site config, plant model, incidents, ground truth, wire messages, MQTT."""
from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections import defaultdict
from importlib import resources

import jsonschema
import numpy as np
import pytest

from plantwatch.detectors import REGISTRY
from plantwatch.connectors import wire
from plantwatch.daemon.lab.simulator.collector import Collectors, run_simulator
from plantwatch.daemon.lab.simulator.plant import Plant, leak_concentration, sensor_limits
from plantwatch.daemon.lab.simulator.robot_route import Route, area_of
from plantwatch.daemon.lab.simulator.scenario import Scenario, default_scenario, parse_scenario
from plantwatch.daemon.lab.simulator.truth import build_truth, close_truth, write_truth
from plantwatch.daemon.config.model import load_config
from plantwatch.daemon.lab.demo_site import load_demo_config

T0 = 1_732_370_400.0


@pytest.fixture(scope="module")
def cfg():
    return load_demo_config()


@pytest.fixture(scope="module")
def scenario():
    return default_scenario()


@pytest.fixture(scope="module")
def demo_run(cfg, scenario):
    """Per sensor id: list of (t_rel, time, value) over 90 s of the demo scenario; robot rows apart."""
    plant = Plant(cfg, scenario, t0=T0)
    ids = [s.id for s in cfg.sensors]
    series: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    robot: list[tuple[float, str, float, float, float, str | None]] = []
    for f in plant.run(90):
        for i, t, v in zip(f.idx.tolist(), f.time.tolist(), f.value.tolist()):
            series[ids[i]].append((f.t_rel, t, v))
        for k, i in enumerate(f.robot_idx.tolist()):
            robot.append((f.t_rel, ids[i], float(f.robot_value[k]), float(f.robot_x[k]), float(f.robot_y[k]),
                          f.robot_area[k]))
    return series, robot


@pytest.fixture(scope="module")
def schema():
    text = resources.files("plantwatch.connectors").joinpath("schema/batch-v1.json").read_text()
    return json.loads(text)


# --- demo site config ------------------------------------------------------------------------
def test_demo_config_is_valid_and_complete(cfg):
    assert load_config(resources.files("plantwatch.daemon.lab").joinpath("sites/demo.yaml")) == cfg
    assert 40 <= len(cfg.sensors) <= 80
    assert 3 <= len(cfg.site.areas) <= 4 and all(a.bounds for a in cfg.site.areas)
    kinds = {s.kind for s in cfg.sensors}
    assert {"gas", "pressure", "level", "temperature", "flow", "robot"} <= kinds
    assert {d.type for d in cfg.detectors} <= set(REGISTRY)  # every type is a registered detector
    # every fixed sensor sits inside its area and is watched by a 15 s stale detector
    stale = {cfg.sensors[i].id for d in cfg.detectors if d.type == "stale" for i in cfg.watched(d)}
    for s in cfg.sensors:
        if s.kind == "robot":
            assert s.location is None
            continue
        assert s.id in stale
        assert area_of(cfg, *s.location) is not None
        bounds = next(a.bounds for a in cfg.site.areas if a.id == s.area)
        assert bounds[0] <= s.location[0] <= bounds[2] and bounds[1] <= s.location[1] <= bounds[3], s.id
    assert all(d.params.get("timeout") == 15 for d in cfg.detectors if d.type == "stale")


def test_demo_gas_limits_and_neighbours(cfg):
    limits = sensor_limits(cfg)
    expect = {"h2s": (5, 10), "nh3": (25, 35), "cl2": (0.5, 1.0), "ch4": (10, 20)}
    pos = {s.id: s.location for s in cfg.sensors}
    for s in cfg.sensors:
        if s.kind != "gas":
            continue
        lp = limits[s.id]
        assert (lp.high, lp.high_high) == expect[s.quantity.lower()], s.id
        assert 2 <= lp.on_delay <= 5 and lp.deadband > 0
        assert s.neighbours, f"{s.id} has no neighbours"
        for n in s.neighbours:
            assert math.dist(pos[s.id], pos[n]) <= 30, (s.id, n)
            assert s.id in next(x.neighbours for x in cfg.sensors if x.id == n), "neighbours are mutual"
    for s in cfg.sensors:
        if s.kind == "pressure":
            lp = limits[s.id]
            assert None not in (lp.low_low, lp.low, lp.high, lp.high_high)


# --- plant model -----------------------------------------------------------------------------
def _frames(cfg, scenario, n, seed=None):
    return list(Plant(cfg, scenario, t0=T0, seed=seed).run(n))


def test_plant_is_deterministic_with_seed(cfg, scenario):
    a, b = _frames(cfg, scenario, 30), _frames(cfg, scenario, 30)
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa.idx, fb.idx)
        np.testing.assert_array_equal(fa.value, fb.value)
        np.testing.assert_array_equal(fa.time, fb.time)
        np.testing.assert_array_equal(fa.robot_value, fb.robot_value)
    c = _frames(cfg, scenario, 30, seed=scenario.seed + 1)
    assert any(not np.array_equal(fa.value, fc.value) for fa, fc in zip(a, c))


def test_incident_free_run_shares_the_noise(cfg, scenario):
    """With and without incidents, sensors no incident touches read exactly the same."""
    with_inc = _frames(cfg, scenario, 40)
    without = _frames(cfg, scenario.without_incidents(), 40)
    ids = [s.id for s in cfg.sensors]
    for fa, fb in zip(with_inc, without):
        va = dict(zip(fa.idx.tolist(), fa.value.tolist()))
        vb = dict(zip(fb.idx.tolist(), fb.value.tolist()))
        for name in ("UT-PT-401", "RX-PT-201", "TF-NH3-01", "TF-LT-102", "TF-TT-101"):
            assert va[ids.index(name)] == vb[ids.index(name)]


def test_normal_signals_are_plausible(cfg, demo_run):
    series, robot = demo_run
    by_id = {s.id: s for s in cfg.sensors}
    limits = sensor_limits(cfg)
    for sid, rows in series.items():
        v = np.array([r[2] for r in rows])
        s = by_id[sid]
        assert (v >= s.range[0]).all() and (v <= s.range[1]).all(), sid
        times = [r[1] for r in rows]
        assert all(b > a for a, b in zip(times, times[1:])), f"{sid} times not increasing"
    # untouched gas detectors stay near zero, well below their high limit
    for sid in ("TF-CL2-01", "UT-CH4-01", "RX-NH3-02", "LB-H2S-01"):
        v = np.array([r[2] for r in series[sid]])
        assert v.max() < 0.4 * limits[sid].high and v.min() >= 0
    # pressures hold their set-point with noise (not flat, not wandering)
    v = np.array([r[2] for r in series["UT-PT-401"]])
    assert 0 < v.std() < 0.2 and limits["UT-PT-401"].low < v.min() and v.max() < limits["UT-PT-401"].high
    # declared fill: TF-LT-101 rises by ~0.01 %/s from 30 s
    lt = dict((r[0], r[2]) for r in series["TF-LT-101"])
    assert lt[89] - lt[30] == pytest.approx(0.59, abs=0.1)


def test_temperature_daily_cycle(cfg, scenario):
    """Ambient at 16:00 UTC is warmer than at 04:00 UTC by about twice the amplitude."""
    day = 1_732_320_000.0  # 2024-11-23 00:00:00 UTC
    i = [s.id for s in cfg.sensors].index("TF-TT-101")

    def at(hour):
        f = next(Plant(cfg, scenario.without_incidents(), t0=day + hour * 3600).run(1))
        return float(f.value[list(f.idx).index(i)])

    assert at(16) - at(4) == pytest.approx(2 * scenario.daily["TF-TT-101"], abs=0.6)


def test_leak_reaches_neighbours_later_further_away(cfg, scenario, demo_run):
    series, _ = demo_run
    leak = next(i for i in scenario.incidents if i.kind == "leak")
    limits = sensor_limits(cfg)
    pos = {s.id: s.location for s in cfg.sensors}
    h2s = [s.id for s in cfg.sensors if s.kind == "gas" and s.quantity == "H2S"]
    first_above = {}
    for sid in h2s:
        before = [v for tr, _, v in series[sid] if tr < leak.start]
        assert max(before) < limits[sid].high, f"{sid} above its limit before the leak"
        above = [tr for tr, _, v in series[sid] if v >= limits[sid].high]
        if above:
            first_above[sid] = above[0]
    assert {"TF-H2S-01", "TF-H2S-02", "TF-H2S-03"} <= set(first_above)
    assert "TF-H2S-04" not in first_above and "LB-H2S-01" not in first_above  # too far
    # later with distance: sort by distance, first exceedance times must not decrease
    dist = {sid: math.dist(pos[sid], leak.source) for sid in first_above}
    ordered = sorted(first_above, key=dist.get)
    times = [first_above[s] for s in ordered]
    assert times == sorted(times) and times[-1] - times[0] >= 5
    assert all(t - leak.start >= dist[s] / leak.front_speed - 1 for s, t in first_above.items())
    # the far detector sees a smaller, later rise
    far = [v for tr, _, v in series["TF-H2S-04"]]
    assert 0.5 < max(far) < limits["TF-H2S-04"].high
    # concentration falls with distance (noise-free model, steady release)
    d = np.array([0.0, 10, 20, 30, 40])
    steady = leak.model_copy(update={"end": None})
    c = leak_concentration(steady, steady.source[0] + d, np.full(5, steady.source[1]), steady.start + 100)
    assert (np.diff(c) < 0).all()


def test_pressure_drop_signature(cfg, scenario, demo_run):
    series, _ = demo_run
    inc = next(i for i in scenario.incidents if i.kind == "pressure_drop")
    lp = sensor_limits(cfg)["RX-PT-202"]
    p = dict((tr, v) for tr, _, v in series["RX-PT-202"])
    assert all(lp.low < p[t] < lp.high for t in range(0, int(inc.start)))
    assert p[inc.start + 5] < lp.low_low  # fast decline
    assert p[inc.end - 1] == pytest.approx(8.0 * (1 - inc.magnitude), rel=0.1)
    assert p[89] > p[inc.end]  # recovering after the end


def test_silent_sensor_emits_nothing(scenario, demo_run):
    series, _ = demo_run
    inc = next(i for i in scenario.incidents if i.kind == "silent")
    rows = series[inc.sensors[0]]
    assert [tr for tr, _, _ in rows] == list(range(int(inc.start)))


def test_stuck_sensor_is_constant(scenario, demo_run):
    series, _ = demo_run
    inc = next(i for i in scenario.incidents if i.kind == "stuck")
    rows = series[inc.sensors[0]]
    after = {v for tr, _, v in rows if tr >= inc.start}
    assert len(after) == 1 and len(rows) == 90  # still reporting, one value
    neighbour = {v for tr, _, v in series["RX-CH4-01"] if tr >= inc.start}
    assert len(neighbour) > 1


def test_drift_grows_linearly(scenario, demo_run):
    series, _ = demo_run
    inc = next(i for i in scenario.incidents if i.kind == "drift")
    v = dict((tr, val) for tr, _, val in series[inc.sensors[0]])
    assert v[85] - v[25] == pytest.approx(inc.magnitude * 60, abs=0.5)
    assert v[4] < 0.6


def test_robot_moves_along_route_and_reports_position(cfg, scenario, demo_run):
    _, robot = demo_run
    chans = {s.id for s in cfg.sensors if s.kind == "robot"}
    per_second = defaultdict(set)
    pos = {}
    for tr, sid, value, x, y, area in robot:
        per_second[tr].add(sid)
        pos[tr] = (x, y)
        assert area == area_of(cfg, x, y)
    assert all(v == chans for v in per_second.values()) and len(per_second) == 90
    steps = [math.dist(pos[t], pos[t + 1]) for t in range(89)]
    speed = scenario.robots[0].speed
    assert max(steps) <= speed + 0.02 and np.mean(steps) > 0.8 * speed  # positions are rounded to 1 cm
    assert len({a for *_, a in robot}) >= 2  # crosses areas
    # it drives through the leak while it is active and its H2S cell sees it
    h2s = [(tr, v) for tr, sid, v, *_ in robot if sid == "ROBOT1-H2S"]
    assert max(v for tr, v in h2s if tr < 15) < 1.0
    assert max(v for tr, v in h2s) > 10
    route = Route(scenario.robots[0])
    assert route.length > 100


def test_scenario_parsing_and_checks(cfg):
    sc = parse_scenario(json.dumps({"seed": 3, "incidents": [
        {"id": "s1", "kind": "silent", "sensors": ["TF-H2S-01"], "start": 2}]}))
    assert sc.seed == 3 and sc.incidents[0].end is None
    with pytest.raises(ValueError, match="unknown sensor"):
        Plant(cfg, parse_scenario("incidents: [{id: x, kind: stuck, sensors: [NOPE], start: 1}]"))
    with pytest.raises(ValueError):
        parse_scenario("incidents: [{id: x, kind: leak, start: 1}]")  # leak without gas/source
    with pytest.raises(ValueError):
        parse_scenario("incidents: [{id: x, kind: pressure_drop, sensors: [RX-PT-202], start: 1, magnitude: 2}]")


# --- ground truth ----------------------------------------------------------------------------
def test_ground_truth_content(cfg, scenario, tmp_path):
    truth = build_truth(cfg, scenario, t0=T0, duration=60)
    path = tmp_path / "truth.json"
    write_truth(path, truth)
    data = json.loads(path.read_text())
    assert data["t0"] == T0 and data["site"] == "demo" and data["duration"] == 60
    incs = {e["id"]: e for e in data["incidents"]}
    assert {e["kind"] for e in incs.values()} == {"leak", "pressure_drop", "drift", "stuck", "silent"}
    for e in incs.values():
        assert {"id", "kind", "description", "sensors", "area", "start", "end"} <= set(e)
        assert e["description"] and e["sensors"] and e["area"]
        assert T0 <= e["start"] < e["end"] <= T0 + 60
        assert set(e["sensors"]) <= set(e["affected"])
    leak = incs["leak-TK-103"]
    assert leak["start"] == T0 + 15 and leak["end"] == T0 + 55
    assert set(leak["sensors"]) == {"TF-H2S-01", "TF-H2S-02", "TF-H2S-03", "ROBOT1-H2S"}
    assert {"TF-H2S-04", "RX-H2S-01"} <= set(leak["affected"]) and leak["settle"] > 0
    assert incs["silent-LB-NH3-02"]["conditions"] == ["stale"]
    assert incs["silent-LB-NH3-02"]["end"] == T0 + 60  # open-ended: ends with the run
    assert incs["pdrop-V-202"]["sensors"] == ["RX-PT-202"]
    # a run whose end is not known yet, then closed when it stops
    open_truth = build_truth(cfg, scenario, t0=T0, duration=None)
    assert next(e for e in open_truth["incidents"] if e["kind"] == "stuck")["end"] is None
    closed = close_truth(open_truth, T0 + 18)
    assert {e["kind"] for e in closed["incidents"]} == {"drift", "stuck", "leak"}
    assert all(e["end"] <= T0 + 18 for e in closed["incidents"])


def test_truth_leak_sensors_match_the_simulated_exceedances(cfg, scenario, demo_run):
    """The sensors the truth says should alarm are those the plant drove over their limit."""
    series, robot = demo_run
    truth = build_truth(cfg, scenario, t0=T0, duration=90)
    leak = next(e for e in truth["incidents"] if e["kind"] == "leak")
    limits = sensor_limits(cfg)
    over = {sid for sid, rows in series.items() if limits.get(sid) and limits[sid].high is not None
            and sum(v >= limits[sid].high for tr, _, v in rows if tr >= 15) >= 8}
    over |= {sid for _, sid, v, *_ in robot if limits.get(sid) and v >= limits[sid].high}
    # the drift crosses no limit within 90 s, the pressure drop is a low-side limit
    assert set(leak["sensors"]) == over


# --- wire messages ---------------------------------------------------------------------------
def test_messages_validate_against_schema_and_decode(cfg, scenario, schema):
    colls = Collectors(cfg, "plantwatch", max_readings=7)
    seqs = defaultdict(list)
    n_readings = 0
    for f in Plant(cfg, scenario, t0=T0).run(25):
        for m in colls.batches(f):
            payload = wire.encode_batch(m.collector, m.seq, m.readings, sent=f.t + 1)
            doc = json.loads(payload)
            jsonschema.validate(doc, schema)
            dec = wire.decode(payload, max_bytes=1 << 20, max_readings=10_000)
            assert dec.batch is not None and not dec.rejected
            coll, kind = wire.parse_topic(m.topic, "plantwatch", "demo")
            assert coll == m.collector == dec.batch.collector
            assert len(dec.readings) <= 7
            if kind == "robot":
                assert all(r.x is not None and r.y is not None for r in dec.readings)
            else:
                assert all(r.x is None for r in dec.readings)
            seqs[coll].append(dec.batch.seq)
            n_readings += len(dec.readings)
    assert set(seqs) == {"edge-tankfarm", "edge-reactor", "edge-loading", "edge-utilities", "robot1"}
    for coll, s in seqs.items():
        assert s == list(range(len(s))), coll
    assert n_readings == 25 * 62 - 5  # every sensor every second, minus the silent one from 20 s


# --- over MQTT (the mosquitto fixture comes from tests/conftest.py) ----------------------------
async def _subscribe(host, port, prefix, received, ready):
    import aiomqtt

    async with aiomqtt.Client(host, port, identifier=f"sim-test-{uuid.uuid4().hex[:8]}") as sub:
        await sub.subscribe(f"{prefix}/#", qos=1)
        ready.set()
        async for msg in sub.messages:
            received.append((str(msg.topic), bytes(msg.payload)))


def _check_received(received, schema, prefix):
    seqs = defaultdict(set)
    for topic, payload in received:
        doc = json.loads(payload)
        jsonschema.validate(doc, schema)
        coll, kind = wire.parse_topic(topic, prefix, "demo")
        assert doc["collector"] == coll
        assert (kind == "robot") == coll.startswith("robot")
        seqs[coll].add(doc["seq"])
    return seqs


@pytest.mark.timeout(60)
async def test_publishes_batches_over_mqtt(mosquitto, cfg, schema, tmp_path):
    prefix = f"simtest-{uuid.uuid4().hex[:8]}"
    received: list[tuple[str, bytes]] = []
    ready = asyncio.Event()
    sub = asyncio.create_task(_subscribe(mosquitto.host, mosquitto.port, prefix, received, ready))
    await asyncio.wait_for(ready.wait(), 10)
    truth = tmp_path / "truth.json"
    stats = await run_simulator(cfg, mosquitto.host, mosquitto.port, prefix, 12, 20.0, default_scenario(), truth,
                                None, max_readings=10)
    await asyncio.sleep(0.5)
    sub.cancel()
    await asyncio.gather(sub, return_exceptions=True)
    assert stats.seconds == 12 and stats.unsent == 0 and stats.dropped == 0
    assert stats.published == stats.batches == len(received)
    seqs = _check_received(received, schema, prefix)
    for coll, s in seqs.items():
        assert s == set(range(len(s))), coll
    assert sum(len(json.loads(p)["readings"]) for _, p in received) == 12 * 62
    data = json.loads(truth.read_text())
    assert data["duration"] == 12 and {e["kind"] for e in data["incidents"]} == {"drift", "stuck"}


class _Proxy:
    """A TCP proxy to the broker that can cut every connection and refuse new ones for a while."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.up = True
        self.conns: list[asyncio.StreamWriter] = []
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer):
        if not self.up:
            writer.close()
            return
        try:
            r2, w2 = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.close()
            return
        self.conns += [writer, w2]

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, w2), pipe(r2, writer))

    def cut(self):
        self.up = False
        for w in self.conns:
            w.transport.abort()
        self.conns.clear()

    async def close(self):
        self.cut()
        self.server.close()
        await self.server.wait_closed()


@pytest.mark.timeout(90)
async def test_reconnects_and_resends_after_broker_loss(mosquitto, cfg, schema):
    prefix = f"simtest-{uuid.uuid4().hex[:8]}"
    received: list[tuple[str, bytes]] = []
    ready = asyncio.Event()
    sub = asyncio.create_task(_subscribe(mosquitto.host, mosquitto.port, prefix, received, ready))
    await asyncio.wait_for(ready.wait(), 10)
    proxy = _Proxy(mosquitto.host, mosquitto.port)
    port = await proxy.start()
    scenario = Scenario(seed=1)  # no incidents: every sensor reports every second
    run = asyncio.create_task(run_simulator(cfg, "127.0.0.1", port, prefix, 40, 10.0, scenario, None, None))
    await asyncio.sleep(1.0)
    proxy.cut()  # broker gone for ~1.5 s (15 simulated seconds): the simulator buffers
    await asyncio.sleep(1.5)
    proxy.up = True
    stats = await asyncio.wait_for(run, 40)
    await asyncio.sleep(0.5)
    sub.cancel()
    await asyncio.gather(sub, return_exceptions=True)
    await proxy.close()
    assert stats.connects >= 2 and stats.errors
    assert stats.unsent == 0 and stats.dropped == 0 and stats.seconds == 40
    seqs = _check_received(received, schema, prefix)
    assert len(seqs) == 5
    for coll, s in seqs.items():
        assert s == set(range(40)), f"{coll}: missing {sorted(set(range(40)) - s)}"  # at least once, no gap


async def test_stop_event_ends_an_open_ended_run(cfg, tmp_path):
    """With the broker unreachable the run still stops on the event and closes the truth."""
    stop = asyncio.Event()
    truth = tmp_path / "t.json"
    run = asyncio.create_task(run_simulator(cfg, "127.0.0.1", 1, "x", None, 20.0, default_scenario(), truth, stop,
                                            flush_grace=1.0))
    await asyncio.sleep(1.2)
    assert json.loads(truth.read_text())["duration"] is None
    stop.set()
    stats = await asyncio.wait_for(run, 15)
    data = json.loads(truth.read_text())
    assert stats.seconds >= 10 and stats.published == 0 and stats.unsent == stats.batches
    assert data["duration"] == stats.seconds
    assert all(e["end"] is not None and e["end"] <= data["t0"] + stats.seconds for e in data["incidents"])
