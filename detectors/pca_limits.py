"""Control limits of PCA monitoring: Hotelling's T² (F distribution) and SPE/Q (Jackson–Mudholkar or Box)."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats


def t2_limit(a: int, m: int, alpha: float) -> float:
    """a(m²−1)/(m(m−a)) F_α(a, m−a): the T² control limit of ``a`` components fitted on ``m`` rows."""
    return a * (m * m - 1) / (m * (m - a)) * float(stats.f.ppf(alpha, a, m - a)) if m > a else math.inf


def spe_limit(res: np.ndarray, alpha: float, method: str = "jackson_mudholkar") -> float:
    """SPE (Q) control limit from the residual eigenvalues ``res``."""
    res = np.asarray(res, dtype=np.float64)
    res = res[res > 0]
    th1, th2, th3 = (float(np.sum(res ** k)) for k in (1, 2, 3))
    if th1 <= 0 or th2 <= 0:
        return 0.0
    if method == "jackson_mudholkar":
        h0 = 1.0 - 2.0 * th1 * th3 / (3.0 * th2 ** 2)
        if h0 > 1e-3:
            ca = stats.norm.ppf(alpha)
            base = ca * math.sqrt(2.0 * th2 * h0 ** 2) / th1 + 1.0 + th2 * h0 * (h0 - 1.0) / th1 ** 2
            if base > 0:
                return th1 * base ** (1.0 / h0)
    g, h = th2 / th1, th1 ** 2 / th2  # Box (1954); also the fallback when h0 is degenerate
    return g * float(stats.chi2.ppf(alpha, h))
