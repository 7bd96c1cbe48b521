"""Alarm management inside the daemon: :func:`load_book` builds the lifecycle-aware AlarmBook
from the database; :class:`AlarmManagement` gets that book and the alarm intake (the pipeline's
ordered alarm write path, an :class:`AlarmIntake`) at construction and runs (as one supervised task) the alarm clock (shelve expiry, incident closing), the
operator API/console and the webhook notifiers. Wired into ``daemon/service.py`` by a few lines.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

import numpy as np

from plantwatch.connectors.store import AlarmOp, AlarmWrite, Store

from plantwatch.daemon.config.model import Config
from plantwatch.daemon.alarms.lifecycle import ManagedAlarmBook
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.alarms.notify import Notifications
from plantwatch.daemon.alarms.console_push import ConsolePush

log = logging.getLogger(__name__)


class AlarmIntake(Protocol):
    """What alarm management needs of the pipeline (daemon/ingest/pipeline.py)."""

    async def submit_alarm_ops(self, ops: list[AlarmOp]) -> asyncio.Future:
        """Queue alarm ops on the ordered alarm write path; the future resolves at their commit."""

    def health(self, now: float | None = None) -> tuple[bool, str]:
        """(healthy, reason) of the write path, for the API's health endpoint."""


async def load_book(cfg: Config, store: Store, db_ids: np.ndarray, *,
                    config_hash: str | None = None) -> ManagedAlarmBook:
    """The book with every alarm's state (and open incidents) as last committed."""
    book = ManagedAlarmBook(db_ids, cfg, config_hash=config_hash)
    rows, incidents = await store.alarm_records.book_state(book.position_of_area)
    book.load(rows)
    book.load_incidents(incidents)
    return book


class AlarmManagement:
    def __init__(self, cfg: Config, store: Store, metrics: Metrics, book: ManagedAlarmBook, intake: AlarmIntake):
        self.cfg = cfg
        self.store = store
        self.m = metrics
        self.book = book
        self.intake = intake
        self.notifications = Notifications(cfg, metrics, dict(book.tag_of))
        self.api_started = asyncio.Event()
        self.console_push = ConsolePush()  # the console's live stream: told of every committed change

    def offer(self, writes: list[AlarmWrite]) -> None:
        self.notifications.offer(writes)
        self.console_push.changed()

    async def submit(self, ops: list) -> asyncio.Future:
        return await self.intake.submit_alarm_ops(ops)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._clock(), name="alarm-clock")
            tg.create_task(self.notifications.run(), name="webhooks")
            if self.cfg.api is not None and self.cfg.api.port:
                tg.create_task(self._api(), name="api")

    async def listening(self) -> None:
        """Return once the operator API listens (at once when none is configured). A port that
        cannot be bound ends :meth:`run` with a StartupError, which stops the daemon's start."""
        if self.cfg.api is not None and self.cfg.api.port:
            await self.api_started.wait()

    async def _clock(self, every: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every)
            now = time.time()
            ops = self.book.expire_shelves(now) + self.book.close_incidents(now)
            if ops:
                await self.intake.submit_alarm_ops(ops)
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
                  report=report, metrics=self.m, health=self.intake.health, db_timeout=api_cfg.db_timeout,
                  push=self.console_push, secure_cookie=api_cfg.tls is not None)
        await serve(api, api_cfg.host, api_cfg.port, self.api_started,
                    tls=api_cfg.tls.settings() if api_cfg.tls else None)
