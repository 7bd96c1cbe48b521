"""Decoding and validation: each kind of bad input gets its reason; good readings survive."""
from __future__ import annotations

import time

import msgspec
import numpy as np
import pytest

from plantwatch.connectors.wire import encode_batch
from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.ingest.validate import Registry, validate

from .helpers import site_config

NOW = 1_800_000_000.0
CFG = load_config_text(site_config(n_gas=3, n_robot=1, mqtt=("127.0.0.1", 1883), prefix="pw"))
REG = Registry.build(CFG, {s.id: 100 + i for i, s in enumerate(CFG.sensors)})
TOPIC = "pw/testsite/edge1/readings"


def run(payload: bytes, topic: str = TOPIC):
    return validate(topic, payload, CFG, REG, NOW)


def test_good_batch():
    v = run(encode_batch("edge1", 7, [{"sensor": "G1", "time": NOW, "value": 2.5, "quality": "uncertain"},
                                      {"sensor": "G0", "time": "2027-01-15T08:00:00Z", "value": 0.0}]))
    assert v.rejected == [] and v.seq == 7 and v.collector == "edge1"
    assert v.col.tolist() == [1, 0] and v.value.tolist() == [2.5, 0.0] and v.quality.tolist() == [1, 0]
    from datetime import datetime
    assert v.t[0] == NOW and v.t[1] == datetime.fromisoformat("2027-01-15T08:00:00+00:00").timestamp()


@pytest.mark.parametrize("reading,reason", [
    ({"sensor": "nope", "time": NOW, "value": 1}, "unknown_sensor"),
    ({"sensor": "G0", "time": NOW, "value": 113}, "out_of_range"),  # over range is accepted up to 112.5
    ({"sensor": "G0", "time": NOW, "value": 1, "flag": "gone"}, "wrong_type"),
    ({"sensor": "G0", "time": NOW, "value": -0.5}, "out_of_range"),
    ({"sensor": "G0", "time": NOW + 3600, "value": 1}, "future_time"),
    ({"sensor": "G0", "time": NOW - 30 * 86400, "value": 1}, "too_old"),
    ({"sensor": "G0", "time": "yesterday", "value": 1}, "bad_time"),
    ({"sensor": "G0", "time": "2027-01-15T08:00:00", "value": 1}, "bad_time"),  # no offset: ambiguous
    ({"sensor": "G0", "time": NOW, "value": "7"}, "wrong_type"),
    ({"sensor": "G0", "time": NOW, "value": True}, "wrong_type"),
    ({"sensor": "G0", "time": NOW}, "wrong_type"),
    ({"sensor": "G0", "time": NOW, "value": 1, "extra": 1}, "wrong_type"),
    ({"sensor": "R0", "time": NOW, "value": 1}, "wrong_kind"),
])
def test_bad_reading_is_rejected_alone(reading, reason):
    good = {"sensor": "G2", "time": NOW, "value": 3.0}
    v = run(msgspec.json.encode({"v": 1, "collector": "edge1", "seq": 1, "readings": [good, reading, good | {"time": NOW + 1}]}))
    assert [d.reason for d in v.rejected] == [reason]
    assert v.col.tolist() == [2, 2] and v.t.tolist() == [NOW, NOW + 1]
    d = v.rejected[0]
    assert d.detail and d.collector == "edge1" and d.seq == 1 and d.payload


def test_over_range_and_signal_failure_flags_are_kept_for_the_detectors():
    v = run(encode_batch("edge1", 1, [
        {"sensor": "G0", "time": NOW, "value": 100.0, "quality": "uncertain", "flag": "over_range"},
        {"sensor": "G1", "time": NOW, "value": 0.0, "quality": "bad", "flag": "signal_failure"},
        {"sensor": "G2", "time": NOW, "value": 112.5},  # a 22 mA loop scaled without clamping: over range
        {"sensor": "G2", "time": NOW + 1, "value": 3.0}]))
    assert v.rejected == [] and v.flag.tolist() == [1, 2, 0, 0] and v.value.tolist() == [100.0, 0.0, 112.5, 3.0]
    v = run(encode_batch("edge1", 1, [{"sensor": "G0", "time": NOW, "value": 1.0}]))
    assert v.flag is None  # unflagged messages cost nothing
    v = run(encode_batch("edge1", 1, [{"sensor": "G0", "time": NOW, "value": 200.0, "flag": "over_range"},
                                      {"sensor": "G1", "time": NOW, "value": 5.0, "flag": "over_range"}]))
    assert [d.reason for d in v.rejected] == ["out_of_range"] and "up to 112.5" in v.rejected[0].detail
    assert v.flag.tolist() == [1]


