"""Prometheus metrics. One :class:`Metrics` object per daemon, on its own registry (tests and
benchmarks run several daemons in one process without their counters mixing).

``/metrics`` is served by :func:`serve_registry`: prometheus-client's WSGI app in a thread, on
127.0.0.1 by default, optionally over HTTPS (a :class:`~plantwatch.connectors.tls.ServerTls`) and
behind HTTP basic authentication (the password's SHA-256 is compared, in constant time).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import ssl
import threading
from socketserver import ThreadingMixIn
from typing import Any, Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, make_wsgi_app

from plantwatch.connectors.tls import ServerTls

disable_created_metrics()  # the *_created series double the output and nobody graphs them

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        p = "plantwatch_"
        self.messages = Counter(p + "messages_received", "MQTT messages received", registry=r)
        self.acked = Counter(p + "messages_acked", "MQTT messages acknowledged after commit", registry=r)
        self.received = Counter(p + "readings_received", "Readings received (valid or not)", registry=r)
        self.stored = Counter(p + "readings_stored", "Readings newly stored", ["table"], registry=r)
        self.duplicates = Counter(p + "readings_duplicate", "Readings already stored (redeliveries)", registry=r)
        self.rejected = Counter(p + "readings_rejected", "Readings or payloads refused, by reason", ["reason"], registry=r)
        self.dead_lettered = Counter(p + "dead_letters_written", "Dead-letter rows written", registry=r)
        self.background_failures = Counter(p + "background_failures", "Background work of the daemon that failed and"
                                           " is retried, by task: rollup_mark (at start), rollup (every 10 s),"
                                           " refit (group models), state_snapshot, lag_gauge (ingest lag at a scrape)", ["task"], registry=r)
        self.batches = Counter(p + "write_batches", "Write transactions committed", registry=r)
        self.write_errors = Counter(p + "write_errors", "Write transactions that failed (retried, or split when the database refused their data)", registry=r)
        self.write_seconds = Histogram(p + "write_seconds", "Duration of one write transaction", registry=r,
                                       buckets=LATENCY_BUCKETS)
        self.store_delay = Histogram(p + "store_delay_seconds", "Collector send time to commit", registry=r,
                                     buckets=LATENCY_BUCKETS)
        self.ingest_lag = Gauge(p + "ingest_lag_seconds", "Seconds from a reading's timestamp to its commit (the newest"
                                " committed; while readings wait for their commit, the oldest waiting)", registry=r)
        self.detector_seconds = Counter(p + "detector_seconds", "Time spent in detectors", ["detector"], registry=r)
        self.alarm_changes = Counter(p + "alarm_changes", "Alarm state changes", ["to_state"], registry=r)
        self.active_alarms = Gauge(p + "active_alarms", "Active alarms by severity", ["severity"], registry=r)
        self.sequence_gaps = Counter(p + "sequence_gaps", "Collector batches missing from the sequence", ["collector"], registry=r)
        self.sequence_restarts = Counter(p + "sequence_restarts", "Collector sequence counters that went back or"
                                         " jumped beyond ingest.max_seq_jump (a restart, not lost batches)",
                                         ["collector"], registry=r)
        self.pending = Gauge(p + "pending_readings", "Readings received but not yet committed", registry=r)
        self.notify_dropped = Counter(p + "notifications_dropped", "Alarm notifications dropped (queue full)", registry=r)
        self.webhook = Counter(p + "webhook_notifications", "Webhook notifications by webhook (its name, or scheme"
                               " and host of its URL) and outcome (sent, failed, dropped)",
                               ["webhook", "outcome"], registry=r)
        self.notify_grouped = Counter(p + "notifications_grouped", "Consequential alarm notifications grouped"
                                      " under their incident during a flood", registry=r)
        self.operator_actions = Counter(p + "operator_actions", "Operator actions committed", ["action"], registry=r)
        self.alarm_flood = Gauge(p + "alarm_flood", "1 while an operator position is in an alarm flood",
                                 ["position"], registry=r)
        self.connected = Gauge(p + "mqtt_connected", "1 while the MQTT subscriber is connected", registry=r)
        self.connect_errors = Counter(p + "mqtt_connect_errors", "Failed MQTT connection attempts by reason (tls_*,"
                                      " not_tls, refused, unavailable)", ["reason"], registry=r)
        self.sessions_lost = Counter(p + "mqtt_sessions_lost", "Persistent broker sessions found gone on (re)connect:"
                                     " what the broker had queued for them is lost", ["client_id"], registry=r)
        self.alarm_journal_entries = Gauge(p + "alarm_journal_entries", "Alarm journal entries (units of alarm"
                                           " changes) published but not yet committed to the database", registry=r)
        self.alarm_journal_full = Gauge(p + "alarm_journal_full", "1 while the alarm journal is full (or cannot be"
                                        " written): alarm changes are published but not journaled", registry=r)
        self.alarm_journal_unjournaled = Counter(p + "alarm_journal_unjournaled", "Alarm operations published and"
                                                 " queued for the database without a journal entry (journal full"
                                                 " or unwritable)", registry=r)
        self.alarm_journal_replayed = Counter(p + "alarm_journal_replayed", "Alarm journal entries written to the"
                                              " database at start (left by a run that stopped before its commit)",
                                              registry=r)

    def serve(self, cfg: Any) -> WSGIServer:
        """Start /metrics as ``cfg`` (a MetricsConfig) says; returns the server (``shutdown()``)."""
        return serve_registry(self.registry, cfg.host, cfg.port, tls=cfg.tls.settings() if cfg.tls else None,
                              password_sha256=cfg.basic_auth.digest() if cfg.basic_auth else None,
                              username=cfg.basic_auth.username if cfg.basic_auth else None)


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per request; with ``ssl_context`` the TLS handshake happens in that thread
    (a client that connects and says nothing holds up only itself)."""

    daemon_threads = True
    ssl_context: ssl.SSLContext | None = None

    def finish_request(self, request, client_address) -> None:  # noqa: ANN001 - socketserver's signature
        if self.ssl_context is None:
            return super().finish_request(request, client_address)
        request.settimeout(10.0)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):  # a failed handshake is the client's problem, not ours
            return None
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


def _basic_auth(app: Callable, username: str, password_sha256: str) -> Callable:
    expected = hashlib.sha256(username.encode()).hexdigest() + password_sha256

    def guarded(environ: dict, start_response: Callable):
        header = environ.get("HTTP_AUTHORIZATION", "")
        given = ""
        if header[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
                given = hashlib.sha256(user.encode()).hexdigest() + hashlib.sha256(password.encode()).hexdigest()
            except (ValueError, UnicodeDecodeError):
                given = ""
        if not hmac.compare_digest(given, expected):
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="plantwatch"'),
                                                ("Content-Type", "text/plain")])
            return [b"authentication required\n"]
        return app(environ, start_response)

    return guarded


def serve_registry(registry: CollectorRegistry, host: str, port: int, *, tls: ServerTls | None = None,
                   username: str | None = None, password_sha256: str | None = None) -> WSGIServer:
    """Serve ``registry`` on ``host:port`` in a daemon thread (HTTPS with ``tls``; basic
    authentication with ``username`` and the SHA-256 of the password)."""
    app = make_wsgi_app(registry)
    if username is not None and password_sha256 is not None:
        app = _basic_auth(app, username, password_sha256)
    server_cls = type("MetricsServer", (_Server,), {"address_family": socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]})
    httpd = make_server(host, port, app, server_cls, handler_class=_Quiet)
    if tls is not None:
        httpd.ssl_context = tls.context()
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    return httpd
