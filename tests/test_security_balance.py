"""The mass balance (inventory_balance) and the instrument checks (inventory_integrity) on the
security scenarios (daemon/lab/security_sim.py), old and new detector sets side by side."""
from __future__ import annotations

import numpy as np
import pytest

from plantwatch.daemon.lab import security_eval
from plantwatch.daemon.lab.security_sim import TankSpec, simulate
from plantwatch.detectors import REGISTRY
from plantwatch.detectors.base import SensorInfo
from plantwatch.detectors.inventory_balance import minimum_detectable_rate


@pytest.fixture(scope="module")
def results():
    return {(r.case, r.set): r for r in security_eval.evaluate(quick=True)}


def test_targets_met_and_old_detectors_fall_short(results):
    assert security_eval.missed(list(results.values())) == []
    new, old = (lambda c: results[c, "new"]), (lambda c: results[c, "old"])
    assert new("normal").false_alarms == 0
    assert new("siphon").detected_by == "inventory_balance:inventory_loss" and new("siphon").delay_s <= 6 * 3600
    assert old("siphon").delay_s is None or old("siphon").delay_s > new("siphon").delay_s
    assert new("drawoff").delay_s <= 120
    assert "inventory_balance:more_than_declared" in new("skim").raised
    assert new("cover").detected_by == "inventory_balance:less_than_declared" and old("cover").delay_s is None
    assert new("replay").detected_by == "inventory_integrity:replaying" and new("replay").delay_s <= 3600
    assert new("replay").delay_s < (old("replay").delay_s or np.inf)
    assert "inventory_integrity:frozen" in new("frozen").raised
    assert not new("late").active_at_end  # the declaration after the fact explained the loss


def _run(det, sc, cols=2):
    decl = list(sc.declarations)
    codes = []
    for k in range(len(sc.t)):
        while decl and decl[0][0] <= sc.t[k]:
            _, s, e, q = decl.pop(0)
            det.declare_transfer("TK-S", s, e, q)
        x = np.array([sc.level[k], sc.temp[k]])[:cols]
        codes.append(int(det.update(np.arange(cols), np.full(cols, sc.t[k]), x).code[0]))
    return np.array(codes)


def test_uncompensated_thermal_swing_is_what_compensation_removes():
    """The same tank without its temperature sensor: the ±0.5 %/day swing reads as losses and gains."""
    spec = TankSpec()
    sc = simulate("normal", 72, spec, seed=2)
    params = {"capacity": 50.0, "accuracy": 0.01, "bucket": 300.0}
    cls = REGISTRY["inventory_balance"]
    plain = cls(cls.Params.model_validate(params), [security_eval.TANK])
    comp = cls(cls.Params.model_validate({**params, "temperature": {"TK-S": "TT-S"}, "expansion": {"TK-S": spec.beta}}),
               [security_eval.TANK, security_eval.TEMP])
    assert (_run(plain, sc, cols=1) != 0).any()
    assert not (_run(comp, sc) != 0).any()
    assert comp.minimum_detectable("TK-S") < 0.001 * 50  # under 0.1 %/h of a 50 t tank within 6 h


def test_minimum_detectable_rate_matches_the_cusum():
    """A loss at the reported rate is found within the horizon, one at half of it is not."""
    sigma, bucket, k, h, horizon = 0.1, 300.0, 0.5, 10.0, 6 * 3600.0
    rate = minimum_detectable_rate(sigma, bucket, k, h, horizon)  # per hour
    for factor, found in ((1.05, True), (0.5, False)):
        s, hit = 0.0, False
        for j in range(1, int(horizon / bucket) + 1):
            s = max(0.0, s + rate * factor * j * bucket / 3600.0 / sigma - k)
            hit |= s >= h
        assert hit is found, factor


