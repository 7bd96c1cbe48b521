"""Prometheus metrics. One :class:`Metrics` object per daemon, on its own registry (tests and
benchmarks run several daemons in one process without their counters mixing)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, start_http_server

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

    def serve(self, host: str, port: int):
        """Start the /metrics HTTP endpoint (a daemon thread); returns (server, thread)."""
        return start_http_server(port, addr=host, registry=self.registry)
