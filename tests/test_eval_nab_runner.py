"""NAB runner on a synthetic corpus, and the streaming detectors it uses (causality, state)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from plantwatch.daemon.lab.evaluate.common import sensors, stream_columns
from plantwatch.daemon.lab.evaluate.nab import eval_nab
from plantwatch.detectors import create
from plantwatch.detectors.presets import NAB_DEFAULT, NAB_RANGE


def series(n: int, seed: int, jump_at: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 10 + np.sin(np.arange(n) / 20) + 0.1 * rng.normal(size=n)
    if jump_at is not None:
        x[jump_at:jump_at + 30] += 5.0
    return x


def write_nab(root: Path) -> None:
    t0 = np.datetime64("2015-01-01T00:00:00")
    windows = {}
    for name, jump in [("realX/a.csv", 900), ("realX/b.csv", None)]:
        x = series(1500, len(name), jump)
        ts = [str(t0 + np.timedelta64(300 * i, "s")).replace("T", " ") for i in range(len(x))]
        p = root / "data" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("timestamp,value\n" + "\n".join(f"{a},{v:.4f}" for a, v in zip(ts, x)) + "\n")
        windows[name] = [[ts[jump - 40] + ".000000", ts[jump + 40] + ".000000"]] if jump else []
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))


def test_eval_nab_on_synthetic_corpus(tmp_path: Path) -> None:
    write_nab(tmp_path)
    res = eval_nab(tmp_path, out=tmp_path / "out", quiet=True)
    assert res["files"] == 2 and res["windows"] == 1
    assert res["profiles"]["standard"]["score"] > 80  # the jump is found early in its window
    lines = (tmp_path / "out" / "nab" / "realX" / "a.csv").read_text().splitlines()
    assert lines[0] == "timestamp,score,alarm" and len(lines) == 1501


SHAPE = {**NAB_DEFAULT["params"], "learn": 150}


@pytest.mark.parametrize("name,params", [("range_novelty", NAB_RANGE["params"]), ("shape_novelty", SHAPE),
                                         ("robust_zscore", {"window": 50})])
def test_no_look_ahead(name: str, params: dict) -> None:
    """Changing the future never changes past scores."""
    x = series(800, 1, 500)
    y = x.copy()
    y[600:] += 50.0
    t = np.arange(800, dtype=np.float64)
    (sx,), _ = stream_columns(name, params, [x], [t], ["s"])
    (sy,), _ = stream_columns(name, params, [y], [t], ["s"])
    assert np.array_equal(sx[:600], sy[:600])


@pytest.mark.parametrize("name,params", [("range_novelty", NAB_RANGE["params"]), ("shape_novelty", SHAPE),
                                         ("robust_zscore", {"window": 50})])
def test_columns_are_independent_and_state_round_trips(name: str, params: dict) -> None:
    xs = [series(700, 1, 450), series(500, 2), series(650, 3, 400)]
    ts = [np.arange(len(x), dtype=np.float64) for x in xs]
    together, _ = stream_columns(name, params, xs, ts, ["a", "b", "c"])
    for x, t, s in zip(xs, ts, together):
        (alone,), _ = stream_columns(name, params, [x], [t], ["a"])
        assert np.array_equal(alone, s)
    # save after 300 readings, restore into a fresh instance, continue: same scores
    x, t = xs[0], ts[0]
    d1 = create(name, params, sensors(["a"]))
    i0 = np.array([0])
    first = [d1.update(i0, t[k:k + 1], x[k:k + 1]).score[0] for k in range(300)]
    d2 = create(name, params, sensors(["a"]))
    d2.set_state(d1.get_state())
    rest1 = [d1.update(i0, t[k:k + 1], x[k:k + 1]).score[0] for k in range(300, 700)]
    rest2 = [d2.update(i0, t[k:k + 1], x[k:k + 1]).score[0] for k in range(300, 700)]
    assert rest1 == rest2 and len(first) == 300


def test_range_novelty_one_alarm_per_excursion() -> None:
    x = series(1200, 4, 800)
    (s,), (code,) = stream_columns("range_novelty", NAB_RANGE["params"], [x], [np.arange(1200.0)], ["s"])
    fired = np.flatnonzero(s >= NAB_RANGE["params"]["threshold"])
    during = fired[(fired >= 800) & (fired < 830)]
    assert len(during) == 1 and during[0] <= 802  # found at once, then muted for the excursion
    assert code[during[0]] == 1 and s[:250].max() == 0  # nothing while the grid is learned


def test_shape_novelty_one_detection_per_excursion() -> None:
    """A jump far outside the warm-up range is found within a few levels and only once; the
    value scale widens to take it, so its return to normal is not a second alarm."""
    x = series(1500, 4, 900)
    (s,), (code,) = stream_columns("shape_novelty", SHAPE, [x], [np.arange(1500.0)], ["s"])
    assert s[:150].max() == 0  # nothing during the warm-up
    th = 0.4
    fired = np.flatnonzero(s >= th)
    during = fired[(fired >= 900) & (fired < 1000)]
    assert len(during) == 1 and during[0] <= 900 + 3 * 8  # stride 1 here (150 // (8 * 13))
    assert len(fired) - len(during) <= 1, fired


def test_shape_novelty_widened_scale_keeps_learned_shapes() -> None:
    """Widening the scale maps stored categories exactly: a shape learned before a widening still
    resonates afterwards (a periodic signal keeps scoring 0 after one excursion)."""
    from plantwatch.detectors.resonance_core import ShapeMemory

    m = ShapeMemory(learn=200, stride=1, window=8, levels=80, margin=0.3, chomp=0.075, rho0=0.8, rho_cap=0.97,
                    mask=12, grow=True)
    x = np.sin(np.arange(2000) / 5.0)
    x[1000:1003] = 40.0
    s = np.array([m.push(float(v)) for v in x])
    assert s[1000:1030].max() > 0 and m.span > 40  # the spike was novel and widened the scale
    assert s[1100:].max() == 0  # the learned cycle is recognised on the widened scale


def _memory_scores(x: np.ndarray, **kw) -> np.ndarray:
    from plantwatch.detectors.resonance_core import ShapeMemory

    p = dict(learn=200, stride=1, window=8, levels=80, margin=0.3, chomp=0.075, rho0=0.8, rho_cap=0.97,
             mask=12, grow=True)
    p.update(kw)
    m = ShapeMemory(**p)
    return np.array([m.push(float(v)) for v in x])


def test_shape_novelty_settle_ramps_detections_after_the_warm_up() -> None:
    """A new shape inside the known range right after the warm-up is scored by the fraction of
    the settle period gone by; the same kind of shape later, after the settle period, in full."""
    x = np.sin(np.arange(2000) / 5.0)
    x[230:250] = 0.9  # a plateau 30 readings after the warm-up
    x[1500:1520] = 0.9  # and again much later
    plain = _memory_scores(x)
    settled = _memory_scores(x, settle=0.5, extreme=1.0)
    early = np.flatnonzero(plain[:400])
    assert len(early) and np.array_equal(early, np.flatnonzero(settled[:400]))  # same detections, the memory unchanged
    # the ramp runs over settle x 200 warm-up levels = 100 shapes; the first scored shape is reading 200
    assert settled[233] == pytest.approx(plain[233] * (233 - 200 + 1) / 100, rel=1e-9)
    assert np.all(settled[early] < plain[early])
    assert np.array_equal(settled[1000:], plain[1000:])  # past the settle period: unchanged


def test_shape_novelty_extreme_gives_a_never_seen_value_full_score() -> None:
    """A new shape at a value outside everything seen keeps full weight even inside the settle
    period; ``extreme`` 0 leaves it ramped."""
    x = np.sin(np.arange(2000) / 5.0)
    x[230:233] = 40.0
    assert _memory_scores(x)[230] == 1.0
    ramped = _memory_scores(x, settle=0.5)[230]
    assert 0 < ramped < 0.5
    assert _memory_scores(x, settle=0.5, extreme=1.0)[230] == 1.0
    assert _memory_scores(x, settle=0.5, extreme=0.8)[230] == pytest.approx(0.8)


def test_bad_warmup_mode_is_one_line(tmp_path: Path, capsys) -> None:
    from plantwatch.daemon.lab.evaluate.nab import main

    write_nab(tmp_path)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"detector": "shape_novelty", "warmup": "whole_file"}))
    assert main(["--data", str(tmp_path), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "warmup must be 'nab_probation'" in err and "\n" not in err
