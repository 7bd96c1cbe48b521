"""``plantwatch bench`` end to end on a tiny load: every phase runs and every reading is counted."""
from __future__ import annotations

import json

import pytest

from plantwatch.daemon.lab.bench import main

pytestmark = pytest.mark.slow


def test_bench_tiny_run_writes_json_and_accounts_for_every_reading(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["--quick", "--sensors", "200", "--seal-sensors", "200", "--readings", "20000", "--latency-seconds", "3",
               "--query-rows", "100000", "--fast-db", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["broker_raw"]["msg_per_s"] > 0
    assert [c["connections"] for c in res["copy_limit"]] == [1, 2]
    (e,) = res["e2e"]
    assert e["accounted"] and e["rows"] == e["published"] >= 20000
    assert [r["load"] for r in res["latency"]] == [0.5, 0.8]
    for r in res["latency"]:
        assert r["store"]["n"] > 0 and r["alarm"]["n"] > 0, r["why_empty"]
        assert r["why_empty"] == {} and r["errors"] == {}
    assert res["naive"]["rows"] > 0
    sc = res["seal_cost"]  # the rate with sealing off and on, in the same run
    assert sc["all_accounted"] and [r["seal"] for r in sc["runs"]] == [False, True, True, False], sc["runs"]
    assert res["queries"]["rows"] > 0 and res["queries"]["site_7d"]["rows_returned"] > 0
    assert "plantwatch bench" in capsys.readouterr().out
