"""Alarm management inside the daemon: builds the lifecycle-aware AlarmBook from the database,
and runs (as one supervised task) the alarm clock (shelve expiry, incident closing), the
operator API/console and the webhook notifiers. Wired into ``daemon/service.py`` by a few lines.
"""
from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from plantwatch.connectors.store import AlarmWrite, Store

from plantwatch.daemon.config.model import Config
from plantwatch.daemon.alarms.lifecycle import ManagedAlarmBook
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.alarms.notify import Notifications

log = logging.getLogger(__name__)


class AlarmManagement:
    def __init__(self, cfg: Config, store: Store, metrics: Metrics, *, config_hash: str | None = None):
        self.cfg = cfg
        self.store = store
        self.m = metrics
        self.config_hash = config_hash
        self.book: ManagedAlarmBook | None = None
        self.pipeline = None
        self.notifications: Notifications | None = None
        self.api_started = asyncio.Event()

    async def make_book(self, db_ids: np.ndarray) -> ManagedAlarmBook:
        """The book with every alarm's state (and open incidents) as last committed."""
        book = ManagedAlarmBook(db_ids, self.cfg, config_hash=self.config_hash)
        rows, incidents = await self.store.alarm_records.book_state(book.position_of_area)
        book.load(rows)
        book.load_incidents(incidents)
        self.book = book
        self.notifications = Notifications(self.cfg, self.m, dict(book.tag_of))
        return book

    def bind(self, pipeline) -> None:
        self.pipeline = pipeline

    def offer(self, writes: list[AlarmWrite]) -> None:
        if self.notifications is not None:
            self.notifications.offer(writes)

    async def submit(self, ops: list) -> asyncio.Future:
        return await self.pipeline.submit_alarm_ops(ops)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._clock(), name="alarm-clock")
            if self.notifications is not None:
                tg.create_task(self.notifications.run(), name="webhooks")
            if self.cfg.api is not None and self.cfg.api.port:
                tg.create_task(self._api(), name="api")

    async def _clock(self, every: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every)
            now = time.time()
            ops = self.book.expire_shelves(now) + self.book.close_incidents(now)
            if ops:
                await self.pipeline.submit_alarm_ops(ops)
            for pos, on in self.book.in_flood().items():
                self.m.alarm_flood.labels(pos).set(1 if on else 0)

    async def _api(self) -> None:
        from plantwatch.daemon.alarms.api import Api, Tokens, serve
        from plantwatch.daemon.alarms.report import incident_report_html

        api_cfg = self.cfg.api
        tokens = Tokens.from_config(api_cfg)
        if not len(tokens):
            log.warning("api: no tokens configured: every request will be refused")

        async def report(incident_id: int) -> str:
            return await incident_report_html(self.store.alarm_records, incident_id)

        api = Api(records=self.store.alarm_records, book=self.book, submit=self.submit, tokens=tokens, site=self.cfg.site.id,
                  report=report, metrics=self.m, health=self.pipeline.health, db_timeout=api_cfg.db_timeout)
        await serve(api, api_cfg.host, api_cfg.port, self.api_started,
                    tls=api_cfg.tls.settings() if api_cfg.tls else None)
