"""Small vectorised statistics shared by detectors (pure numpy, no state)."""
from __future__ import annotations

import numpy as np


def nanmedian_rows(a: np.ndarray) -> np.ndarray:
    """Median of each row ignoring NaN (NaN for an all-NaN row); ~20x faster than
    ``np.nanmedian`` on the short rows detectors use (rings of 5-256 values)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        return nanmedian_rows(a[None, :])[0]
    s = np.sort(a, axis=-1)  # NaN sorts last
    c = np.count_nonzero(~np.isnan(a), axis=-1)
    lo = np.maximum((c - 1) // 2, 0)
    hi = np.where(c % 2 == 1, lo, np.maximum(c // 2, 0))
    lo_v = np.take_along_axis(s, lo[..., None], axis=-1)[..., 0]
    hi_v = np.take_along_axis(s, np.minimum(hi, a.shape[-1] - 1)[..., None], axis=-1)[..., 0]
    return np.where(c > 0, (lo_v + hi_v) / 2.0, np.nan)
