"""Config validation: every error names the file, the line and the path, and what is wrong."""
from __future__ import annotations

import subprocess
import sys

import pytest

from plantwatch.daemon.config.model import ConfigError, load_config, load_config_text

from .helpers import site_config


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config_text(text, "site.yaml")
    return e.value.problems


def test_valid_config_loads():
    cfg = load_config_text(site_config(n_gas=3, n_pressure=2))
    assert [s.id for s in cfg.sensors] == ["G0", "G1", "G2", "P0", "P1"]
    assert cfg.watched(cfg.detectors[0]) == [0, 1, 2]
    assert cfg.mqtt is None and cfg.database is None  # embedded services


def test_unknown_key_names_line_and_path():
    text = site_config(n_gas=2).replace("  id: testsite", "  id: testsite\n  colour: blue")
    (p,) = problems(text)
    assert p.startswith("site.yaml:3:3: site.colour: unknown key 'colour'"), p


def test_bad_detector_parameter_names_its_line():
    text = site_config(n_gas=2, detectors="detectors:\n  - id: d1\n    type: limit\n    select: {kind: gas}\n"
                                          "    params:\n      high: 5\n      hihg_high: 10\n")
    (p,) = problems(text)
    assert p.startswith("site.yaml:"), p
    line = int(p.split(":")[1])
    assert text.splitlines()[line - 1].strip().startswith("hihg_high"), p
    assert "detectors[d1].params.hihg_high" in p and "unknown parameter" in p and "high_high" in p


def test_out_of_bounds_parameter():
    text = site_config(n_gas=2, detectors="detectors:\n  - {id: d, type: stale, select: {kind: gas}, params: {timeout: -5}}\n")
    (p,) = problems(text)
    assert "detectors[d].params.timeout" in p and "greater than 0" in p and "-5" in p


def test_limits_out_of_order():
    text = site_config(n_gas=2, detectors="detectors:\n  - {id: d, type: limit, select: {kind: gas}, params: {high: 10, high_high: 5}}\n")
    (p,) = problems(text)
    assert "ordered" in p and "detectors[d].params" in p


def test_references_are_checked():
    text = site_config(n_gas=1).replace("area: area1", "area: nowhere")
    (p,) = problems(text)
    assert "sensors[G0].area: unknown area 'nowhere'" in p
    assert p.startswith("site.yaml:")


def test_unknown_detector_type_and_empty_selection():
    text = site_config(n_gas=1, detectors="detectors:\n  - {id: d, type: magic, select: {kind: gas}}\n"
                                          "  - {id: e, type: stale, select: {kind: flow}}\n")
    ps = problems(text)
    assert any("unknown detector type 'magic'" in p and "detectors[d].type" in p for p in ps), ps


def test_duplicate_sensor_and_yaml_errors():
    text = site_config(n_gas=2).replace("id: G1,", "id: G0,")
    (p,) = problems(text)
    assert "duplicate sensor id 'G0'" in p
    (p,) = problems("site: {id: x\n")
    assert p.startswith("site.yaml:") and "invalid YAML" in p
    (p,) = problems("site: {id: a}\nsite: {id: b}\nsensors: []\n")
    assert "duplicate key 'site'" in p


def test_cli_config_check(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(site_config(n_gas=2))
    bad = tmp_path / "bad.yaml"
    bad.write_text(site_config(n_gas=2).replace("range: [0, 100]", "range: [100, 0]", 1))
    ok = subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", "config", "check", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    ko = subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", "config", "check", str(bad)], capture_output=True, text=True)
    assert ko.returncode == 2
    assert f"{bad}:" in ko.stderr and "sensors[G0].range" in ko.stderr and "[min, max]" in ko.stderr


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "nope.yaml")
    assert "no such file" in str(e.value)


def test_readme_config_reference_is_current():
    """The config reference (docs/config.md) is generated from the models; it must match them."""
    from pathlib import Path

    from plantwatch.daemon.config import doc as config_doc

    reference = Path(__file__).resolve().parents[1] / config_doc.TARGET
    assert config_doc.main(["--check", str(reference)]) == 0


def test_cluster_section_defaults_to_one_instance_and_checks_renewal():
    from plantwatch.daemon.config.model import ConfigError, load_config_text

    from .helpers import site_config

    assert load_config_text(site_config()).cluster is None
    cfg = load_config_text(site_config() + "cluster: {instance_id: a, partitions: 8, collectors: [e1, e2]}\n")
    assert (cfg.cluster.instance_id, cfg.cluster.partitions, cfg.cluster.lease_seconds) == ("a", 8, 2.0)
    try:
        load_config_text(site_config() + "cluster: {instance_id: a, lease_seconds: 4, renew_interval: 3}\n")
    except ConfigError as e:
        assert "renew_interval" in str(e)
    else:
        raise AssertionError("renew_interval > lease/2 accepted")


def test_every_sensor_resolves_to_a_collector():
    cfg = load_config_text(site_config(n_gas=2, n_robot=1, collector_of=lambda tag: "edge7" if tag == "G1" else "edge1"))
    assert [cfg.collector_of(s) for s in cfg.sensors] == ["edge1", "edge7", "robot1"]
    text = site_config(n_gas=2).replace(", collector: edge1}", "}")
    ps = problems(text)
    assert len(ps) == 1 and ps[0].startswith("site.yaml:4:"), ps  # at the area, the one place to fix
    assert "site.areas[area1]: area 'area1' has no collector, and 2 of its sensors name none (G0, G1)" in ps[0], ps


