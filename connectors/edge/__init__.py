"""Edge collectors for plant equipment: read devices, convert, buffer, publish wire format v1.

Each protocol is one module registered in :data:`~.sources.SOURCES`; importing this package
registers them all (their client libraries are imported only when a source runs).
"""
from . import modbus as _modbus  # noqa: F401
from . import opcua as _opcua  # noqa: F401
from .sources import SOURCES

__all__ = ["SOURCES"]
