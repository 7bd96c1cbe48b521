"""The daemon's own sections of the config: the broker, the database, ingest limits, the metrics
endpoint, state snapshots and the cluster of daemons sharing one site."""
from __future__ import annotations

from pydantic import Field, model_validator

from plantwatch.daemon.config.sensors import ID, Model
from plantwatch.daemon.config.tls import (BasicAuthConfig, ClientTlsConfig, DatabaseTlsConfig, ServerTlsConfig, dsn_with_tls,
                                          exposed_needs)


class MqttConfig(Model):
    #: broker host
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    #: broker password (or PLANTWATCH_MQTT_PASSWORD in the environment)
    password: str | None = None
    #: first segment of every topic
    topic_prefix: str = Field("plantwatch", pattern=r"^[^#+\s]+$")
    #: fixed client id: the broker keeps this persistent session (and its queued messages)
    client_id: str = "plantwatch-daemon"
    #: seconds between MQTT keep-alive pings
    keepalive: int = Field(30, ge=5, le=3600)
    #: PUBLISH packets the daemon holds unacknowledged (the broker's own inflight cap also applies)
    receive_window: int = Field(1000, ge=1, le=65535)
    #: TLS to the broker (docs/tls.md); omitted: plain TCP
    tls: ClientTlsConfig | None = None


class DatabaseConfig(Model):
    #: PostgreSQL connection string (the password may come from PGPASSWORD)
    dsn: str
    #: connections used for writing readings (2 measured best on a 2-core box)
    writers: int = Field(2, ge=1, le=16)
    #: TLS to PostgreSQL (sslmode, sslrootcert, ...: added to the DSN, docs/tls.md); omitted: what the DSN says
    tls: DatabaseTlsConfig | None = None

    @property
    def url(self) -> str:
        """The DSN to connect with: ``dsn`` plus the parameters of ``tls``."""
        return dsn_with_tls(self.dsn, self.tls)


class IngestConfig(Model):
    #: write when this many readings are pending ...
    batch_readings: int = Field(20_000, ge=1, le=1_000_000)
    #: ... or when the oldest pending reading has waited this long (seconds)
    flush_interval: float = Field(0.2, gt=0, le=10)
    #: larger MQTT payloads are dead-lettered as oversized
    max_payload_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    #: batches with more readings are dead-lettered as oversized
    max_readings_per_message: int = Field(10_000, ge=1, le=1_000_000)
    #: readings stamped further in the future than this (seconds) are rejected
    max_future_skew: float = Field(300.0, ge=0)
    #: readings older than this (seconds) are rejected
    max_age: float = Field(7 * 86400.0, gt=0)
    #: a received message waiting this long (seconds) for its commit is a stall: /healthz answers
    #: 503 and a warning is logged, repeated every stall_after seconds while it lasts
    stall_after: float = Field(30.0, gt=0, le=3600)
    #: a collector's batch sequence number that jumps forward by more than this is a restart of
    #: its counter (or a forged number), logged and counted as such, not that many lost batches
    max_seq_jump: int = Field(1_000_000, ge=1, le=2**63 - 1)
    #: the longest a graceful stop (SIGTERM) may take: stop reading, commit and acknowledge what
    #: was received, save detector state, publish the final alarm list (seconds). Past it the
    #: daemon logs what it leaves unacknowledged (the broker delivers it again) and exits 3
    shutdown_grace: float = Field(30.0, gt=0, le=3600)


class MetricsConfig(Model):
    #: address of the Prometheus endpoint (another address only with basic_auth and tls)
    host: str = "127.0.0.1"
    #: 0 disables the HTTP endpoint
    port: int = Field(9108, ge=0, le=65535)
    #: serve /metrics over HTTPS
    tls: ServerTlsConfig | None = None
    #: require HTTP basic authentication (Prometheus' basic_auth)
    basic_auth: BasicAuthConfig | None = None

    @model_validator(mode="after")
    def _exposed(self):
        return exposed_needs(self, "/metrics", ("tls", "basic_auth"))


class StateConfig(Model):
    #: seconds between detector state snapshots (also written at shutdown)
    snapshot_interval: float = Field(60.0, ge=1)
    #: folder for the embedded broker/database when none is configured
    data_dir: str = ".plantwatch"


class ClusterConfig(Model):
    """Several daemons sharing one site: collectors are split into ``partitions`` (hash of the
    collector id), each partition is held by exactly one instance at a time through a lease in
    the database, with its own persistent MQTT session, so each sensor's detector state lives
    in one instance. Without this section one daemon takes everything (the default)."""

    #: unique per daemon instance (lease holder name)
    instance_id: ID
    #: number of partitions (fixed for the site: all instances must agree)
    partitions: int = Field(1, ge=1, le=256)
    #: the site's collector ids: each partition's session subscribes to its collectors' topics.
    #: Collectors not listed are taken by partition 0 (whose session also subscribes to the
    #: wildcard and leaves other partitions' collectors to them).
    collectors: list[ID] = Field(default_factory=list)
    #: a lease not renewed for this long is taken over by another instance (seconds). Detection
    #: of a crashed or frozen instance takes this long, so alarms of its partitions resume on
    #: another within about `lease_seconds + renew_interval` (docs/scaling.md). An instance whose
    #: event loop or database stalls longer than this loses its partitions (they move, no data lost)
    lease_seconds: float = Field(2.0, ge=1, le=600)
    #: how often leases are renewed and free ones looked for (seconds): two small transactions
    #: per instance per renewal
    renew_interval: float = Field(0.5, gt=0, le=60)

    @model_validator(mode="after")
    def _renew(self):
        if self.renew_interval * 2 > self.lease_seconds:
            raise ValueError("renew_interval must be at most half of lease_seconds")
        return self
