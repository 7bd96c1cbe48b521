"""Config models for TLS and for the protection of ``/metrics``, shared by the daemon's config
(``mqtt.tls``, ``database.tls``, ``api.tls``, ``metrics.tls``, ``metrics.basic_auth``) and the
edge collector's (``mqtt.tls``, ``metrics.*``).

Every file named here is checked when the config is loaded (it exists, is readable, is PEM, the
key belongs to the certificate), so a wrong path is a config error with its line, not a daemon
that starts and then cannot connect.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from plantwatch.connectors.tls import ClientTls, ServerTls, check_files


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def checking_files(info: ValidationInfo) -> bool:
    """False when the config is validated without its files (``load_config(check_files=False)``:
    a site's config checked on another machine than the one it runs on)."""
    return (info.context or {}).get("check_files", True)


def _readable(v: str | None, info: ValidationInfo) -> str | None:
    if v is None or not checking_files(info):
        return v
    p = Path(v)
    if not p.is_file():
        raise ValueError(f"{v}: no such file")
    try:
        p.open("rb").close()
    except OSError as e:
        raise ValueError(f"{v}: cannot read it ({e.strerror or e})") from None
    return v


class ClientTlsConfig(_Model):
    """TLS to a server (the MQTT broker): on when this section is present."""

    #: PEM file of the CA that signed the server's certificate (the site CA); default: the system's CAs
    ca_file: str | None = None
    #: client certificate (PEM), for a broker with require_certificate (its CN is the MQTT user
    #: name under use_identity_as_username)
    cert_file: str | None = None
    #: the client certificate's private key (PEM)
    key_file: str | None = None
    #: verify that the server's certificate names the host connected to; switch off only for a
    #: certificate without the address used (never on a site)
    check_hostname: bool = True
    #: oldest TLS version offered
    min_version: Literal["1.2", "1.3"] = "1.2"

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _files(cls, v, info: ValidationInfo):
        return _readable(v, info)

    @model_validator(mode="after")
    def _usable(self, info: ValidationInfo):
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        problem = check_files(self.settings()) if checking_files(info) else None
        if problem:
            raise ValueError(problem)
        return self

    def settings(self) -> ClientTls:
        return ClientTls(self.ca_file, self.cert_file, self.key_file, self.check_hostname, self.min_version)


class ServerTlsConfig(_Model):
    """TLS for a server plantwatch runs (the operator API, /metrics): on when this section is present."""

    #: the server's certificate (PEM; deploy/tls/make-site-ca.sh server NAME HOST...)
    cert_file: str
    #: its private key (PEM)
    key_file: str
    #: when set, clients must present a certificate signed by this CA (mutual TLS)
    client_ca_file: str | None = None
    #: oldest TLS version accepted
    min_version: Literal["1.2", "1.3"] = "1.2"

    @field_validator("cert_file", "key_file", "client_ca_file")
    @classmethod
    def _files(cls, v, info: ValidationInfo):
        return _readable(v, info)

    @model_validator(mode="after")
    def _usable(self, info: ValidationInfo):
        problem = check_files(self.settings()) if checking_files(info) else None
        if problem:
            raise ValueError(problem)
        return self

    def settings(self) -> ServerTls:
        return ServerTls(self.cert_file, self.key_file, self.client_ca_file, self.min_version)


class BasicAuthConfig(_Model):
    """HTTP basic authentication (for /metrics: Prometheus' ``basic_auth``)."""

    #: the user name Prometheus sends
    username: str = Field(min_length=1, pattern=r"^[^:\s]+$")
    #: hex SHA-256 of the password (``printf %s PASSWORD | sha256sum``) ...
    password_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    #: ... or a file holding the password (a container secret); read at start
    password_file: str | None = None

    @field_validator("password_file")
    @classmethod
    def _file(cls, v, info: ValidationInfo):
        return _readable(v, info)

    @model_validator(mode="after")
    def _one(self):
        if (self.password_sha256 is None) == (self.password_file is None):
            raise ValueError("give exactly one of password_sha256 and password_file")
        return self

    def digest(self) -> str:
        """SHA-256 (hex) of the password."""
        import hashlib

        if self.password_sha256 is not None:
            return self.password_sha256
        password = Path(self.password_file).read_text(encoding="utf-8").rstrip("\r\n")
        return hashlib.sha256(password.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposed_needs(section, what: str, needed: tuple[str, ...]):
    """A server section (``host``, ``port``) listening beyond this machine must have ``needed``
    (``tls``, ``basic_auth``) set; on loopback they are optional."""
    if section.port and not is_loopback(section.host):
        missing = [n for n in needed if getattr(section, n) is None]
        if missing:
            raise ValueError(f"serving {what} on {section.host} (beyond this machine) needs "
                             f"{' and '.join(missing)}: it would be readable and reachable by anyone on the network")
    return section


SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class DatabaseTlsConfig(_Model):
    """TLS to PostgreSQL, added to the DSN as libpq's parameters (which the DSN may also carry)."""

    #: libpq sslmode; verify-full checks the server's certificate and its host name
    mode: SslMode = "verify-full"
    #: PEM file of the CA that signed the server's certificate (sslrootcert)
    ca_file: str | None = None
    #: client certificate (sslcert), for a server that requires one
    cert_file: str | None = None
    #: its private key (sslkey)
    key_file: str | None = None

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _files(cls, v, info: ValidationInfo):
        return _readable(v, info)

    @model_validator(mode="after")
    def _pairs(self):
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.mode in ("verify-ca", "verify-full") and self.ca_file is None:
            raise ValueError(f"mode {self.mode} needs ca_file (the CA that signed the server's certificate)")
        return self


def dsn_with_tls(dsn: str, tls: DatabaseTlsConfig | None) -> str:
    """``dsn`` with the TLS parameters of ``tls`` (sslmode, sslrootcert, sslcert, sslkey) set;
    parameters the DSN already has are replaced."""
    if tls is None:
        return dsn
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query["sslmode"] = tls.mode
    for key, value in (("sslrootcert", tls.ca_file), ("sslcert", tls.cert_file), ("sslkey", tls.key_file)):
        if value is not None:
            query[key] = str(Path(value).absolute())
    return urlunsplit(parts._replace(query=urlencode(query)))


def dsn_sslmode(dsn: str) -> str | None:
    """The sslmode a DSN asks for, if any."""
    return dict(parse_qsl(urlsplit(dsn).query)).get("sslmode")
