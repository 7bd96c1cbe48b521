"""robot_baseline on inspection rounds: a normal that moves with the whole site, a site-wide
shift, and a local anomaly (simulator: daemon/lab/simulator/robot_rounds.py)."""
from __future__ import annotations

import numpy as np
import pytest

from plantwatch.daemon.lab.simulator.robot_rounds import robot_rounds
from plantwatch.detectors import SensorInfo, create

TEMP = SensorInfo(id="R1-TEMP", kind="robot", unit="degC", range_min=-20, range_max=60, area="site")
H2S = SensorInfo(id="R1-H2S", kind="robot", unit="ppm", range_min=0, range_max=100, area="site")
PARAMS = {"cell": 5.0, "extent": [0, 0, 200, 120]}
H = 3600.0


def feed(det, r):
    """One reading at a time, as a robot publishes them; the condition name of each reading."""
    codes = np.empty(len(r.t), dtype=np.int64)
    for k in range(len(r.t)):
        codes[k] = det.update(np.array([0]), r.t[k:k + 1], r.value[k:k + 1], pos=r.pos[k:k + 1]).code[0]
    return np.array(det.CONDITIONS)[codes]


def activations(cond, names=("local_anomaly", "severe_local_anomaly")):
    on = np.isin(cond, names)
    return int(on[0]) + int((on[1:] & ~on[:-1]).sum())


@pytest.fixture(scope="module")
def cyclic():
    """20 places, a round every 10-20 min, ±5 °C daily cycle common to all places, 3 days."""
    r = robot_rounds(places=20, days=3.0, amplitude=5.0, noise=0.1, readings=5, seed=0)
    det = create("robot_baseline", PARAMS, [TEMP])
    return r, det, feed(det, r)


def test_daily_cycle_does_not_leave_places_stuck(cyclic):
    r, det, cond = cyclic
    n = activations(cond)
    print(f"cyclic temperature channel, no anomaly: {n} activations over 3 days, "
          f"{(cond != 'normal').mean():.1%} of readings flagged")
    assert n <= 2
    assert activations(cond, ("site_shift",)) == 0  # the daily cycle is the site's normal
    # every place's baseline follows the ambient: reading = reference + place offset
    last = {}
    for p in range(20):
        k = np.flatnonzero(r.place == p)[-1]
        why = det.score_many(np.array([0]), r.t[k:k + 1], r.value[k:k + 1], pos=r.pos[k:k + 1])
        last[p] = float(why[0])
    assert max(last.values()) < 3.0, last


def test_local_anomaly_on_the_cyclic_channel_is_found_at_its_place_after_one_round():
    """+3 °C at place 7 from 30 h to 36 h, on top of the daily cycle."""
    r = robot_rounds(places=20, days=2.0, amplitude=5.0, noise=0.1, readings=5, seed=1,
                     local=(7, 30 * H, 36 * H, 3.0))
    det = create("robot_baseline", PARAMS, [TEMP])
    cond = feed(det, r)
    local = np.isin(cond, ("local_anomaly", "severe_local_anomaly"))
    assert local.any()
    delay = r.t[local].min() - 30 * H
    print(f"local +3 °C at place 7: first local_anomaly after {delay / 60:.1f} min, "
          f"{activations(cond)} activations, places flagged {sorted(set(r.place[local]))}")
    assert delay <= 45 * 60  # the next visit confirms it (a round is 10-20 min)
    assert set(r.place[local]) == {7}
    assert np.all((r.t[local] >= 30 * H) & (r.t[local] < 36 * H + 3600))
    # flagged on every visit of the place during the anomaly, after confirmation
    visits = (r.place == 7) & (r.t >= 30 * H + 45 * 60) & (r.t < 36 * H)
    assert local[visits].mean() > 0.9
    assert not (cond == "site_shift").any()


def test_site_wide_shift_is_one_site_alarm_and_no_local_one():
    """+3 ppm H2S at every place for 10 h (an inversion), places with their own background."""
    r = robot_rounds(places=20, days=2.0, mean=0.5, amplitude=0.0, offset_sd=0.3, noise=0.05, readings=5,
                     seed=2, shift=(30 * H, 40 * H, 3.0))
    r = type(r)(t=r.t, value=np.maximum(r.value, 0.0), pos=r.pos, place=r.place, places=r.places, common=r.common)
    det = create("robot_baseline", PARAMS | {"direction": "high"}, [H2S])
    cond = feed(det, r)
    site = cond == "site_shift"
    n_local = activations(cond)
    n_site = activations(cond, ("site_shift",))
    on = r.t[site]
    print(f"site-wide +3 ppm for 10 h: {n_local} local activations, {n_site} site_shift activations"
          + (f" from {on.min() / H:.2f} h to {on.max() / H:.2f} h" if site.any() else ""))
    assert n_local == 0
    assert n_site == 1
    assert 30 * H <= on.min() <= 30 * H + 30 * 60
    assert 40 * H - 60 * 60 <= on.max() <= 40 * H + 60 * 60


def test_state_saved_before_the_reference_restores(cyclic):
    """A state saved without the reference and the suspicion arrays (older version) still loads."""
    _, det, _ = cyclic
    old = {k: v for k, v in det.get_state().items() if not k.startswith("reference.") and k not in ("csince", "cflag")}
    fresh = create("robot_baseline", PARAMS, [TEMP])
    fresh.set_state(old)
    assert fresh.csince.shape == det.csince.shape and np.isnan(fresh.csince).all()
    assert fresh.reference.ref[0] == 0.0 and np.array_equal(fresh.cmed, det.cmed, equal_nan=True)
