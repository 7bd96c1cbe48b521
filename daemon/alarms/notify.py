"""Alarm notifications to webhooks, with flood handling.

Every committed alarm change is offered here (never awaited by the pipeline). A change becomes
one webhook message, except during an alarm flood (EEMUA 191: more than ``flood.start`` alarms
in ``flood.window`` at one operator position): then lower-priority alarms (priority 3 and 4:
medium, low) that join an existing incident as consequences are not sent one by one — the
incident's cause was notified once, and a "flood" message says that consequences are being
grouped. Grouped changes are counted. Priority 1 and 2 alarms (critical, high) are always sent
individually, flood or not. A later change of an alarm whose raise was grouped (its clear, its
acknowledgement) is grouped too: a clear is never sent alone for a raise that was not sent.

A message carries the alarm change's content (daemon/alarms/message.py: alarm id, tag, area,
value, limit, unit ...) plus ``type``, ``site``, ``sensor`` (the tag), ``console`` (a link to the
alarm's page, when ``notify.console_url`` is set) and ``sent_at``.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from plantwatch.connectors.store import AlarmWrite
from plantwatch.connectors.webhook import WebhookSender, redact_url

from plantwatch.daemon.alarms.message import change_payload, console_link
from plantwatch.daemon.alarms.book import SEVERITY_RANK
from plantwatch.daemon.config.model import Config
from plantwatch.daemon.metrics import Metrics

log = logging.getLogger(__name__)


#: priority 1 and 2 (docs/alarms.md): never grouped under a flood
INDIVIDUAL_FROM = SEVERITY_RANK["high"]


def always_individual(severity: str) -> bool:
    return SEVERITY_RANK.get(severity, SEVERITY_RANK["critical"]) >= INDIVIDUAL_FROM


class Notifications:
    def __init__(self, cfg: Config, metrics: Metrics, tags: dict[int, str]):
        self.cfg = cfg
        self.m = metrics
        self.tags = tags
        #: alarms (detector, sensor id) whose raise was grouped under a flood: their later changes too
        self.grouped: set[tuple[str, int]] = set()
        n = cfg.notify
        self.senders: list[tuple[int, WebhookSender]] = []
        for wh in n.webhooks:
            lbl = wh.name or redact_url(wh.url)  # never the URL: it may carry the webhook's secret
            self.senders.append((SEVERITY_RANK[wh.min_severity], WebhookSender(
                wh.url, label=lbl, headers=wh.headers, queue=n.queue, attempts=wh.attempts, timeout=wh.timeout,
                backoff=n.backoff, max_backoff=n.max_backoff,
                on_drop=metrics.webhook.labels(lbl, "dropped").inc,
                on_fail=metrics.webhook.labels(lbl, "failed").inc,
                on_sent=metrics.webhook.labels(lbl, "sent").inc)))

    def offer(self, writes: list[AlarmWrite]) -> None:
        """Turn committed changes into messages; never blocks."""
        if not self.senders:
            return
        for w in writes:
            cause = w.cause or {}
            if cause.get("flood_started"):
                self._send({"type": "flood", "site": self.cfg.site.id, "position": cause["flood_started"], "time": w.t,
                            "text": "alarm flood: lower-priority consequential alarms are grouped under incidents"},
                           "critical")
            key = (w.detector_id, w.sensor_id)
            grouped = cause.get("flood") and cause.get("incident_role") == "consequence"
            if grouped and not always_individual(w.severity):
                self.grouped.add(key)
                self.m.notify_grouped.inc()
                continue
            if key in self.grouped:
                if w.to_state == "unack" and w.from_state != "unack":  # raised again, and sent: its own story
                    self.grouped.discard(key)
                else:  # the clear (or ack) of an alarm whose raise was grouped: not sent alone
                    if w.to_state == "normal":
                        self.grouped.discard(key)
                    self.m.notify_grouped.inc()
                    continue
            msg: dict[str, Any] = {"type": "alarm", "site": self.cfg.site.id, **change_payload(w),
                                   "sensor": self.tags.get(w.sensor_id, str(w.sensor_id)),
                                   "console": console_link(self.cfg.notify.console_url, w.alarm_id)}
            if cause.get("incident_role") == "cause":
                msg["incident"] = {"key": cause.get("incident"), "opened": True}
            self._send(msg, w.severity)

    def _send(self, msg: dict[str, Any], severity: str) -> None:
        rank = SEVERITY_RANK.get(severity, 0)
        for min_rank, s in self.senders:
            if rank >= min_rank or msg.get("to") in ("normal", "ack"):
                s.offer({**msg, "sent_at": time.time()})

    async def run(self) -> None:
        if not self.senders:
            return
        async with asyncio.TaskGroup() as tg:
            for _, s in self.senders:
                tg.create_task(s.run(), name=f"webhook {s.label}")
