"""Start what the config names (or the embedded broker and database when it names none), the
metrics endpoint, and the daemon."""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

from plantwatch.connectors.mqtt import BrokerAddress

from plantwatch.daemon.config.model import Config
from plantwatch.daemon.exits import StartupError
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.config.tls import dsn_sslmode, is_loopback
from plantwatch.daemon.service import Daemon, Endpoints

log = logging.getLogger("plantwatch")


class DaemonHandle:
    def __init__(self, cfg: Config, *, config_text: str = "", metrics: Metrics | None = None):
        self.cfg = cfg
        self.config_text = config_text
        self.metrics = metrics or Metrics()
        self.daemon: Daemon | None = None
        self._stop_requested = False

    def request_stop(self) -> None:
        self._stop_requested = True
        if self.daemon is not None:
            self.daemon.stop.set()

    async def run(self) -> None:
        cfg = self.cfg
        async with contextlib.AsyncExitStack() as stack:
            broker, dsn = await open_endpoints(cfg, stack)
            if cfg.metrics.port:
                try:
                    server = self.metrics.serve(cfg.metrics)
                except OSError as e:
                    raise StartupError(f"metrics: cannot listen on {cfg.metrics.host}:{cfg.metrics.port}:"
                                       f" {e.strerror or e}") from None
                stack.callback(server.shutdown)
                log.info("metrics on %s://%s:%d/metrics%s", "https" if cfg.metrics.tls else "http", cfg.metrics.host,
                         cfg.metrics.port, " (basic authentication)" if cfg.metrics.basic_auth else "")
            self.daemon = Daemon(cfg, Endpoints(broker, dsn), config_text=self.config_text, metrics=self.metrics)
            if self._stop_requested:
                self.daemon.stop.set()
            await self.daemon.run()


async def open_endpoints(cfg: Config, stack: contextlib.AsyncExitStack) -> tuple[BrokerAddress, str]:
    """The configured broker and database, or embedded ones in ``state.data_dir``."""
    data = Path(cfg.state.data_dir)
    if cfg.mqtt is not None:
        # a password in the environment keeps it out of the config file
        password = cfg.mqtt.password or os.environ.get("PLANTWATCH_MQTT_PASSWORD")
        tls = cfg.mqtt.tls.settings() if cfg.mqtt.tls else None
        broker = BrokerAddress(cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.username, password, tls)
        if tls is None and not is_loopback(cfg.mqtt.host):
            log.warning("MQTT to %s:%d without TLS: the broker's password and every reading travel in clear"
                        " (set mqtt.tls, docs/tls.md)", cfg.mqtt.host, cfg.mqtt.port)
    else:
        from plantwatch.connectors.embedded import EmbeddedBroker

        b = await stack.enter_async_context(EmbeddedBroker())
        broker = BrokerAddress(b.host, b.port)
        log.info("no mqtt configured: embedded broker on %s:%d", b.host, b.port)
    if cfg.database is not None:
        dsn = cfg.database.url
        host = urlsplit(dsn).hostname or ""
        if dsn_sslmode(dsn) not in ("verify-full", "verify-ca") and host and not host.startswith("/") \
                and not is_loopback(host):
            log.warning("database %s without verified TLS (sslmode %s): set database.tls (docs/tls.md)", host,
                        dsn_sslmode(dsn) or "prefer")
    else:
        from plantwatch.connectors.embedded import EmbeddedPostgres

        pg = await stack.enter_async_context(EmbeddedPostgres(data / "pgdata"))
        dsn = pg.dsn
        log.info("no database configured: embedded PostgreSQL in %s", data / "pgdata")
    return broker, dsn


def run_with_services(cfg: Config, *, config_text: str = "") -> DaemonHandle:
    return DaemonHandle(cfg, config_text=config_text)
