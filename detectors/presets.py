"""Default detector configurations of the benchmark evaluations (``plantwatch eval ...``).

Tuned on the shared benchmark data only (NAB corpus, SKAB anomaly-free + valve1, TEP training
sets + d00_te); nothing here depends on the labels of an individual file.
"""
from __future__ import annotations

from typing import Any

#: NAB: shape novelty (adaptive resonance over windows of the scaled signal, see
#: ``detectors/shape_novelty.py``), its warm-up set to each file's NAB probationary period (the
#: length NAB hands every detector; values are never looked ahead). ``margin`` (0.3), ``rho0`` (0.85) and the
#: engine's constants were chosen on the NAB corpus as a whole; docs/evaluation.md lists the sweep.
NAB_DEFAULT: dict[str, Any] = {
    "detector": "shape_novelty",
    "warmup": "nab_probation",
    "params": {"margin": 0.3, "rho0": 0.85},
}

#: NAB, the previous default: range novelty (first 250 readings fix a 16-bin grid; a reading in a never-visited bin is
#: an alarm, faded by the sensor's recent novelty rate, then 50 readings of rest). The five
#: parameters were chosen by a small grid search on the NAB corpus (see the detector's module).
NAB_RANGE: dict[str, Any] = {
    "detector": "range_novelty",
    "params": {"learn": 250, "bins": 16, "rate_window": 1000, "rate_scale": 400.0, "rest": 50,
               "rest_threshold": 0.3, "threshold": 0.79},
}

#: TEP: the monitored variables XMEAS(1-22) + XMV(1-11) as 0-based Braatz columns (0-21 and 41-51,
#: as in Yin et al. 2012).
TEP_COLUMNS: list[int] = list(range(22)) + list(range(41, 52))

#: TEP: the default detectors are the ``tep-pca`` (``pca_monitor``) and ``tep-variability``
#: (``increment_variance``) entries of the shipped site config ``daemon/lab/sites/tep.yaml``
#: (``plantwatch eval tep`` reads it). ``plantwatch eval tep --config`` takes a preset of this
#: form instead: PCA T²/SPE (``n_components``: a count, or a fraction of variance if < 1;
#: ``alpha``; optional ``smooth``, ``calibrate``, ``limit_scale``: the ``pca_monitor`` stages) fitted
#: on all of d00.dat and never refitted, a row in alarm while over the limit; ``variability``:
#: ``increment_variance`` params, optional. This one is the literature monitor (Yin et al. 2012,
#: 17 PCs, textbook 99 % limits, no smoothing), for reproducing the published rates.
TEP_LITERATURE: dict[str, Any] = {"monitor": "pca", "columns": TEP_COLUMNS, "n_components": 17, "alpha": 0.99}

#: SKAB: the default monitor is the ``skab-pca`` entry of the shipped site config
#: ``daemon/lab/sites/skab.yaml`` (``plantwatch eval skab`` reads it). This is the monitor before
#: drift compensation and hysteresis, as ``pca_monitor`` params: fitted on the first 400 rows, rows
#: smoothed, limits at 3 x the largest training-row score, alarm above the limit.
SKAB_PLAIN: dict[str, Any] = {"window": 400, "min_rows": 400, "refit_every": 0, "variance": 0.95, "alpha": 0.99,
                              "smooth": 0.9, "calibrate": 1.0, "limit_scale": 3.0, "confirm_rows": 1,
                              "clear_rows": 1, "clear_ratio": 1.0}