def test_non_finite_values_are_rejected():
    raw = b'{"v":1,"collector":"edge1","seq":1,"readings":[{"sensor":"G0","time":%d,"value":1e999},' \
          b'{"sensor":"G1","time":%d,"value":2}]}' % (NOW, NOW)
    v = run(raw)
    assert [d.reason for d in v.rejected] == ["non_finite"] and v.col.tolist() == [1]
    for token in (b"NaN", b"Infinity", b"-Infinity"):  # not JSON, but what Python's json.dumps writes
        v = run(raw.replace(b"1e999", token))
        assert [d.reason for d in v.rejected] == ["non_finite"] and v.col.tolist() == [1]


@pytest.mark.parametrize("payload,reason", [
    (b"{not json", "malformed_json"),
    (b"\xff\xfe\x00garbage", "invalid_utf8"),
    (b'{"v":1,"collector":"edge1","seq":1,"readings":[{"sensor":"\xff","time":1,"value":1}]}', "invalid_utf8"),
    (b"[]", "bad_envelope"),
    (b'{"v":2,"collector":"edge1","seq":1,"readings":[]}', "bad_version"),
    (b'{"v":1,"collector":"edge1","readings":[]}', "bad_envelope"),
    (b"x" * (2 * 1024 * 1024), "oversized"),
    (b'{"v":1,"collector":"other","seq":1,"readings":[]}', "collector_mismatch"),
])
def test_bad_envelope(payload, reason):
    v = run(payload)
    assert [d.reason for d in v.rejected] == [reason]
    assert len(v.col) == 0


def test_bad_topic():
    v = run(encode_batch("edge1", 1, []), topic="pw/othersite/edge1/readings")
    assert [d.reason for d in v.rejected] == ["bad_topic"]


def test_robot_readings_need_position_and_get_area():
    t = "pw/testsite/robot1/robot"
    v = validate(t, encode_batch("robot1", 1, [
        {"sensor": "R0", "time": NOW, "value": 1.0, "x": 150.0, "y": 20.0},
        {"sensor": "R0", "time": NOW + 1, "value": 1.0},
        {"sensor": "G0", "time": NOW + 2, "value": 1.0, "x": 1.0, "y": 1.0},
    ]), CFG, REG, NOW)
    assert sorted(d.reason for d in v.rejected) == ["missing_position", "wrong_kind"]
    assert v.robot and v.x.tolist() == [150.0] and v.area == ["area2"]


def test_dead_letter_keys_are_stable_for_redelivery():
    p = msgspec.json.encode({"v": 1, "collector": "edge1", "seq": 1, "readings": [{"sensor": "x", "time": NOW, "value": 1}]})
    assert run(p).rejected[0].key == run(p).rejected[0].key
    q = p.replace(b'"seq":1', b'"seq":2')
    assert run(p).rejected[0].key != run(q).rejected[0].key


def test_many_readings_vectorised_path():
    rs = [{"sensor": f"G{i % 3}", "time": NOW - 1000 + i, "value": float(i % 50)} for i in range(1000)]
    rs[500]["value"] = 1000.0
    v = run(encode_batch("edge1", 1, rs))
    assert len(v.col) == 999 and [d.reason for d in v.rejected] == ["out_of_range"]
    assert np.all(np.diff(v.t) > 0)


@pytest.mark.parametrize("envelope", [
    {"seq": 2 ** 63},  # one past bigint
    {"seq": 10 ** 30},
    {"seq": -1},  # the schema says minimum 0
    {"sent": 1e300},
    {"sent": -1e300},
])
def test_envelope_values_that_cannot_be_stored_are_rejected(envelope):
    body = {"v": 1, "collector": "edge1", "seq": 1, "readings": [{"sensor": "G0", "time": NOW, "value": 1.0}]} | envelope
    payload = msgspec.json.encode(body)
    v = run(payload)
    assert [d.reason for d in v.rejected] == ["bad_envelope"] and len(v.col) == 0
    d = v.rejected[0]
    assert d.seq is None and v.seq is None and d.payload == payload
    assert ("seq" if "seq" in envelope else "sent") in d.detail


def _transfer_setup():
    text = site_config(n_gas=1).replace("sensors:\n", "sensors:\n  - {id: TK1, kind: level, unit: m3, range: [0, 100], area: area1}\n", 1)
    cfg = load_config_text(text)
    return cfg, Registry.build(cfg, {s.id: 100 + i for i, s in enumerate(cfg.sensors)})


