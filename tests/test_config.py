"""Config validation: every error names the file, the line and the path, and what is wrong."""
from __future__ import annotations

import subprocess
import sys

import pytest

from plantwatch.daemon.config import ConfigError, load_config, load_config_text

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
    assert "detectors[0].params.hihg_high" in p and "unknown parameter" in p and "high_high" in p


def test_out_of_bounds_parameter():
    text = site_config(n_gas=2, detectors="detectors:\n  - {id: d, type: stale, select: {kind: gas}, params: {timeout: -5}}\n")
    (p,) = problems(text)
    assert "detectors[0].params.timeout" in p and "greater than 0" in p and "-5" in p


def test_limits_out_of_order():
    text = site_config(n_gas=2, detectors="detectors:\n  - {id: d, type: limit, select: {kind: gas}, params: {high: 10, high_high: 5}}\n")
    (p,) = problems(text)
    assert "ordered" in p and "detectors[0].params" in p


def test_references_are_checked():
    text = site_config(n_gas=1).replace("area: area1", "area: nowhere")
    (p,) = problems(text)
    assert "sensors[0].area: unknown area 'nowhere'" in p
    assert p.startswith("site.yaml:")


def test_unknown_detector_type_and_empty_selection():
    text = site_config(n_gas=1, detectors="detectors:\n  - {id: d, type: magic, select: {kind: gas}}\n"
                                          "  - {id: e, type: stale, select: {kind: flow}}\n")
    ps = problems(text)
    assert any("unknown detector type 'magic'" in p and "detectors[0].type" in p for p in ps), ps


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
    ok = subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli", "config", "check", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    ko = subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli", "config", "check", str(bad)], capture_output=True, text=True)
    assert ko.returncode == 2
    assert f"{bad}:" in ko.stderr and "sensors[0].range" in ko.stderr and "min < max" in ko.stderr


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "nope.yaml")
    assert "no such file" in str(e.value)


def test_readme_config_reference_is_current():
    """README's config reference is generated from the models; it must match them."""
    from pathlib import Path

    from plantwatch.daemon import config_doc

    readme = Path(__file__).resolve().parents[1] / "README.md"
    assert config_doc.main(["--check", str(readme)]) == 0


def test_cluster_section_defaults_to_one_instance_and_checks_renewal():
    from plantwatch.daemon.config import ConfigError, load_config_text

    from .helpers import site_config

    assert load_config_text(site_config()).cluster is None
    cfg = load_config_text(site_config() + "cluster: {instance_id: a, partitions: 8, collectors: [e1, e2]}\n")
    assert (cfg.cluster.instance_id, cfg.cluster.partitions, cfg.cluster.lease_seconds) == ("a", 8, 10.0)
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
    assert len(ps) == 2 and all(p.startswith("site.yaml:") for p in ps), ps
    assert "sensors[0]: sensor 'G0' has no collector" in ps[0] and "area 'area1'" in ps[0]
    assert ps[0].split(":")[1] != ps[1].split(":")[1]  # each names its own line
