"""Each detector fires on the pattern it is for and stays quiet on normal noise (synthetic signals)."""
from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from plantwatch.detectors import REGISTRY, SensorInfo, create
from plantwatch.detectors.decide import BandDecider, LevelsDecider, P2Quantile, QuantileDecider
from plantwatch.detectors.presets_gas import EXPOSURE_PRESETS, LEL_PRESETS

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def sensors(n, *, kind="pressure", unit="bar", lo=0.0, hi=100.0, neighbours=None):
    ids = [f"s{i}" for i in range(n)]
    return [SensorInfo(id=ids[i], kind=kind, unit=unit, range_min=lo, range_max=hi, area="A",
                       neighbours=tuple(neighbours[i]) if neighbours else ())
            for i in range(n)]


def feed(det, X, T):
    """Feed rows of readings (steps, n) at times T (steps,) or (steps, n), all sensors per call."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    T = np.asarray(T, dtype=np.float64)
    if T.ndim == 1:
        T = np.repeat(T[:, None], X.shape[1], axis=1)
    idx = np.arange(X.shape[1])
    scores, codes = np.zeros_like(X), np.zeros(X.shape, dtype=np.int8)
    for k in range(X.shape[0]):
        o = det.update(idx, T[k], X[k])
        scores[k], codes[k] = o.score, o.code
    return scores, codes


def cond(det, codes):
    """Names of the conditions in a code array."""
    return {det.CONDITIONS[c] for c in np.unique(codes)}


def onsets(codes):
    """How many times a sensor entered a non-normal condition."""
    on = (np.asarray(codes) != 0).astype(int)
    return int(on[0] + (np.diff(on) == 1).sum())


def first(codes, code=None):
    hit = np.flatnonzero(codes != 0 if code is None else codes == code)
    return int(hit[0]) if len(hit) else None


# --- gas exposure ---------------------------------------------------------------------------
def brute_twa(ts, xs, t, window, hold):
    """Reference: sample-and-hold (capped) integral over [t - window, t] divided by window."""
    total = 0.0
    for i in range(len(ts)):
        if ts[i] >= t:
            break
        a = ts[i]
        b = min(ts[i + 1] if i + 1 < len(ts) else t, a + hold, t)
        lo, hi = max(a, t - window), b
        if hi > lo:
            total += max(xs[i], 0.0) * (hi - lo)
    return total / window


def test_gas_twa_and_stel_match_exact_integral_with_irregular_sampling():
    rng = np.random.default_rng(0)
    det = create("gas_exposure", {"preset": "H2S"}, sensors(1, kind="gas", unit="ppm"))
    gaps = rng.exponential(20.0, 3000) + 1.0
    gaps[rng.random(3000) < 0.01] += 2000  # a few long silences (max_hold applies)
    ts = T0 + np.cumsum(gaps)
    xs = np.abs(2.0 + np.cumsum(rng.normal(0, 0.05, 3000)))
    worst_twa = worst_stel = 0.0
    for k in range(3000):
        if k > 300 and k % 97 == 0:  # check the averages the detector would score at ts[k]
            twa, stel = det.averages(np.array([0]), np.array([ts[k]]))
            ref_twa = brute_twa(ts[:k], xs[:k], ts[k], 8 * 3600, 300)
            ref_stel = brute_twa(ts[:k], xs[:k], ts[k], 900, 300)
            worst_twa = max(worst_twa, abs(twa[0] - ref_twa) / max(ref_twa, 1e-9))
            worst_stel = max(worst_stel, abs(stel[0] - ref_stel) / max(ref_stel, 1e-9))
        det.update(np.array([0]), ts[k:k + 1], xs[k:k + 1])
    # one bucket (1/96 of the TWA window, 1/15 of the STEL window) bounds the approximation;
    # with a smooth signal the partial-bucket weighting gets far closer than that
    assert worst_twa < 0.005, worst_twa
    assert worst_stel < 0.03, worst_stel


def test_gas_h2s_preset_twa_stel_idlh():
    p = EXPOSURE_PRESETS["H2S"]
    assert (p.twa, p.stel, p.idlh) == (1.0, 5.0, 100.0)
    s = sensors(4, kind="gas", unit="ppm", hi=200.0)  # IDLH (100 ppm) inside the range: at its top it is over range
    det = create("gas_exposure", {"preset": "H2S"}, s)
    T = T0 + np.arange(0, 10 * 3600, 10.0)  # 10 h, every 10 s
    X = np.zeros((len(T), 4))
    X[:, 0] = 0.5 + 0.1 * np.sin(np.arange(len(T)) / 50)  # below every limit: quiet
    X[:, 1] = 2.0  # TWA 1 ppm reached after 4 h at 2 ppm
    X[:, 2] = 0.2
    burst = (T - T0 >= 3600) & (T - T0 < 3600 + 1200)
    X[burst, 2] = 8.0  # 20 min at 8 ppm: STEL (5 ppm over 15 min) exceeded
    X[:, 3] = 0.2
    X[len(T) // 2, 3] = 150.0  # one reading above IDLH
    det_codes = feed(det, X, T)[1]
    names = det.CONDITIONS
    assert not det_codes[:, 0].any()
    onset = first(det_codes[:, 1], names.index("twa_exceeded"))
    assert onset is not None and abs((T[onset] - T0) - 4 * 3600) < 400  # within ~ a bucket of 4 h
    s2 = det_codes[:, 2]
    k = first(s2, names.index("stel_exceeded"))
    # 15-min average of 8 ppm over a 0.2 ppm background reaches 5 ppm after ~ 8.9 min of burst
    assert k is not None and 480 < T[k] - T0 - 3600 < 600
    assert not (s2[: np.flatnonzero(burst)[0]]).any()
    assert names[det_codes[len(T) // 2, 3]] == "idlh"
    assert det_codes[len(T) // 2 - 1, 3] == 0


def test_gas_exposure_counts_readings_during_an_alarm():
    # observe_many sees flagged readings: the TWA keeps rising during an IDLH alarm
    det = create("gas_exposure", {"preset": "H2S"}, sensors(1, kind="gas", unit="ppm", hi=200.0))
    T = T0 + np.arange(0, 3600, 10.0)
    sc, codes = feed(det, np.full(len(T), 120.0), T)
    assert (codes[1:, 0] == det.CONDITIONS.index("idlh")).all()
    twa, _ = det.averages(np.array([0]), np.array([T[-1] + 10]))
    assert twa[0] == pytest.approx(120.0 * 3600 / (8 * 3600), rel=0.01)


def test_gas_exposure_units():
    with pytest.raises(ValueError, match="other units"):
        create("gas_exposure", {"preset": "NH3"}, sensors(1, kind="gas", unit="%LEL"))
    det = create("gas_exposure", {"preset": "Cl2"}, sensors(1, kind="gas", unit="ppb", hi=50_000.0))
    _, codes = feed(det, [20_000.0], [T0])  # 20 ppm > IDLH 10 ppm
    assert det.CONDITIONS[codes[0, 0]] == "idlh"
    # explicit limits need no unit and override the preset
    det = create("gas_exposure", {"twa": 10, "idlh": 50}, sensors(1, kind="gas", unit="mg/m3"))
    assert np.isnan(det.limit[1])
    with pytest.raises(ValidationError, match="ordered"):
        create("gas_exposure", {"preset": "H2S", "stel": 0.5}, sensors(1))
    with pytest.raises(ValidationError, match="needs a preset"):
        create("gas_exposure", {}, sensors(1))


# --- lel ------------------------------------------------------------------------------------
def test_lel_presets_and_deadband():
    assert LEL_PRESETS["10/20"] == (10.0, 20.0)
    det = create("lel", {"preset": "10/20", "deadband": 2.0}, sensors(1, kind="gas", unit="%LEL"))
    x = [2, 5, 11, 15, 25, 19, 17, 9, 8.5, 7.9, 3]
    _, codes = feed(det, x, T0 + np.arange(len(x)))
    got = [det.CONDITIONS[c] for c in codes[:, 0]]
    assert got == ["normal", "normal", "lel_alarm1", "lel_alarm1", "lel_alarm2", "lel_alarm2", "lel_alarm1",
                   "lel_alarm1", "lel_alarm1", "normal", "normal"]
    with pytest.raises(ValueError, match="%LEL"):
        create("lel", {"preset": "10/20"}, sensors(1, kind="gas", unit="ppm"))


# --- flatline -------------------------------------------------------------------------------
def test_flatline_fires_on_stuck_value_only_for_sensors_that_vary():
    rng = np.random.default_rng(1)
    n = 3000
    T = T0 + np.arange(n) * 5.0
    X = np.column_stack([50 + rng.normal(0, 0.5, n), 50 + rng.normal(0, 0.5, n), np.full(n, 7.0)])
    X[1500:, 1] = X[1499, 1]  # stuck from reading 1500
    det = create("flatline", {"window": 600}, sensors(3))
    _, codes = feed(det, np.round(X, 3), T)
    assert not codes[:, 0].any()  # noise: quiet
    assert not codes[:, 2].any()  # always constant: never counts as a sensor that varies
    k = first(codes[:, 1])
    assert k is not None and T[k] - T[1499] == pytest.approx(600, abs=10)
    assert codes[-1, 1] == 1


def test_flatline_tolerance_and_recovery():
    det = create("flatline", {"window": 60, "tolerance": 0.1, "min_changes": 3}, sensors(1))
    x = [1, 2, 3, 4, 5] + [5.0, 5.05, 4.98, 5.02] * 10 + [6, 7]
    _, codes = feed(det, x, T0 + np.arange(len(x)) * 5.0)
    assert codes[5 + 13, 0] == 1  # 65 s within a 0.1 band
    assert codes[-1, 0] == 0  # moved: cleared


# --- out of range ---------------------------------------------------------------------------
def test_out_of_range_and_saturation():
    det = create("out_of_range", {"saturation_high": 0.02, "tolerance": 0.0}, sensors(1, lo=0, hi=100))
    x = [0.0, 50, 100.0, 99.0, 97.0, 101.0, -0.5, 0.0, 1.0]
    _, codes = feed(det, x, T0 + np.arange(len(x)))
    got = [det.CONDITIONS[c] for c in codes[:, 0]]
    # the top of the range is over range (at once); 0.0 right after -0.5 is within the deadband
    # (0.5 % of span) of the range: still below_range
    assert got == ["normal", "normal", "above_range", "saturated_high", "normal", "above_range",
                   "below_range", "below_range", "normal"]


def test_out_of_range_uses_each_sensors_range():
    s = [SensorInfo("a", "pressure", "bar", 0, 10, "A"), SensorInfo("b", "temperature", "C", -40, 150, "A")]
    det = create("out_of_range", {}, s)
    _, codes = feed(det, [[11.0, 11.0], [5.0, -41.0]], [T0, T0 + 1])
    assert [det.CONDITIONS[c] for c in codes[0]] == ["above_range", "normal"]
    assert [det.CONDITIONS[c] for c in codes[1]] == ["normal", "below_range"]


# --- fault code -----------------------------------------------------------------------------
@pytest.mark.parametrize("mA,expected", [(12.0, "normal"), (4.0, "normal"), (3.8, "normal"), (20.5, "normal"),
                                          (3.0, "fault"), (3.55, "maintenance"), (3.7, "maintenance"),
                                          (3.75, "maintenance"), (2.0, "failure"), (0.0, "failure"),
                                          (21.5, "over_range"), (21.0, "normal")])
def test_fault_code_bands_ma(mA, expected):
    det = create("fault_code", {}, sensors(1, kind="gas", unit="mA", lo=4, hi=20))
    _, codes = feed(det, [mA], [T0])
    assert det.CONDITIONS[codes[0, 0]] == expected


def test_fault_code_scaled_and_sentinels():
    det = create("fault_code", {"signal": "scaled", "sentinels": [-9999], "nan_is_fault": True},
                 sensors(1, kind="gas", unit="ppm", lo=0, hi=100))
    # ppm -> mA: 4 + 16 * x / 100; -2.5 ppm = 3.6 mA (maintenance), -10 ppm = 2.4 mA (fault edge)
    x = [50.0, -2.5, 40.0, -6.25, 20.0, -9999.0, 10.0, np.nan, 10.0, -30.0, 10.0, 108.0]
    _, codes = feed(det, x, T0 + np.arange(len(x)))
    got = [det.CONDITIONS[c] for c in codes[:, 0]]
    assert got == ["normal", "maintenance", "normal", "fault", "normal", "fault", "normal", "fault", "normal",
                   "failure", "normal", "over_range"]


# --- jump -----------------------------------------------------------------------------------
def test_jump_fires_on_step_not_on_noise():
    rng = np.random.default_rng(2)
    n = 4000
    X = np.column_stack([20 + rng.normal(0, 1, n), 20 + rng.normal(0, 1, n)])
    X[2000:, 1] += 15  # a 15-sigma step (about 10 sigma of the differences)
    det = create("jump", {"k": 8, "off_delay": 0}, sensors(2))
    _, codes = feed(det, X, T0 + np.arange(n) * 2.0)
    assert not codes[:, 0].any()
    assert np.flatnonzero(codes[:, 1]).tolist() == [2000]


def test_jump_abs_limit_and_direction():
    det = create("jump", {"abs_limit": 5, "direction": "down", "off_delay": 0}, sensors(1))
    x = [10, 10.5, 16, 16.2, 10, 10.1]
    _, codes = feed(det, x, T0 + np.arange(len(x)))
    assert codes[:, 0].tolist() == [0, 0, 0, 0, 1, 0]  # up step ignored, down step caught before warm-up


# --- neighbour drift ------------------------------------------------------------------------
def test_neighbour_drift_catches_slow_drift_of_one_sensor():
    rng = np.random.default_rng(3)
    n, k = 6000, 4
    ids = [f"s{i}" for i in range(k)]
    nb = [[j for j in ids if j != ids[i]] for i in range(k)]
    proc = 50 + np.cumsum(rng.normal(0, 0.3, n))  # a shared, wandering process value
    X = proc[:, None] + np.array([0.0, 2.0, -1.0, 0.5]) + rng.normal(0, 0.5, (n, k))  # offsets are normal
    drift = np.clip(np.arange(n) - 3000, 0, None) * 0.002  # sensor 3 drifts 6 units over 3000 readings
    X[:, 3] += drift
    det = create("neighbour_drift", {"warmup": 500, "threshold": 4}, sensors(k, neighbours=nb))
    _, codes = feed(det, X, T0 + np.arange(n) * 10.0)
    assert not codes[:, :3].any()
    onset = first(codes[:, 3])
    # 4 sigma of residual noise (~0.7: own noise plus the median's) is ~3 units: ~1500 readings
    assert onset is not None and 3000 < onset < 5000
    assert codes[-1, 3] == 1


def test_neighbour_drift_ignores_stale_neighbours_and_sensors_without_neighbours():
    det = create("neighbour_drift", {"warmup": 10, "max_age": 60}, sensors(2, neighbours=[["s1"], []]))
    T = T0 + np.arange(30) * 10.0
    _, _ = feed(det, np.column_stack([np.full(30, 5.0), np.full(30, 5.0)]), T)
    # s1 falls silent; s0 keeps reporting far from s1's old value: no residual, no alarm
    for k in range(20):
        o = det.update(np.array([0]), np.array([T[-1] + 100 + 10 * k]), np.array([50.0]))
        assert o.code[0] == 0


def test_neighbour_drift_in_fractions_of_span_across_gases_and_not_on_a_plume():
    # four gas detectors of different gases and ranges in clean air; one cell drifts 1 % of its span
    # in 100 s, and later a plume passes: first at one detector, then over the others
    rng = np.random.default_rng(5)
    n = 400
    ranges = [100.0, 500.0, 10.0, 100.0]
    s = [SensorInfo(f"s{i}", "gas", "ppm", 0.0, ranges[i], "A", neighbours=tuple(f"s{j}" for j in range(4) if j != i))
         for i in range(4)]
    X = np.array([0.1, 1.0, 0.0, 0.0]) + rng.normal(0, 0.002, (n, 4)) * np.array(ranges)
    X[:, 0] += np.clip(np.arange(n) - 50, 0, 150) * 0.01  # s0 drifts 1.5 ppm (1.5 % of 100), then stays
    plume = np.zeros(n)
    plume[250:300] = 20.0  # 20 % of full scale at s3 for 50 s ...
    X[:, 3] += plume
    X[320:360, 1:] += np.array([0.1, 0.1, 0.1]) * np.array(ranges[1:])  # ... then 10 % over the other three
    params = {"scale": "span", "abs_limit": 0.01, "threshold": 1000, "event_band": 0.005, "alpha": 0.2,
              "warmup": 20, "min_neighbours": 3}
    det = create("neighbour_drift", params, s)
    _, codes = feed(det, X, T0 + np.arange(n))
    onset = first(codes[:, 0])
    assert onset is not None and 120 < onset < 200  # 1 % of span plus the EWMA's lag
    assert not codes[:, 1:].any()  # neither the plume at s3 nor the one over s1..s3 is a drift
    # without the event band the plume is taken for a drift
    det = create("neighbour_drift", {**params, "event_band": None}, s)
    _, codes = feed(det, X, T0 + np.arange(n))
    assert codes[250:300, 3].any()


# --- rate of change -------------------------------------------------------------------------
def test_rate_of_change_falling_pressure():
    rng = np.random.default_rng(4)
    n = 2000
    T = T0 + np.arange(n) * 2.0
    x = 10 + rng.normal(0, 0.02, n)
    x[1000:1150] -= np.arange(150) * 2.0 / 30  # falls 2 bar/min for 5 min
    x[1150:] -= 150 * 2.0 / 30
    det = create("rate_of_change", {"span": 60, "fall": 1.0, "rise": 1.0}, sensors(1))
    _, codes = feed(det, x, T)
    names = det.CONDITIONS
    assert not codes[:1000, 0].any() and not codes[1200:, 0].any()
    k = first(codes[:, 0])
    assert names[codes[k, 0]] == "falling_fast" and 1000 < k < 1030
    assert set(cond(det, codes)) == {"normal", "falling_fast"}


def test_rate_of_change_rising_with_irregular_fast_sampling():
    rng = np.random.default_rng(5)
    T = T0 + np.cumsum(rng.uniform(0.1, 0.5, 20000))  # ~3 readings/s: the ring is decimated
    x = np.where(T - T0 > 3000, (T - T0 - 3000) / 60 * 3.0, 0.0) + rng.normal(0, 0.01, len(T))  # 3 units/min
    det = create("rate_of_change", {"span": 120, "rise": 2.0, "buffer": 8}, sensors(1))
    sc, codes = feed(det, x, T)
    k = first(codes[:, 0])
    assert k is not None and 3000 < T[k] - T0 < 3000 + 120
    assert sc[-1, 0] == pytest.approx(1.5, rel=0.05)  # 3 units/min against a 2 units/min limit


# --- ewma and cusum -------------------------------------------------------------------------
# limits with an in-control average run length well beyond the 3000 readings of the test
# (EWMA lam 0.1, L 3 has ARL0 ~ 840 readings; CUSUM k 0.5, h 5 ~ 465): quiet means quiet here
@pytest.mark.parametrize("name,params", [("ewma", {"lam": 0.1, "L": 4.0, "warmup": 200}),
                                         ("cusum", {"k": 0.5, "h": 8.0, "warmup": 500, "off_delay": 0})])
def test_small_shift_detected_noise_quiet(name, params):
    rng = np.random.default_rng(6)
    n = 3000
    X = np.column_stack([100 + rng.normal(0, 1, n), 100 + rng.normal(0, 1, n)])
    X[2000:, 1] += 1.0  # a one-sigma shift: invisible to a per-reading threshold
    det = create(name, params, sensors(2))
    _, codes = feed(det, X, T0 + np.arange(n) * 5.0)
    assert onsets(codes[:, 0]) <= 1  # in-control: a chance alarm in 3000 readings at most
    assert onsets(codes[:2000, 1]) <= 1
    k = first(codes[2000:, 1]) + 2000
    assert k < 2060
    assert det.CONDITIONS[codes[k, 1]] == "shift_up"


def test_ewma_false_alarm_rate_matches_a_reference_chart():
    """In control, the learned chart alarms as often as an EWMA chart with known mu and sigma."""
    rng = np.random.default_rng(12)
    n, k, L, lam = 15000, 20, 3.0, 0.1
    X = rng.normal(0, 1, (n, k))
    det = create("ewma", {"lam": lam, "L": L, "warmup": 500, "baseline_alpha": 1e-4, "clear_ratio": 1.0}, sensors(k))
    _, codes = feed(det, X, T0 + np.arange(n))
    got = sum(onsets(codes[500:, j]) for j in range(k))
    z, inside, ref = np.zeros(k), np.ones(k, bool), 0
    for row in X[500:]:
        z += lam * (row - z)
        out = np.abs(z) >= L * np.sqrt(lam / (2 - lam))
        ref += int((out & inside).sum())
        inside = ~out
    assert ref > 200 and abs(got - ref) / ref < 0.15, (got, ref)


def test_cusum_down_shift_and_robust_warmup():
    rng = np.random.default_rng(7)
    x = 5 + rng.normal(0, 0.1, 600)
    x[20] = 500.0  # a spike during warm-up does not widen sigma (median/MAD)
    x[400:] -= 0.2
    det = create("cusum", {"warmup": 100, "h": 8, "off_delay": 0}, sensors(1))
    _, codes = feed(det, x, T0 + np.arange(600))
    assert det.sigma[0] == pytest.approx(0.1, rel=0.25)
    k = first(codes[:, 0])
    assert k is not None and 400 < k < 440 and det.CONDITIONS[codes[k, 0]] == "shift_down"


def test_cusum_reset_and_hold_make_one_alarm():
    rng = np.random.default_rng(8)
    x = rng.normal(0, 1, 800)
    x[300:] += 2.0
    det = create("cusum", {"warmup": 100, "off_delay": 60}, sensors(1))
    _, codes = feed(det, x, T0 + np.arange(800) * 2.0)
    on = np.flatnonzero(np.diff((codes[:, 0] != 0).astype(int)) == 1)
    assert len(on) == 1  # re-signals after each reset are bridged by the hold


# --- seasonal z-score -----------------------------------------------------------------------
def test_seasonal_zscore_learns_the_daily_cycle():
    rng = np.random.default_rng(9)
    T = T0 + np.arange(0, 5 * 86400, 120.0)  # 5 days every 2 min
    hour = ((T % 86400) / 3600)
    x = 20 + 8 * np.sin(2 * np.pi * hour / 24) + rng.normal(0, 0.5, len(T))
    k_anom = np.flatnonzero((T - T0 > 4 * 86400) & (np.abs(hour - 18) < 0.05))[0]  # 18:00 on day 5
    x[k_anom] = 20 + 8 * np.sin(2 * np.pi * 6 / 24)  # the 06:00 value at 18:00: normal globally
    seasonal = create("seasonal_zscore", {"threshold": 6}, sensors(1))
    _, codes = feed(seasonal, x, T)
    day1 = T - T0 < 86400
    assert not codes[~day1, 0][: k_anom - day1.sum()].any()  # after day 1 the cycle is not an anomaly
    assert codes[k_anom, 0] != 0
    assert not codes[k_anom + 1:, 0].any()


def test_seasonal_zscore_quantile_decision_per_sensor():
    rng = np.random.default_rng(10)
    n = 4000
    T = T0 + np.arange(n) * 30.0
    X = np.column_stack([rng.standard_t(3, n) * 0.5, rng.normal(0, 1, n)])  # heavy-tailed vs normal
    X[3500, 1] += 12
    det = create("seasonal_zscore", {"decision": "quantile", "quantile": 0.999, "quantile_factor": 1.5,
                                     "threshold": 4.0, "slots": 2}, sensors(2))
    _, codes = feed(det, X, T)
    assert codes[3500, 1] == 1
    assert (codes[:, 0] != 0).mean() < 0.002  # heavy tails: its own quantile sets its bar


# --- deciders -------------------------------------------------------------------------------
def test_p2_quantile_tracks_numpy_quantile():
    rng = np.random.default_rng(11)
    data = rng.lognormal(0, 1, (20000, 3))
    q = P2Quantile(3, 0.95)
    for row in data:
        q.update(np.arange(3), row)
    assert np.allclose(q.get(np.arange(3)), np.quantile(data, 0.95, axis=0), rtol=0.03)


def test_quantile_decider_learns_only_normal_positive_scores():
    d = QuantileDecider(1, 0.9, [2.0], min_count=20)
    i = np.array([0])
    for k in range(100):
        d.step(i, np.array([float(k)]), np.array([1.0 + (k % 10) / 10]), None)
    bar = d.bars(i)[0, 0]
    assert 3.4 < bar < 4.0  # 2 x the 0.9 quantile of 1.0..1.9
    assert d.step(i, np.array([100.0]), np.array([10.0]), None)[0] == 1
    n_before = d.quantile.count[0]
    d.step(i, np.array([101.0]), np.array([10.0]), None)  # flagged: not learned
    d.step(i, np.array([102.0]), np.array([0.0]), None)  # zero: not learned
    assert d.quantile.count[0] == n_before


def test_levels_decider_ordered_and_unordered():
    d = LevelsDecider(1, 2, ordered=True, clear_ratio=0.8)
    i, step = np.array([0]), lambda t, r1, r2: int(d.step(i, np.array([t]), np.zeros(1), np.array([[r1], [r2]]))[0])
    assert [step(0, 0.5, 0.1), step(1, 1.0, 0.5), step(2, 1.2, 1.0), step(3, 0.9, 0.85), step(4, 0.9, 0.7),
            step(5, 0.7, 0.5)] == [0, 1, 2, 2, 1, 0]
    u = LevelsDecider(1, 2, ordered=False, on_delay=2)
    s = lambda t, a, b: int(u.step(i, np.array([t]), np.zeros(1), np.array([[a], [b]]))[0])  # noqa: E731
    assert [s(0, 1.5, 0), s(1, 1.5, 0), s(2, 1.5, 0), s(3, 0, 1.2)] == [0, 0, 1, 1]


def test_band_decider_deadband_and_nan():
    d = BandDecider(1, [3.6, 21.0], [3, 0, 2], deadband=0.1)
    i = np.array([0])
    got = [int(d.step(i, np.array([float(k)]), np.zeros(1), np.array([v]))[0])
           for k, v in enumerate([12, 3.0, 3.65, 3.75, np.nan, 22, 20.95, 20.8])]
    assert got == [0, 3, 3, 0, 0, 2, 2, 0]


def test_every_module_detector_registered():
    for name in ("gas_exposure", "lel", "flatline", "out_of_range", "fault_code", "jump", "neighbour_drift",
                 "rate_of_change", "ewma", "cusum", "seasonal_zscore"):
        assert name in REGISTRY


def test_stale_clock_restarts_with_a_grace_and_keeps_stale_sensors_stale():
    det = create("stale", {"timeout": 10, "grace": 30}, sensors(2))

    def codes(now):
        return [det.CONDITIONS[c] for c in det.tick(now).code]

    det.update(np.array([0, 1]), np.array([0.0, 0.0]), np.array([1.0, 1.0]))
    assert codes(15.0) == ["stale", "stale"]
    det.update(np.array([1]), np.array([16.0]), np.array([1.0]))
    assert codes(17.0) == ["stale", "normal"]
    det.restart_clock(20.0)  # reconnect: sensor 1 may stay silent for the grace, sensor 0 stays stale
    assert codes(45.0) == ["stale", "normal"]
    assert codes(51.0) == ["stale", "stale"]
    det.update(np.array([0]), np.array([52.0]), np.array([1.0]))
    assert codes(53.0) == ["normal", "stale"]


def test_increment_variance_stuck_noisy_and_steady():
    """Four sensors learn the same noise; then one sticks, one gets 4x noisier, one carries on,
    one never moved while learning and stays constant (never 'stopped moving')."""
    rng = np.random.default_rng(11)
    learn, after = 300, 300
    X = 50 + rng.normal(0, 1, (learn + 1 + after, 4))
    X[:, 3] = 50.0
    X[learn + 1:, 0] = X[learn, 0]  # stuck
    X[learn + 1:, 1] = 50 + rng.normal(0, 4, after)  # noisier, same mean
    det = create("increment_variance", {"learn": learn, "lam": 0.07, "limit_scale": 2.0}, sensors(4))
    scores, codes = feed(det, X, np.arange(len(X), dtype=float))
    assert not codes[: learn + 1].any() and not scores[: learn + 1].any()
    tail = codes[learn + 1 + 60:]
    assert cond(det, tail[:, 0]) == {"variability_down"}
    assert cond(det, tail[:, 1]) == {"variability_up"}
    assert cond(det, codes[:, 2]) == {"normal"} and cond(det, codes[:, 3]) == {"normal"}
    assert np.isfinite(det.limit).all() and (det.limit >= 0.5).all()


def test_increment_variance_has_no_increment_across_a_gap():
    """With ``max_gap``, a far-away reading after a data gap is not an increment; without it, it is."""
    for max_gap, expect_alarm in ((None, True), (10.0, False)):
        det = create("increment_variance", {"learn": 20, "max_gap": max_gap}, sensors(1))
        feed(det, np.arange(21.0), np.arange(21.0))
        s, c = feed(det, np.array([1e6, 1e6 + 1]), np.array([100.0, 101.0]))
        assert (c[0, 0] != 0) == expect_alarm, (max_gap, s, c)
        if max_gap is not None:
            assert s[0, 0] == 0.0 and c[1, 0] == 0  # the chart holds; the next step is a normal one
