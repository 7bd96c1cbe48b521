"""Throwaway Mosquitto and PostgreSQL/TimescaleDB instances on free local ports.

Tests and ``plantwatch bench`` start their own brokers and database clusters
instead of relying on whatever happens to run on 1883/5432: a fresh CI machine
has no such services, and a developer's system services must not be touched.

Both classes work synchronously (``start()``/``stop()``, ``with``) and as async
context managers (the blocking start runs in a worker thread).  This module
has no pytest dependency on purpose: benchmarks reuse it.

Running as root: PostgreSQL refuses to run as uid 0, so its commands are run as
an unprivileged OS user (``postgres`` when it exists) via ``runuser``/``setpriv``,
with the cluster's directory owned by that user.  Mosquitto is told to stay
root (``user root``) so it can write its persistence file into a root-owned
temporary directory.
"""

from __future__ import annotations

from .mosquitto import MosquittoInstance
from .pg_install import DEFAULT_PG_BIN, timescaledb_available
from .postgres import PostgresInstance
from .process import INSTALL_HINT, ServiceError, ServiceStartError, ServiceUnavailable, free_port, service_user

__all__ = [
    "DEFAULT_PG_BIN",
    "INSTALL_HINT",
    "MosquittoInstance",
    "PostgresInstance",
    "ServiceError",
    "ServiceStartError",
    "ServiceUnavailable",
    "free_port",
    "service_user",
    "timescaledb_available",
]