def test_cross_check_and_silent_instrument():
    cls = REGISTRY["inventory_integrity"]
    sensors = [SensorInfo("TK", "level", "%", 0, 100, "A"), SensorInfo("LC", "level", "t", 0, 60, "A")]
    det = cls(cls.Params.model_validate({"cross": {"TK": "LC"}, "cross_scale": {"TK": 2.0}, "cross_tolerance": 1.0,
                                         "silent_after": 120.0}), sensors)
    rng = np.random.default_rng(0)
    codes = []
    for k in range(400):
        tank = 60.0 - (0.02 * (k - 200) if k > 200 else 0.0)  # from k=200 the tank drains ...
        shown = 60.0 if k > 200 else tank  # ... but its transmitter is held at 60 %
        out = det.update(np.array([0, 1]), np.full(2, 10.0 * k), np.array([shown + rng.normal(0, 0.05),
                                                                          tank / 2.0 + rng.normal(0, 0.02)]))
        codes.append(int(out.code[0]))
    assert codes[:200] == [0] * 200
    assert det.CONDITIONS[max(codes)] == "disagrees"
    # silent: TK-A stops reporting while TK-B goes on (in reading time: a replay of the past is not silent)
    det = cls(cls.Params.model_validate({"silent_after": 120.0}), [SensorInfo("TK-A", "level", "%", 0, 100, "A"),
                                                                    SensorInfo("TK-B", "level", "%", 0, 100, "A")])
    for k in range(100):
        both = k < 50
        idx = np.array([0, 1]) if both else np.array([1])
        det.update(idx, np.full(len(idx), 10.0 * k), 50 + rng.normal(0, 0.1, len(idx)))
    o = det.tick(10.0 * 99 + 5000)  # the wall clock far ahead: reading time counts
    assert [det.CONDITIONS[c] for c in o.code] == ["silent", "normal"]


def test_inventory_command_reports_minimum_detectable_loss(tmp_path):
    import subprocess
    import sys

    cfg = tmp_path / "site.yaml"
    cfg.write_text("""
site:
  id: s
  areas: [{id: store, collector: edge1}]
sensors:
  - {id: TK-U1, kind: level, unit: '%', range: [0, 100], area: store}
  - {id: TT-U1, kind: temperature, unit: degC, range: [-40, 80], area: store}
  - {id: TK-K, kind: level, unit: kg, range: [0, 20000], area: store}
inventory:
  tanks:
    - {sensor: TK-U1, capacity: 50, unit: t}
detectors:
  - id: balance
    type: inventory_balance
    select: {sensors: [TK-U1, TT-U1, TK-K]}
    params: {accuracy: {TK-U1: 0.025}, temperature: {TK-U1: TT-U1}, expansion: {TK-U1: 0.001}}
""")
    p = subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", "inventory", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    rows = {line.split()[0]: line.split() for line in p.stdout.splitlines()[1:]}
    expected = minimum_detectable_rate(0.025, 300.0, 0.5, 10.0, 6 * 3600.0)
    assert rows["TK-U1"][2:5] == ["50", "t", "yes"] and float(rows["TK-U1"][6]) == pytest.approx(expected, rel=1e-3)
    assert "unknown" in rows["TK-K"] and "(set accuracy)" in " ".join(rows["TK-K"])


@pytest.mark.parametrize("name", ["inventory_balance", "inventory_integrity"])
def test_security_doc_lists_every_parameter_with_its_default(name):
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "security.md").read_text()
    text = re.search(rf"^### `{name}`.*?(?=^### |^## |\Z)", doc, re.S | re.M).group(0)
    cls = REGISTRY[name]
    for k, f in cls.Params.model_fields.items():
        default = f.default_factory() if f.default_factory else f.default
        assert re.search(rf"^\| `{k}` \| `{re.escape(str(default))}` \|", text, re.M), f"{name}.{k}"
    for cond in cls.CONDITIONS[1:]:
        assert f"`{cond}` ({cls.SEVERITY[cond]})" in text


def test_group_balance_finds_a_loss_spread_over_connected_tanks():
    """Each tank loses 80 % of what its own balance can find within 6 h; together they lose 1.6 times
    it, which the group's balance (uncertainty √2 of one tank's) finds: group_loss on the first tank."""
    cls = REGISTRY["inventory_balance"]
    sensors = [SensorInfo(f"TK{i}", "level", "t", 0, 100, "A") for i in range(2)]
    params = {"accuracy": 0.1, "bucket": 300.0, "groups": {"farm": ["TK0", "TK1"]}}
    det = cls(cls.Params.model_validate(params), sensors)
    rate = 0.8 * minimum_detectable_rate(0.1, 300.0, 0.5, 10.0, 6 * 3600.0)  # per hour
    rng = np.random.default_rng(4)
    seen = set()
    for k in range(int(7 * 3600 / 10)):
        t = 10.0 * k
        lost = rate * max(t - 3600.0, 0.0) / 3600.0
        out = det.update(np.array([0, 1]), np.full(2, t), 50.0 - lost + rng.normal(0, 0.01, 2))
        seen |= {(int(i), det.CONDITIONS[c]) for i, c in zip(out.idx, out.code) if c}
    assert seen == {(0, "group_loss")}, seen
