"""Webhook notifications: POST JSON to configured URLs, with retries and exponential backoff.

Each webhook has its own bounded queue and sender task. :meth:`WebhookSender.offer` never
blocks or awaits: when the queue is full the *oldest* waiting notification is dropped (and
counted), so a dead endpoint costs memory bounded by the queue and never slows ingestion.

Webhook URLs often carry their secret in the path or query (Slack, Teams, Discord): a sender is
known in logs and metric labels only by its ``label`` (the configured name, or
:func:`redact_url`), never by its URL.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

log = logging.getLogger(__name__)


@dataclass
class WebhookStats:
    sent: int = 0
    failed: int = 0  # gave up after all attempts
    dropped: int = 0  # queue full
    retries: int = 0


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` of a URL: no user info, path, query or fragment."""
    try:
        u = urlsplit(url)
        host = u.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{u.port}" if u.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{u.scheme}://{host}{port}"


class WebhookSender:
    def __init__(self, url: str, *, label: str | None = None, headers: dict[str, str] | None = None,
                 queue: int = 1000, attempts: int = 6, timeout: float = 5.0, backoff: float = 0.5,
                 max_backoff: float = 60.0, on_drop=None, on_fail=None, on_sent=None):
        self.url = url
        self.label = label or redact_url(url)
        self.headers = {"Content-Type": "application/json", "User-Agent": "plantwatch", **(headers or {})}
        self.attempts = attempts
        self.timeout = timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._q: collections.deque[dict[str, Any]] = collections.deque(maxlen=queue)
        self._wake = asyncio.Event()
        self.stats = WebhookStats()
        self._on_drop, self._on_fail, self._on_sent = on_drop, on_fail, on_sent

    def offer(self, message: dict[str, Any]) -> None:
        if len(self._q) == self._q.maxlen:
            self.stats.dropped += 1
            if self._on_drop:
                self._on_drop()
        self._q.append(message)
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._q)

    async def run(self) -> None:
        """Send until cancelled."""
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout, headers=self.headers) as http:
            while True:
                if not self._q:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                msg = self._q[0]
                ok = await self._deliver(http, msg)
                if self._q and self._q[0] is msg:
                    self._q.popleft()
                if ok:
                    self.stats.sent += 1
                    if self._on_sent:
                        self._on_sent()
                else:
                    self.stats.failed += 1
                    if self._on_fail:
                        self._on_fail()

    async def _deliver(self, http: aiohttp.ClientSession, msg: dict[str, Any]) -> bool:
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                async with http.post(self.url, json=msg) as r:
                    if 200 <= r.status < 300:
                        return True
                    if 400 <= r.status < 500 and r.status not in (408, 429):
                        log.warning("webhook %s refused a notification: HTTP %d", self.label, r.status)
                        return False
                    why = f"HTTP {r.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                why = f"{type(e).__name__}: {e}"
            if attempt == self.attempts:
                log.warning("webhook %s: giving up after %d attempts (%s)", self.label, attempt,
                            why.replace(self.url, self.label))  # client errors may quote the URL
                return False
            self.stats.retries += 1
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, self.max_backoff)
        return False