def test_a_missing_area_collector_is_reported_once_at_the_area_not_per_sensor():
    """Regression: twelve sensors of an area without a collector made twelve problems."""
    text = site_config(n_gas=12).replace("    - {id: area1, bounds: [0, 0, 100, 100], collector: edge1}",
                                         "    - {id: area1, bounds: [0, 0, 100, 100]}")
    text = text.replace("  - {id: G11, kind: gas", "  - {id: G11, collector: edge9, kind: gas")
    ps = problems(text)
    assert len(ps) == 1, ps
    assert ps[0].startswith("site.yaml:4:") and "area 'area1' has no collector, and 11 of its sensors" in ps[0], ps
    assert "(G0, G1, G2, G3, G4 and 6 more)" in ps[0], ps


def check_cli(tmp_path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", "config", "check", str(path)],
                          capture_output=True, text=True, timeout=60)


def line_of(text: str, problem: str) -> str:
    """The source line a ``file:line:col: ...`` problem points at."""
    return text.splitlines()[int(problem.split(":")[1]) - 1]


LIMIT_150 = "detectors:\n  - id: gas-h2s-limit\n    type: limit\n    select: {kind: gas}\n    params:\n      high: 50\n      high_high: 150\n"


def test_limit_outside_the_instruments_range_is_refused(tmp_path):
    """high_high 150 on a 0-100 ppm sensor can never fire: readings above 100 are rejected."""
    text = site_config(n_gas=2, detectors=LIMIT_150)
    (p,) = problems(text)
    assert line_of(text, p).strip() == "high_high: 150", p
    assert "detectors[gas-h2s-limit].params.high_high" in p and "150" in p and "0 to 100 ppm" in p, p
    assert "G0" in p and "G1" in p and "never" in p, p
    low = site_config(n_gas=1, detectors="detectors:\n  - {id: lo, type: limit, select: {kind: gas}, params: {low: -5}}\n")
    (p,) = problems(low)
    assert "detectors[lo].params.low" in p and "below the measuring range" in p, p
    ko = check_cli(tmp_path, text)
    assert ko.returncode == 2 and "params.high_high" in ko.stderr and "0 to 100 ppm" in ko.stderr, ko.stderr
    # at the range's end it can fire (a saturated reading is kept), so it is accepted
    load_config_text(site_config(n_gas=1, detectors=LIMIT_150.replace("150", "100")))


def test_every_stage_is_reported_in_one_run(tmp_path):
    """A schema error, a cross-reference error and a limit outside the range: all at once."""
    text = site_config(n_gas=2, detectors=LIMIT_150 + "  - {id: stale-p, type: stale, select: {sensors: [P9]}, params: {timeout: 60}}\n")
    text = text.replace("range: [0, 100], area: area1, location: [1, 5]", "range: [0, 100], area: area1, location: [1, 5], colour: red")
    ps = problems(text)
    assert len(ps) == 3, ps
    assert "sensors[G1].colour: unknown key 'colour'" in ps[0] and "colour: red" in line_of(text, ps[0]), ps
    assert "params.high_high" in ps[1] and "measuring range" in ps[1] and "high_high: 150" in line_of(text, ps[1]), ps
    assert "detectors[stale-p].select.sensors: unknown sensor 'P9'" in ps[2] and "P9" in line_of(text, ps[2]), ps
    ko = check_cli(tmp_path, text)
    assert ko.returncode == 2 and "3 problem(s)" in ko.stderr, ko.stderr
    for p in ps:
        assert p.replace("site.yaml", str(tmp_path / "site.yaml")) in " ".join(ko.stderr.split()), (p, ko.stderr)


def test_problems_name_detectors_and_sensors_by_id():
    text = site_config(n_gas=2, detectors="detectors:\n  - {id: a, type: stale, select: {kind: gas}, params: {timeout: 60}}\n"
                                          "  - {id: gas-h2s-limit, type: limit, select: {kind: gas}, params: {high: 5, hihg: 10}}\n")
    (p,) = problems(text)
    assert "detectors[gas-h2s-limit].params.hihg" in p and "detectors[1]" not in p, p
    (p,) = problems(site_config(n_gas=2).replace("id: G1, kind: gas", "id: G1, kind: gaz"))
    assert "sensors[G1].kind" in p, p


def test_did_you_mean(tmp_path):
    text = site_config(n_gas=2, detectors=(
        "detectors:\n"
        "  - {id: h2s-limit, type: limt, select: {kind: gas}}\n"
        "  - {id: h2s-stale, type: stale, select: {sensors: [G01], areas: [area3]}, params: {timeout: 60}}\n"
        "alarms:\n  suppress_when:\n    - {alarms: {detector: h2s-stale}, upstream: {detector: h2s-limt}}\n"))
    text = text.replace("location: [0, 5]}", "location: [0, 5], neighbors: [G1]}")
    ps = problems(text)
    want = {"sensors[G0].neighbors: unknown key 'neighbors' (did you mean 'neighbours'?)",
            "detectors[h2s-limit].type: unknown detector type 'limt' (did you mean 'limit'?",
            "detectors[h2s-stale].select.sensors: unknown sensor 'G01' (did you mean 'G1' or 'G0'?)",
            "detectors[h2s-stale].select.areas: unknown area 'area3' (did you mean 'area2' or 'area1'?)",
            "alarms.suppress_when[0].upstream.detector: unknown detector 'h2s-limt' (did you mean 'h2s-limit'?)"}
    for w in want:
        assert any(w in p for p in ps), (w, ps)
    assert len(ps) == len(want), ps
    ko = check_cli(tmp_path, text)
    assert ko.returncode == 2 and "did you mean 'neighbours'?" in ko.stderr, ko.stderr
    p, = problems(site_config(n_gas=2, detectors="detectors:\n  - {id: d, type: stale, select: {kind: gas}, params: {timout: 60}}\n"))
    assert "did you mean 'timeout'?" in p, p
