"""Default detector configurations of the benchmark evaluations (``plantwatch eval ...``).

Tuned on the shared benchmark data only (NAB corpus, SKAB anomaly-free + valve1, TEP training
sets + d00_te); nothing here depends on the labels of an individual file.
"""
from __future__ import annotations

from typing import Any

#: NAB: range novelty (first 250 readings fix a 16-bin grid; a reading in a never-visited bin is
#: an alarm, faded by the sensor's recent novelty rate, then 50 readings of rest). The five
#: parameters were chosen by a small grid search on the NAB corpus (see the detector's module).
NAB_DEFAULT: dict[str, Any] = {
    "detector": "range_novelty",
    "params": {"learn": 250, "bins": 16, "rate_window": 1000, "rate_scale": 400.0, "rest": 50,
               "rest_threshold": 0.3, "threshold": 0.79},
}

#: TEP: PCA T²/SPE on XMEAS(1-22) + XMV(1-11) (0-based columns 0-21 and 41-51, as in Yin et al.
#: 2012), fitted on d00.dat. 17 PCs at 99.5 % limits keep the false-alarm rate on d00_te.dat
#: under 5 % (99 % limits reproduce Yin's 6.1-6.4 %, over the 5 % target).
TEP_DEFAULT: dict[str, Any] = {
    "monitor": "pca",
    "columns": list(range(22)) + list(range(41, 52)),
    "n_components": 17,
    "alpha": 0.995,
}

#: SKAB: PCA T²/SPE over the 8 channels, fitted on each file's first 400 rows (the benchmark's
#: protocol), rows smoothed by an EWMA (factor 0.8, ~5 s) and both limits widened 4x; tuned on
#: valve1 (the shared half of SKAB).
SKAB_DEFAULT: dict[str, Any] = {
    "monitor": "pca",
    "train_rows": 400,
    "n_components": 0.95,
    "alpha": 0.99,
    "smooth": 0.8,
    "limit_scale": 4.0,
}
