"""The operator console's own routes (registered by daemon/alarms/api.py):

* ``GET  /api/console/alarms``        the alarm summary: every alarm not normal with the columns of
  a DCS summary (condition that alarmed, value at alarm and live value with unit, limit, area and
  operator position, shelved/suppressed details), the flood state of every operator position;
* ``GET  /api/console/alarms/{id}``   the detail of one alarm: its summary row, its life (changes and
  operator actions), the tag's trend (the last 30 minutes and the alarm's span) with the limits,
  the detector's config and the related incident;
* ``POST /api/alarms/ack``            acknowledge many alarms at once (the selected rows, the visible
  page, or every alarm of an incident: ``{"ids": [...]}`` or ``{"incident": N}``); each alarm is
  one operator action in the audit chain, all queued in one go;
* ``GET  /api/stream``                live updates (daemon/alarms/console_push.py).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from aiohttp import web

from plantwatch.connectors.alarm_records import AlarmRecords

from plantwatch.daemon.alarms.api_input import ack_many_body
from plantwatch.daemon.alarms.console_push import ConsolePush
from plantwatch.daemon.alarms.console_session import USER
from plantwatch.daemon.alarms.lifecycle import ACTIONS, ActionError, ManagedAlarmBook

log = logging.getLogger(__name__)

#: the detector parameters drawn as limits in the trend (when the detector has them)
LIMIT_NAMES = ("high_high", "high", "low", "low_low")
#: seconds of trend before now (and before the alarm was raised, when that is earlier)
TREND_SPAN = 1800.0


class ConsoleRoutes:
    def __init__(self, *, records: AlarmRecords, book: ManagedAlarmBook,
                 submit: Callable[[list], Awaitable[asyncio.Future]], push: ConsolePush, site: str,
                 json_response: Callable[..., web.Response], path_id: Callable[[web.Request, str], int]):
        self.records = records
        self.book = book
        self.submit = submit
        self.push = push
        self.site = site
        self._json = json_response
        self._path_id = path_id

    def register(self, r: web.UrlDispatcher) -> None:
        r.add_get("/api/console/alarms", self.summary)
        r.add_get("/api/console/alarms/{id}", self.detail)
        r.add_post("/api/alarms/ack", self.ack_many)
        r.add_get("/api/stream", self.push.stream)

    # --- reads --------------------------------------------------------------------------------------
    def _limit(self, row: dict[str, Any]) -> float | None:
        cond = row.get("alarm_condition") or row.get("condition")
        if cond in ("over_range", "above_range"):
            return self.book.range_top.get(self.book.sid_of.get(row["sensor"], -1))
        return self.book.levels.get(row["detector_id"], {}).get(cond)

    def _annotate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.book.security.annotate(rows, None)
        for r in rows:
            r["limit"] = self._limit(r)
        return rows

    def flood_by_position(self) -> dict[str, bool]:
        positions = dict.fromkeys(sorted(set(self.book.position_of_area.values()) | {"site"}), False)
        positions.update(self.book.in_flood())
        return positions

    async def summary(self, request: web.Request) -> web.Response:
        rows = self._annotate(await self.records.console_summary())
        return self._json({"site": self.site, "time": time.time(), "version": self.push.version,
                           "flood": self.flood_by_position(), "alarms": rows})

    async def detail(self, request: web.Request) -> web.Response:
        alarm_id = self._path_id(request, "alarm")
        row = await self.records.console_row(alarm_id)
        if row is None:
            return self._json({"error": "no such alarm"}, status=404)
        self._annotate([row])
        life = await self.records.get_alarm(alarm_id) or {}
        now = time.time()
        t0 = min(now - TREND_SPAN, (row["raised_at"] or now) - 300)
        points = await self.records.trend(row["sensor"], t0, now)
        levels = self.book.levels.get(row["detector_id"], {})
        limits = {k: levels[k] for k in LIMIT_NAMES if k in levels}
        det = self.book.detector_cfg.get(row["detector_id"])
        incident = await self.records.get_incident(row["incident_id"]) if row["incident_id"] else None
        return self._json({
            "alarm": row, "changes": life.get("changes", []), "actions": life.get("actions", []),
            "trend": {"from": t0, "to": now, "points": points, "limits": limits, "unit": row["unit"]},
            "detector": det.model_dump(mode="json") if det is not None else {"id": row["detector_id"]},
            "incident": None if incident is None else {
                "id": incident["id"], "title": incident["title"], "started_at": incident["started_at"],
                "ended_at": incident["ended_at"], "alarms": len(incident["alarms"])}})

    # --- acknowledge many ---------------------------------------------------------------------------
    async def ack_many(self, request: web.Request) -> web.Response:
        user = request[USER]
        body = ack_many_body(await request.read())  # InputError: 400 with the reason
        if user.role not in ACTIONS["ack"]:
            return self._json({"error": f"role {user.role!r} may not ack"}, status=403)
        if body.incident is not None:
            ids = await self.records.incident_alarm_ids(body.incident)
            if ids is None:
                return self._json({"error": "no such incident"}, status=404)
        else:
            ids = list(dict.fromkeys(body.ids or []))
        keys = await self.records.alarm_keys(ids)
        ops: list = []
        acked: list[int] = []
        skipped: list[dict[str, Any]] = []
        for alarm_id in ids:  # mutate the book and queue the ops with no await in between (ordering)
            key = keys.get(alarm_id)
            if key is None:
                skipped.append({"id": alarm_id, "error": "no such alarm"})
                continue
            try:
                ops += self.book.act(key, "ack", actor=user.name, role=user.role, reason=body.reason)
            except ActionError as e:
                skipped.append({"id": alarm_id, "error": str(e)})
                continue
            acked.append(alarm_id)
        if ops:
            fut = await self.submit(ops)
            refused = await asyncio.wait_for(asyncio.shield(fut), 60)
            if refused:
                log.error("%s (%s) ack of %d alarms: the database refused to record it", user.name, user.role,
                          len(acked))
                return self._json({"error": "the database refused to record these acknowledgements (kept in"
                                            " dead_letters as unstorable)"}, status=500)
        log.info("%s (%s) acknowledged %d alarms (%d skipped)", user.name, user.role, len(acked), len(skipped))
        return self._json({"acked": acked, "skipped": skipped})
