"""The detector-driven writes of a pipeline unit: events opened and closed, alarm rows and their
changes with the audit entry of each change, in order, inside the unit's transaction; the alarm
management ops among them (operator actions, incidents) go to :func:`.alarm_db.apply_op`."""
from __future__ import annotations

import json
from typing import Sequence

import asyncpg

from . import alarm_db, audit
from .alarm_db import audit_alarm_write, ts as _ts
from .records import AlarmOp, AlarmWrite, EventEnd, EventStart


async def apply_alarm_ops(conn: asyncpg.Connection, ops: Sequence[AlarmOp]) -> list[int]:
    """Apply event and alarm operations in order; returns the ids of the alarms written."""
    ids: list[int] = []
    for op in ops:
        if not isinstance(op, (EventStart, EventEnd, AlarmWrite)):  # alarm management: actions, incidents
            await alarm_db.apply_op(conn, op)
        elif isinstance(op, EventStart):
            await conn.execute(
                "INSERT INTO events (detector_id, detector, sensor_id, condition, severity, started_at, start_score,"
                " peak_score) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT DO NOTHING",
                op.detector_id, op.detector, op.sensor_id, op.condition, op.severity, _ts(op.t), op.score)
        elif isinstance(op, EventEnd):
            await conn.execute(
                "UPDATE events SET ended_at = $3, peak_score = GREATEST(peak_score, $4)"
                " WHERE detector_id = $1 AND sensor_id = $2 AND ended_at IS NULL",
                op.detector_id, op.sensor_id, _ts(op.t), op.peak)
        else:
            alarm_id = await conn.fetchval(
                "INSERT INTO alarms AS a (detector_id, sensor_id, state, active, condition, severity, raised_at,"
                " cleared_at, event_id, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7 THEN $9::timestamptz END,"
                "  CASE WHEN $8 THEN $9::timestamptz END,"
                "  (SELECT id FROM events WHERE detector_id = $1 AND sensor_id = $2 AND ended_at IS NULL"
                "   ORDER BY started_at DESC LIMIT 1), now())"
                " ON CONFLICT (detector_id, sensor_id) DO UPDATE SET state = EXCLUDED.state,"
                "  active = EXCLUDED.active, condition = EXCLUDED.condition, severity = EXCLUDED.severity,"
                "  raised_at = CASE WHEN $7 THEN EXCLUDED.raised_at ELSE a.raised_at END,"
                "  cleared_at = CASE WHEN $8 THEN EXCLUDED.cleared_at WHEN $7 THEN NULL ELSE a.cleared_at END,"
                "  event_id = COALESCE(EXCLUDED.event_id, a.event_id),"
                "  acked_at = CASE WHEN $7 THEN NULL ELSE a.acked_at END,"
                "  acked_by = CASE WHEN $7 THEN NULL ELSE a.acked_by END, updated_at = now()"
                " RETURNING id",
                op.detector_id, op.sensor_id, op.to_state, op.active, op.condition, op.severity, op.raised,
                op.cleared, _ts(op.t))
            change_id = await conn.fetchval(
                "INSERT INTO alarm_changes (alarm_id, time, from_state, to_state, condition, severity, cause)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb) RETURNING id",
                alarm_id, _ts(op.t), op.from_state, op.to_state, op.condition, op.severity,
                json.dumps(audit.clean(op.cause)))
            await audit_alarm_write(conn, alarm_id, change_id, op)  # same transaction: tamper-evident
            ids.append(alarm_id)
    return ids
