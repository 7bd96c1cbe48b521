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
