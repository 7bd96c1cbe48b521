"""A short run of the decoders' fuzzer (atheris): both targets run their inputs, and a decoder
defect found at volume stays fixed."""
from __future__ import annotations

import json

import pytest

from plantwatch.daemon.lab.bench import fuzz


def test_a_sparkplug_metric_name_that_is_not_utf8_is_a_dead_letter_not_an_exception():
    """Found by the fuzzer: protobuf hands back a proto2 string that is not UTF-8 as bytes, and the
    session's ``name.startswith("Node Control/")`` raised TypeError (the intake's catch-all then
    logged a traceback per message)."""
    from prometheus_client import CollectorRegistry

    from plantwatch.daemon.config.model import load_config_text
    from plantwatch.daemon.ingest.sparkplug import SparkplugIngest
    from plantwatch.daemon.ingest.validate import Registry

    cfg = load_config_text(fuzz.SITE, "fuzz-site.yaml")
    reg = Registry.build(cfg, {x.id: i + 1 for i, x in enumerate(cfg.sensors)})
    ingest = SparkplugIngest(cfg, reg, CollectorRegistry())
    nbirth = bytes.fromhex("0880d8c1a28ca28c3412120a0562645365711898d0c1a28c342008580012190a07479d732f48345310011898d0c1"
                           "a28c342009650000c03f12110a02533210021898d0c134200350041800")  # a metric named b"G\x9ds/H4S"
    h = ingest.handle("spBv1.0/plant/NBIRTH/node1", nbirth, fuzz.NOW)
    assert [(d.reason, d.detail) for d in h.validated.rejected] == [
        ("sp_malformed", "not a Sparkplug B payload: a metric name is not UTF-8")]
    assert len(h.validated.col) == 0


@pytest.mark.slow
def test_short_fuzz_run_of_both_decoders(tmp_path):
    out = tmp_path / "fuzz.json"
    assert fuzz.main(["--runs", "3000", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [r["target"] for r in res["results"]] == ["wire", "sparkplug"]
    for r in res["results"]:
        assert r["inputs"] == 3000 and r["coverage"]["edges"] > 50, r
        assert r["findings"] == [], r["findings"]
