"""The config's sections about alarms and the people who get them: alarm management (shelving,
suppression, operator positions, floods, incidents), the operator API and notifications (docs/alarms.md)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from plantwatch.daemon.config.console_users import ConsoleUser
from plantwatch.daemon.config.sensors import ID, Model
from plantwatch.daemon.config.site import Severity
from plantwatch.daemon.config.tls import ServerTlsConfig, exposed_needs


class AlarmRef(Model):
    """Which alarms a rule is about: every given criterion must match (AND)."""

    detector: ID | None = None
    sensors: list[ID] | None = None

    @model_validator(mode="after")
    def _not_empty(self):
        if self.detector is None and self.sensors is None:
            raise ValueError("give detector, sensors or both")
        return self

    def matches(self, detector_id: str, sensor_tag: str) -> bool:
        return ((self.detector is None or self.detector == detector_id)
                and (self.sensors is None or sensor_tag in self.sensors))

    def label(self) -> str:
        return f"{self.detector or '*'}/{','.join(self.sensors) if self.sensors else '*'}"


class SuppressRule(Model):
    """Suppression by design: ``alarms`` are suppressed while any ``upstream`` alarm is active
    (e.g. a downstream low-flow alarm while the upstream pump's trip alarm is active)."""

    alarms: AlarmRef
    upstream: AlarmRef


class Position(Model):
    """An operator position (console) and the areas it watches (for the EEMUA 191 rates)."""

    id: ID
    areas: list[ID]


class FloodConfig(Model):
    #: sliding window (seconds) in which alarms are counted per operator position
    window: float = Field(600.0, gt=0)
    #: a flood starts when more than this many alarms were raised in the window ...
    start: int = Field(10, ge=1)
    #: ... and ends when fewer than this many were
    end: int = Field(5, ge=1)


class IncidentConfig(Model):
    #: an alarm joins an open incident whose last alarm was raised at most this long ago (s)
    window: float = Field(600.0, gt=0)
    #: an incident ends once all its alarms have been inactive this long (s)
    close_after: float = Field(300.0, ge=0)
    #: robot readings within this distance (m) of an involved sensor are shown in reports
    robot_radius: float = Field(30.0, gt=0)


class AlarmsConfig(Model):
    #: shelving is always for a time: the default and the longest allowed (seconds)
    default_shelve: float = Field(3600.0, gt=0)
    max_shelve: float = Field(8 * 3600.0, gt=0)
    suppress_when: list[SuppressRule] = Field(default_factory=list)
    #: areas not listed belong to the position "site"
    positions: list[Position] = Field(default_factory=list)
    flood: FloodConfig = FloodConfig()
    incidents: IncidentConfig = IncidentConfig()
    #: the alarm journal: alarm changes published but not yet committed to the database, kept on
    #: local disk until it has them (docs/outages.md); default ``{state.data_dir}/alarm-journal``
    journal_dir: str | None = None
    #: at most this many journal entries (one per unit of alarm changes) wait for the database;
    #: beyond it changes are still published, and a system alarm says they are not journaled
    journal_limit: int = Field(100_000, ge=1)
    #: seconds a decided alarm change waits for the database's commit, so that its message carries
    #: the audit sequence and alarm id; after that it goes out without the sequence (load, an
    #: outage or a stall never hold an alarm back longer: docs/outages.md)
    publish_wait: float = Field(0.2, ge=0, le=5)


class ApiToken(Model):
    name: ID
    role: Literal["operator", "engineer", "inspector", "security"]
    #: hex SHA-256 of the token (``plantwatch token new`` prints both)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ApiConfig(Model):
    """The operator API and console, served by the daemon (absent: not served)."""

    host: str = "127.0.0.1"
    port: int = Field(8110, ge=0, le=65535)
    tokens: list[ApiToken] = Field(default_factory=list)
    #: more tokens, one per line: ``name role sha256`` (``#`` comments); read at start
    token_file: str | None = None
    #: console users who log in with name and password (daemon/config/console_users.py)
    users: list[ConsoleUser] = Field(default_factory=list)
    #: seconds a request may wait for the database before it is answered 503
    db_timeout: float = Field(10.0, gt=0, le=300)
    #: serve the API and console over HTTPS (docs/tls.md)
    tls: ServerTlsConfig | None = None

    @model_validator(mode="after")
    def _exposed(self):
        return exposed_needs(self, "the API", ("tls",))

    @property
    def url(self) -> str:
        """The console's address from this machine; the dashboards' default ``console_url``."""
        host = "localhost" if self.host in ("127.0.0.1", "::1", "0.0.0.0", "::") else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


class Webhook(Model):
    #: names the webhook in logs and metric labels (default: scheme and host of the URL; the
    #: URL itself is never shown, as it may carry the webhook's secret)
    name: ID | None = None
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    #: alarm changes below this severity are not sent
    min_severity: Severity = "low"
    timeout: float = Field(5.0, gt=0, le=120)
    #: attempts per notification before it is counted as failed
    attempts: int = Field(6, ge=1, le=100)


class NotifyConfig(Model):
    webhooks: list[Webhook] = Field(default_factory=list)
    #: the operator console's public base URL (as operators reach it, e.g.
    #: ``https://plantwatch.site.example:8110``): webhook messages link to the alarm's page there
    console_url: str | None = Field(None, pattern=r"^https?://[^\s]+$")
    #: notifications waiting per webhook; beyond it the oldest are dropped (and counted)
    queue: int = Field(1000, ge=1, le=1_000_000)
    #: first retry delay (s); doubles per attempt up to max_backoff
    backoff: float = Field(0.5, gt=0)
    max_backoff: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _unique_names(self):
        names = [w.name for w in self.webhooks if w.name is not None]
        if len(names) != len(set(names)):
            raise ValueError("webhook names must be unique (they label the webhook's metrics and log lines)")
        return self
