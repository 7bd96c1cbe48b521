"""The wire format against hostile payloads: duplicate JSON keys are refused (msgspec alone keeps
the last silently: ``"collector":"edge-1","collector":"edge-5"`` was accepted as edge-5), in the
envelope (the whole batch) or in one reading (that reading alone, the good ones kept), on the fast
path and on the fallback paths; an oversized payload's dead letter says what it kept."""
from __future__ import annotations

import hashlib
import json

import msgspec
import pytest

from plantwatch.connectors import wire


def _decode(p: bytes) -> wire.Decoded:
    return wire.decode(p, max_bytes=1 << 20, max_readings=10_000)


def _good(n: int = 3, **extra) -> list[dict]:
    return [{"sensor": f"G{i}", "time": 1795430000.0 + i, "value": 1.0, **extra} for i in range(n)]


@pytest.mark.parametrize("envelope", [
    b'{"v":1,"collector":"edge-1","collector":"edge-5","seq":1,"readings":[]}',
    b'{"v":1,"collector":"edge-1","seq":1,"seq":2,"readings":[{"sensor":"G0","time":1,"value":1}]}',
    b'{"v":1,"collector":"edge-1","seq":1,"readings":[],"readings":[{"sensor":"G0","time":1,"value":1}]}',
    b'{"v":1,"collector":"edge-1","colle\\u0063tor":"edge-5","seq":1,"readings":[]}',  # an escaped twin
    b'{"v":1,"collector":"edge-1","collector":"edge-5","seq":1,"readings":[{"sensor":"G0","time":NaN,"value":1}]}',
])
def test_a_duplicate_envelope_key_dead_letters_the_batch(envelope):
    d = _decode(envelope)
    assert d.batch is None and [r.reason for r in d.rejected] == ["duplicate_key"], d
    assert d.rejected[0].raw == envelope and "duplicate key" in d.rejected[0].detail


@pytest.mark.parametrize("dup", [
    '{"sensor":"G1","sensor":"G9","time":1795430001.0,"value":1.0}',
    '{"sensor":"G1","time":1795430001.0,"value":1.0,"value":99.0}',
    '{"sensor":"G1","time":1795430001.0,"value":1.0,"quality":"good","quality":"bad"}',
    '{"sensor":"G1","time":1795430001.0,"value":1.0,"x":1,"x":2}',
    '{"sensor":"G1","time":1795430001.0,"value":1.0,"val\\u0075e":99.0}',
])
@pytest.mark.parametrize("others", ["plain", "quality", "nan"])
def test_a_duplicate_reading_key_rejects_that_reading_only(dup, others):
    rs = [json.dumps(r, separators=(",", ":")) for r in _good(3, **({"quality": "good"} if others == "quality" else {}))]
    if others == "nan":
        rs[2] = rs[2].replace('"value":1.0', '"value":NaN')
    rs[1] = dup
    p = ('{"v":1,"collector":"edge1","seq":7,"readings":[' + ",".join(rs) + "]}").encode()
    d = _decode(p)
    assert d.batch is not None and d.batch.collector == "edge1"
    reasons = sorted(r.reason for r in d.rejected)
    assert reasons == (["duplicate_key", "non_finite"] if others == "nan" else ["duplicate_key"]), d.rejected
    assert [r.sensor for r in d.readings] == (["G0"] if others == "nan" else ["G0", "G2"])
    dl = [r for r in d.rejected if r.reason == "duplicate_key"][0]
    assert b'"G1"' in dl.raw and "duplicate key" in dl.detail


@pytest.mark.parametrize("readings", [
    _good(100), _good(100, quality="good"), [dict(r, x=1.0, y=2.0, area="area1") for r in _good(50)],
    [dict(r, sensor="a,b,c") for r in _good(5)], [dict(r, time="2026-11-23T14:00:00Z") for r in _good(5)], [],
])
def test_batches_without_duplicates_are_accepted_whole(readings):
    for sent in (None, 1795430000.5):
        p = wire.encode_batch("edge1", 1, readings, sent)
        d = _decode(p)
        assert d.rejected == [] and len(d.readings) == len(readings)
        pretty = json.dumps(msgspec.json.decode(p), indent=2).encode()  # whitespace around everything
        assert _decode(pretty).rejected == []


def test_oversized_dead_letter_says_what_it_kept():
    p = wire.encode_batch("edge1", 1, _good(5000))
    d = wire.decode(p, max_bytes=4096, max_readings=10_000)
    (r,) = d.rejected
    assert r.reason == "oversized" and r.raw == p[:4096]
    assert "first 4096 bytes are kept" in r.detail and hashlib.sha256(p).hexdigest() in r.detail
    assert str(len(p)) in r.detail
