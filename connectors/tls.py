"""TLS for every connection plantwatch makes or serves: contexts, and one-line explanations of
why a handshake failed.

:class:`ClientTls` is what a client needs (MQTT, webhooks aside): the CA that signed the
server's certificate (default: the system's CAs), an optional client certificate and key, and
hostname verification (on unless switched off). TLS 1.2 is the oldest version offered.
:class:`ServerTls` is what a server needs (the operator API, ``/metrics``): its certificate and
key, and optionally a CA whose client certificates are required.

Contexts are built at each connection, so a renewed certificate is used from the next
reconnect on without a restart. OpenSSL's messages are precise but cryptic
(``TLSV13_ALERT_CERTIFICATE_REQUIRED``, ``wrong version number``); :func:`explain` turns the
ones a site meets into a sentence that names the file or setting to look at.
"""
from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True, slots=True)
class ClientTls:
    #: PEM file of the CA(s) that signed the server's certificate; None: the system's CAs
    ca_file: str | None = None
    #: PEM client certificate and its key (servers that require one: Mosquitto require_certificate)
    cert_file: str | None = None
    key_file: str | None = None
    #: verify that the server's certificate names the host connected to
    check_hostname: bool = True
    #: oldest protocol version offered
    min_version: str = "1.2"

    def context(self) -> ssl.SSLContext:
        """A fresh client context (reads the files now). Raises ``OSError`` / ``ssl.SSLError``."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        ctx.minimum_version = _VERSIONS[self.min_version]
        ctx.check_hostname = self.check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED  # never optional: an unverified server is no server
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


@dataclass(frozen=True, slots=True)
class ServerTls:
    cert_file: str
    key_file: str
    #: when set, clients must present a certificate signed by this CA
    client_ca_file: str | None = None
    min_version: str = "1.2"

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = _VERSIONS[self.min_version]
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            ctx.load_verify_locations(self.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def check_files(tls: ClientTls | ServerTls) -> str | None:
    """Why the files of ``tls`` cannot be used (missing, unreadable, not PEM, key not matching),
    or None. Config validation calls it so that a wrong path fails at load, not at the first
    connection."""
    for name in ("ca_file", "client_ca_file", "cert_file", "key_file"):
        path = getattr(tls, name, None)
        if path is None:
            continue
        p = Path(path)
        if not p.is_file():
            return f"{name}: {path} does not exist or is not a file"
        try:
            p.open("rb").close()
        except OSError as e:
            return f"{name}: cannot read {path}: {e.strerror or e}"
    try:
        tls.context()
    except ssl.SSLError as e:
        return f"{_ssl_reason(e)} (cert_file {getattr(tls, 'cert_file', None)}, key_file {getattr(tls, 'key_file', None)}," \
               f" CA {getattr(tls, 'ca_file', None) or getattr(tls, 'client_ca_file', None)})"
    except OSError as e:
        return f"cannot load the certificates: {e}"
    return None


def _ssl_reason(e: ssl.SSLError) -> str:
    reason = (getattr(e, "reason", None) or "").upper()
    if "KEY_VALUES_MISMATCH" in reason:
        return "key_file does not belong to cert_file"
    if "PEM" in reason or "NO_START_LINE" in reason or "NOT_ENOUGH_DATA" in reason:
        return "a file is not a PEM certificate or key"
    return str(e.strerror or e)


# --- explaining failures ---------------------------------------------------------------------
#: (substring of the OpenSSL / socket message, upper-cased) -> (short reason, explanation)
_CLIENT_SIDE = [
    ("HOSTNAME MISMATCH", "tls_hostname", "the server's certificate does not name {host}: connect with a name the"
     " certificate lists (subjectAltName), or issue a certificate for {host}"),
    ("IP ADDRESS MISMATCH", "tls_hostname", "the server's certificate does not list the address {host}: connect by"
     " a name the certificate lists, or issue a certificate for {host}"),
    ("CERTIFICATE HAS EXPIRED", "tls_server_expired", "the server's certificate has expired: renew it"
     " (deploy/tls/make-site-ca.sh server ...)"),
    ("CERTIFICATE IS NOT YET VALID", "tls_server_expired", "the server's certificate is not valid yet: check the"
     " clocks of both machines"),
    ("SELF-SIGNED CERTIFICATE", "tls_unknown_ca", "the server's certificate is not signed by the CA in {ca}:"
     " wrong ca_file, or the server uses another CA's certificate"),
    ("UNABLE TO GET LOCAL ISSUER", "tls_unknown_ca", "the server's certificate is not signed by the CA in {ca}:"
     " wrong ca_file, or the server uses another CA's certificate"),
    ("CERTIFICATE VERIFY FAILED", "tls_unknown_ca", "the server's certificate could not be verified against {ca}"),
    ("WRONG VERSION NUMBER", "not_tls", "the server at {host}:{port} does not speak TLS: is this the plain-text"
     " port? (the broker's TLS listener is usually 8883)"),
    ("UNSUPPORTED PROTOCOL", "tls_version", "the server offers only TLS versions older than 1.2"),
]
_SERVER_ALERTS = [
    ("ALERT_CERTIFICATE_EXPIRED", "tls_client_expired", "the server refused our client certificate {cert}: it"
     " has expired; renew it (deploy/tls/make-site-ca.sh client ...)"),
    ("ALERT_CERTIFICATE_REQUIRED", "tls_client_cert_required", "the server requires a client certificate: set"
     " cert_file and key_file"),
    ("ALERT_UNKNOWN_CA", "tls_client_unknown_ca", "the server does not trust our client certificate {cert}: it is"
     " not signed by the CA the server uses (another site's CA?)"),
    ("ALERT_BAD_CERTIFICATE", "tls_client_rejected", "the server refused our client certificate {cert}"),
    ("ALERT_CERTIFICATE_REVOKED", "tls_client_rejected", "the server says our client certificate {cert} is revoked"),
    ("ALERT_HANDSHAKE_FAILURE", "tls_handshake", "the TLS handshake failed: no protocol version or cipher in common,"
     " or a client certificate was required"),
    ("ALERT_PROTOCOL_VERSION", "tls_version", "the server refuses the TLS versions we offer"),
]


@dataclass(frozen=True, slots=True)
class Explanation:
    #: short machine-readable reason (a metric label): tls_hostname, tls_unknown_ca, not_tls, ...
    reason: str
    #: one sentence for the log
    text: str


def explain(message: str, *, host: str, port: int, tls: ClientTls | None) -> Explanation | None:
    """The TLS problem behind an error ``message`` (OpenSSL's text, or paho's log line of a
    receive error), as one sentence; None when it is not a TLS problem we know."""
    up = message.upper().replace("_", " ")
    raw = message.upper()
    fill = {"host": host, "port": port, "ca": (tls.ca_file if tls and tls.ca_file else "the system's CAs"),
            "cert": (tls.cert_file if tls and tls.cert_file else "(none)")}
    for key, reason, text in _SERVER_ALERTS:
        if key in raw:
            return Explanation(reason, text.format(**fill))
    for key, reason, text in _CLIENT_SIDE:
        if key in up:
            return Explanation(reason, text.format(**fill))
    return None


def probe(host: str, port: int, timeout: float = 3.0) -> str:
    """What answers at ``host:port``: ``"tls"`` (a TLS handshake works; certificates not
    checked), ``"plain"`` (a TCP server that does not speak TLS) or ``"closed"`` (no TCP
    connection). Used after a connection was dropped without an answer, to say why."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return "closed"
    try:
        with ctx.wrap_socket(raw, server_hostname=host):
            return "tls"
    except ssl.SSLError as e:
        # a server that asks for a client certificate or sends an alert still speaks TLS
        return "tls" if "ALERT" in (getattr(e, "reason", "") or "").upper() else "plain"
    except OSError:
        return "plain"
    finally:
        raw.close()


def client_cert_alert(host: str, port: int, tls: ClientTls, timeout: float = 2.0) -> str | None:
    """The alert a server sends about our client certificate, or None.

    With TLS 1.3 the server judges the client certificate after the client has finished its
    handshake, so a refusal arrives as an alert on the first read; when the client has already
    sent data (MQTT CONNECT) the server's close can reset the connection and the alert is lost
    ("EOF occurred in violation of protocol"). This handshake sends nothing and reads once, so
    the alert arrives. A server that accepts the certificate waits for data: the read times out."""
    try:
        ctx = tls.context()
        raw = socket.create_connection((host, port), timeout=timeout)
    except (OSError, ssl.SSLError):
        return None
    try:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.recv(1)
    except ssl.SSLError as e:
        return str(e)
    except OSError:
        return None
    finally:
        raw.close()
    return None
