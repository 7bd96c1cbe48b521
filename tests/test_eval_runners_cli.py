"""The evaluation runners share one command line (evaluate/common.py ``run_main``): a config the
runner refuses is one line on stderr and exit code 2, in every runner."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from plantwatch.daemon.lab.evaluate import nab, skab, tep

from .test_eval_skab import write_skab_file


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_skab_refused_config_is_one_line(tmp_path: Path, capsys) -> None:
    write_skab_file(tmp_path / "valve1" / "0.csv", np.random.default_rng(3))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"smooth": 2.0}))  # pca_monitor params: smooth must be in [0, 1)
    assert skab.main(["--data", str(tmp_path), "--config", str(cfg)]) == 2
    line = _one_line(capsys)
    assert line.startswith(f"plantwatch eval skab: {cfg}: ") and "smooth" in line, line


def test_tep_refused_config_is_one_line(tmp_path: Path, capsys) -> None:
    np.savetxt(tmp_path / "d00.dat", np.random.default_rng(4).normal(size=(500, 52)).T)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"n_components": 5, "variability": {"no_such_parameter": 1}}))
    assert tep.main(["--data", str(tmp_path), "--config", str(cfg)]) == 2
    assert "no_such_parameter" in _one_line(capsys)


@pytest.mark.parametrize("runner", [nab, skab, tep])
def test_every_runner_has_the_same_options(runner, capsys) -> None:
    with pytest.raises(SystemExit):
        runner.main(["--help"])
    text = capsys.readouterr().out
    assert all(opt in text for opt in ("--data", "--out", "--config"))
    assert text.startswith(f"usage: plantwatch eval {runner.__name__.rsplit('.', 1)[-1]} ")


@pytest.mark.parametrize("runner, layout, expect", [
    (skab, {}, "no labelled SKAB experiment"),
    (skab, {"anomaly-free/anomaly-free.csv": "datetime;Pressure\n2020-01-01 00:00:00;1.0\n"},
     "no labelled SKAB experiment"),
    (tep, {"d01.dat": "1 2 3\n"}, "no d00.dat"),
    (nab, {"data/x/a.csv": "timestamp,value\n2020-01-01 00:00:00,1\n"}, "no labels file"),
    (nab, {"labels/combined_windows.json": '{"x/missing.csv": []}'}, "x/missing.csv is missing"),
])
def test_a_data_folder_the_runner_cannot_use_is_one_line(runner, layout, expect, tmp_path: Path, capsys) -> None:
    """A wrong ``--data`` folder is refused with one line and exit 2; SKAB used to score zero files as F1 0.00."""
    for rel, text in layout.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert runner.main(["--data", str(tmp_path)]) == 2
    line = _one_line(capsys)
    name = runner.__name__.rsplit(".", 1)[-1]
    assert line.startswith(f"plantwatch eval {name}: --data {tmp_path}: ") and expect in line, line
