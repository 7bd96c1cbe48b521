"""The TEP runner: the site config's registered detectors on small folders in Braatz layout."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from plantwatch.daemon.lab.evaluate.tep import braatz_column, eval_tep, main, read_dat, site_entries
from plantwatch.detectors.pca_limits import spe_limit, t2_limit
from plantwatch.detectors.presets import TEP_COLUMNS
from plantwatch.detectors.scoring import tep


def latent_data(rng: np.random.Generator, n: int, fault: float = 0.0) -> np.ndarray:
    """52 correlated variables driven by 5 latent factors (TEP-like shape)."""
    load = np.random.default_rng(0).normal(size=(5, 52))
    X = rng.normal(size=(n, 5)) @ load + 0.3 * rng.normal(size=(n, 52))
    X[:, 3] += fault
    return X


def test_limits_match_textbook_values() -> None:
    # a = 1, n large: T² limit -> chi2(1) 99 % = 6.635; SPE with one residual eigenvalue -> lam * chi2(1)
    assert t2_limit(1, 100_000, 0.99) == pytest.approx(6.635, rel=1e-3)
    assert spe_limit(np.array([2.0]), 0.99) == pytest.approx(2.0 * 6.635, rel=0.02)


def test_scoring_helpers() -> None:
    alarm = np.zeros(960, dtype=bool)
    alarm[170:] = True
    alarm[5] = True
    assert tep.fdr(alarm) == pytest.approx(790 / 800)
    assert tep.far(alarm[:160]) == pytest.approx(1 / 160)
    assert tep.detection_delay(alarm) == 10


def test_site_config_names_the_braatz_columns() -> None:
    """The shipped site's 33 sensors are XMEAS 1-22 and XMV 1-11, the preset's columns, in both
    detectors; the detector params are the ones the TEP figures were measured with."""
    entries = {e.type: e for e in site_entries()}
    assert set(entries) == {"pca_monitor", "increment_variance"}
    for e in entries.values():
        assert e.cols == TEP_COLUMNS and [s.id for s in e.members][:2] == ["XMEAS1", "XMEAS2"]
    pca, var = entries["pca_monitor"].params, entries["increment_variance"].params
    assert (pca["components"], pca["alpha"], pca["smooth"], pca["calibrate"], pca["min_rows"], pca["refit_every"]) \
        == (17, 0.99, 0.7, 0.999, 500, 0)
    assert (var["learn"], var["lam"], var["limit_scale"]) == (499, 0.07, 2.0)
    assert braatz_column("XMV11") == 51 and braatz_column("XMEAS41") == 40
    with pytest.raises(ValueError, match="no TEP variable"):
        braatz_column("XMV12")


def test_runner_on_braatz_layout(tmp_path: Path) -> None:
    """A preset (``--config``) on synthetic data: the step on column 3 is found in both fault
    files, the normal test run stays quiet, the CSV is written."""
    rng = np.random.default_rng(2)
    np.savetxt(tmp_path / "d00.dat", latent_data(rng, 500).T)  # stored transposed, as upstream
    np.savetxt(tmp_path / "d00_te.dat", latent_data(rng, 960))
    np.savetxt(tmp_path / "d01.dat", latent_data(rng, 480, fault=6.0))
    te = latent_data(rng, 960)
    te[160:, 3] += 6.0
    np.savetxt(tmp_path / "d01_te.dat", te)
    res = eval_tep(tmp_path, out=tmp_path / "out", config={"columns": list(range(52)), "n_components": 5,
                                                            "alpha": 0.99}, quiet=True)
    f1 = res["faults"][1]
    assert f1["fdr_test"] > 95 and f1["fdr_train"] > 95 and f1["far_test_first160"] < 5
    assert res["far_d00_te_all"] < 5 and res["components"] == 5
    assert (tmp_path / "out" / "tep" / "d01_te.csv").read_text().startswith("row,score,alarm,t2,spe")


def test_a_preset_with_unknown_keys_is_refused(tmp_path: Path) -> None:
    np.savetxt(tmp_path / "d00.dat", latent_data(np.random.default_rng(5), 500).T)
    with pytest.raises(ValueError, match="pca_monitor"):
        eval_tep(tmp_path, config={"pca_monitor": {"components": 5}}, quiet=True)


def test_a_site_without_tep_tags_is_refused(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    text = (Path(__file__).parents[1] / "daemon" / "lab" / "sites" / "tep.yaml").read_text()
    site.write_text(text.replace("id: XMEAS9,", "id: TI-101,"))
    np.savetxt(tmp_path / "d00.dat", latent_data(np.random.default_rng(6), 500).T)
    with pytest.raises(ValueError, match="'TI-101' is no TEP variable"):
        eval_tep(tmp_path, site=site, quiet=True)


def test_fault_test_sets_are_scored_from_row_161(datasets: Path, tmp_path: Path, capsys) -> None:
    """The fault test sets dXX_te.dat (not in the shared copy; the independent scorers have them):
    a synthetic d01_te.dat, d00_te.dat with a step on the reactor pressure XMEAS(7) from row 161,
    is scored on rows 161-960 by the shipped site's detectors and printed."""
    src = datasets / "tep" / "data"
    if not (src / "d00_te.dat").is_file():
        pytest.skip(f"{src} not present")
    for name in ("d00.dat", "d00_te.dat"):
        shutil.copy(src / name, tmp_path / name)
    X = read_dat(src / "d00_te.dat")
    X[tep.TEST_FAULT_START:, 6] += 6 * X[:, 6].std()
    np.savetxt(tmp_path / "d01_te.dat", X)
    assert main(["--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    res = eval_tep(tmp_path, quiet=True)
    f = res["faults"][1]
    print(f)
    assert set(f) == {"fdr_test", "far_test_first160", "delay_rows"}
    assert f["fdr_test"] > 95 and f["delay_rows"] <= 3
    # rows 1-160 are d00_te.dat's own: the same alarms as on the normal test run
    normal = res["runs"]["d00_te"]["alarm"][: tep.TEST_FAULT_START]
    assert f["far_test_first160"] == pytest.approx(100 * tep.far(normal))
    row = next(line for line in out.splitlines() if "IDV(1)" in line)
    assert f"{f['fdr_test']:.1f}" in row


def test_a_normal_run_too_short_to_learn_on_is_refused(tmp_path: Path, capsys) -> None:
    """d00.dat must cover both detectors' learning (the site's min_rows 500, learn 499): a run of
    300 rows is one line and exit 2, not figures from detectors still learning."""
    np.savetxt(tmp_path / "d00.dat", latent_data(np.random.default_rng(7), 300).T)
    np.savetxt(tmp_path / "d00_te.dat", latent_data(np.random.default_rng(8), 960))
    assert main(["--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("d00.dat's 300 rows are too few for tep-pca, tep-variability to learn (min_rows, learn)"), err
