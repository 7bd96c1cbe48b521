"""Streaming anomaly detectors: pure computation on numpy arrays, no I/O.

Importing this package registers every built-in detector (see :mod:`.registry`).
"""
from .base import Detector, DetectorParams, Output, SensorInfo
from .registry import REGISTRY, create, get, register

# Built-in detectors register themselves on import.
from . import limit as _limit  # noqa: F401,E402
from . import stale as _stale  # noqa: F401,E402
from . import comm_lost as _comm_lost  # noqa: F401,E402
from . import robust_zscore as _robust_zscore  # noqa: F401,E402
from . import range_novelty as _range_novelty  # noqa: F401,E402
from . import shape_novelty as _shape_novelty  # noqa: F401,E402
from . import pca_monitor as _pca_monitor  # noqa: F401,E402
from . import pyod_group as _pyod_group  # noqa: F401,E402
from . import robot_baseline as _robot_baseline  # noqa: F401,E402
from . import unexplained_loss as _unexplained_loss  # noqa: F401,E402
from . import inventory_balance as _inventory_balance  # noqa: F401,E402
from . import inventory_integrity as _inventory_integrity  # noqa: F401,E402
from . import gas_exposure as _gas_exposure  # noqa: F401,E402
from . import lel as _lel  # noqa: F401,E402
from . import flatline as _flatline  # noqa: F401,E402
from . import out_of_range as _out_of_range  # noqa: F401,E402
from . import fault_code as _fault_code  # noqa: F401,E402
from . import jump as _jump  # noqa: F401,E402
from . import neighbour_drift as _neighbour_drift  # noqa: F401,E402
from . import rate_of_change as _rate_of_change  # noqa: F401,E402
from . import ewma as _ewma  # noqa: F401,E402
from . import cusum as _cusum  # noqa: F401,E402
from . import seasonal_zscore as _seasonal_zscore  # noqa: F401,E402
from . import increment_variance as _increment_variance  # noqa: F401,E402
from . import contact_state as _contact_state  # noqa: F401,E402

__all__ = ["Detector", "DetectorParams", "Output", "SensorInfo", "REGISTRY", "create", "get", "register"]