@pytest.mark.parametrize("change", [
    {"start": 1e300, "end": 1e300},
    {"start": -1e300},
    {"end": 4e11},  # year 14645: beyond what the database driver can encode
    {"by": "a\u0000b"},
    {"reference": "r" * 10_000},
])
def test_transfer_values_that_cannot_be_stored_are_rejected(change):
    cfg, reg = _transfer_setup()
    body = {"tank": "TK1", "start": NOW - 100, "end": NOW, "quantity": 5.0, "unit": "m3", "by": "op", "reference": "ref"} | change
    v = validate("plantwatch/testsite/transfers/declared", msgspec.json.encode(body), cfg, reg, NOW)
    assert v.transfer is None and [d.reason for d in v.rejected] == ["bad_transfer"]
    ok = validate("plantwatch/testsite/transfers/declared", msgspec.json.encode(body | {
        "start": NOW - 100, "end": NOW, "by": "op", "reference": "ref"}), cfg, reg, NOW)
    assert ok.rejected == [] and ok.transfer is not None


def test_robot_area_that_is_not_an_area_id_is_rejected():
    t = "pw/testsite/robot1/robot"
    v = validate(t, encode_batch("robot1", 1, [
        {"sensor": "R0", "time": NOW, "value": 1.0, "x": 1.0, "y": 2.0, "area": "a\u0000b"},
        {"sensor": "R0", "time": NOW + 1, "value": 1.0, "x": 1.0, "y": 2.0, "area": "x" * 5000},
        {"sensor": "R0", "time": NOW + 2, "value": 1.0, "x": 1.0, "y": 2.0, "area": "area2"},
    ]), CFG, REG, NOW)
    assert [d.reason for d in v.rejected] == ["bad_area", "bad_area"] and v.area == ["area2"]


def test_python_json_dumps_nan_rejects_only_those_readings():
    import json
    rs = [{"sensor": f"G{i % 3}", "time": NOW - 100 + i, "value": 1.0} for i in range(100)]
    rs[10]["value"] = float("nan")
    rs[20]["value"] = float("inf")
    rs[30]["value"] = float("-inf")
    rs[40]["time"] = float("nan")
    payload = json.dumps({"v": 1, "collector": "edge1", "seq": 3, "readings": rs}).encode()
    assert b"NaN" in payload and b"-Infinity" in payload
    v = run(payload)
    assert [d.reason for d in v.rejected] == ["non_finite"] * 4
    assert len(v.col) == 96 and v.seq == 3
    assert b"NaN" in v.rejected[0].payload and b"Infinity" in v.rejected[1].payload
    # in the envelope, a non-finite number makes the envelope unusable
    bad = json.dumps({"v": 1, "collector": "edge1", "seq": 3, "sent": float("nan"), "readings": rs[:5]}).encode()
    assert [d.reason for d in run(bad).rejected] == ["bad_envelope"]


def test_whole_payload_is_kept_in_message_dead_letters():
    big = b'{"v":1,"collector":"edge1","seq":1,"readings":[' + b'{"sensor":"G0","time":1,"value":1},' * 400 + b'{oops]}'
    assert len(big) > 10_000
    v = run(big)
    assert [d.reason for d in v.rejected] == ["malformed_json"] and v.rejected[0].payload == big
    huge = b"x" * (2 * 1024 * 1024)
    v = run(huge)
    assert [d.reason for d in v.rejected] == ["oversized"]
    assert v.rejected[0].payload == huge[:CFG.ingest.max_payload_bytes]


def test_readings_of_another_collectors_sensors_are_rejected():
    v = run(encode_batch("edge1", 1, [{"sensor": "G0", "time": NOW, "value": 1.0},
                                      {"sensor": "R0", "time": NOW, "value": 1.0, "x": 1.0, "y": 1.0}]),
            topic="pw/testsite/edge1/robot")
    assert [d.reason for d in v.rejected] == ["wrong_kind", "wrong_collector"]
    v = run(encode_batch("edge9", 1, [{"sensor": "G0", "time": NOW, "value": 1.0},
                                      {"sensor": "G1", "time": NOW, "value": 2.0}]), topic="pw/testsite/edge9/readings")
    assert [d.reason for d in v.rejected] == ["wrong_collector", "wrong_collector"] and len(v.col) == 0
    assert "edge1" in v.rejected[0].detail and "edge9" in v.rejected[0].detail


@pytest.mark.parametrize("payload", [
    b'{"v":1,"collector":"edge1","seq":1,"readings":[' + b"[" * 5000 + b"]" * 5000 + b"]}",
    b'{"v":1,"collector":"edge1","seq":1,"readings":[{"sensor":"G0","time":1,"value":NaN,"q":' + b"[" * 5000 + b"]" * 5000 + b"}]}",
    b'{"v":1,"collector":"edge1","seq":1,"readings":[{"sensor":"\\ud800","time":1,"value":NaN},{"sensor":"\\ud800","time":1,"value":1}]}',
])
def test_hostile_nesting_and_surrogates_never_raise(payload):
    v = run(payload)
    assert v.rejected and len(v.col) == 0
    assert all(d.reason in ("malformed_json", "non_finite", "wrong_type", "unknown_sensor") for d in v.rejected)
