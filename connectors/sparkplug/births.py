"""Sparkplug B edge-node sessions in the database (tables of migration 140): what each node's
births declared (``bdSeq``, metric names, aliases, datatypes, per device too) and its last
sequence number.

:func:`write_session_changes` runs inside the write transaction of the unit whose messages made
the changes, so a stored session never runs ahead of or behind the stored readings: what the
broker redelivers after a restart (everything not acknowledged, i.e. not committed) continues
exactly where the stored session ends. :func:`load_sessions` reads them back at start and when a
partition is taken over. Units commit in parallel, so every statement is guarded by the
message's arrival order: an older message never overwrites a newer one's state.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import asyncpg

from .session import MetricTable, SessionChange, StoredNode


async def write_session_changes(conn: asyncpg.Connection, changes: Sequence[SessionChange]) -> None:
    """Apply ``changes`` (births and deaths in arrival order, then the last sequence number of
    each node) inside the caller's transaction."""
    seqs: dict[tuple[str, str], SessionChange] = {}
    for c in changes:
        key = (c.group, c.node)
        if c.seq is not None and (key not in seqs or seqs[key].order < c.order):
            seqs[key] = c
        if c.kind == "nbirth":
            await conn.execute(
                "INSERT INTO sparkplug_nodes AS n (grp, node, bd_seq, metrics, birth_order, seq, seq_order)"
                " VALUES ($1, $2, $3, $4::text::jsonb, $5, $6, $5) ON CONFLICT (grp, node) DO UPDATE SET"
                " bd_seq = EXCLUDED.bd_seq, metrics = EXCLUDED.metrics, birth_order = EXCLUDED.birth_order,"
                " seq = CASE WHEN EXCLUDED.seq_order > n.seq_order THEN EXCLUDED.seq ELSE n.seq END,"
                " seq_order = GREATEST(n.seq_order, EXCLUDED.seq_order), updated_at = now()"
                " WHERE EXCLUDED.birth_order > n.birth_order",
                c.group, c.node, c.bd_seq, json.dumps(c.table.to_json()), c.order, c.seq)
            # an NBIRTH forgets the node's devices: they send their DBIRTH again
            await conn.execute("DELETE FROM sparkplug_devices WHERE grp = $1 AND node = $2 AND birth_order < $3",
                               c.group, c.node, c.order)
        elif c.kind == "ndeath":
            await conn.execute("DELETE FROM sparkplug_nodes WHERE grp = $1 AND node = $2 AND birth_order < $3"
                               " AND seq_order < $3", c.group, c.node, c.order)
            await conn.execute("DELETE FROM sparkplug_devices WHERE grp = $1 AND node = $2 AND birth_order < $3",
                               c.group, c.node, c.order)
        elif c.kind == "dbirth":
            await conn.execute(
                "INSERT INTO sparkplug_devices AS d (grp, node, device, metrics, birth_order)"
                " VALUES ($1, $2, $3, $4::text::jsonb, $5) ON CONFLICT (grp, node, device) DO UPDATE SET"
                " metrics = EXCLUDED.metrics, birth_order = EXCLUDED.birth_order, updated_at = now()"
                " WHERE EXCLUDED.birth_order > d.birth_order",
                c.group, c.node, c.device, json.dumps(c.table.to_json()), c.order)
        elif c.kind == "ddeath":
            await conn.execute("DELETE FROM sparkplug_devices WHERE grp = $1 AND node = $2 AND device = $3"
                               " AND birth_order < $4", c.group, c.node, c.device, c.order)
    if seqs:
        # a row without metrics (a sequence number seen after the node's death) is no session
        await conn.executemany(
            "INSERT INTO sparkplug_nodes AS n (grp, node, seq, seq_order) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (grp, node) DO UPDATE SET seq = EXCLUDED.seq, seq_order = EXCLUDED.seq_order,"
            " updated_at = now() WHERE EXCLUDED.seq_order > n.seq_order",
            [(c.group, c.node, c.seq, c.order) for c in seqs.values()])


async def load_sessions(pool: asyncpg.Pool, groups: Iterable[str]) -> list[StoredNode]:
    """The stored sessions of the nodes of ``groups`` that have a birth."""
    groups = list(groups)
    async with pool.acquire() as conn:
        nodes = await conn.fetch("SELECT grp, node, bd_seq, seq, metrics::text AS metrics FROM sparkplug_nodes"
                                 " WHERE grp = ANY($1::text[]) AND metrics IS NOT NULL", groups)
        devices = await conn.fetch("SELECT grp, node, device, metrics::text AS metrics FROM sparkplug_devices"
                                   " WHERE grp = ANY($1::text[])", groups)
    by_node: dict[tuple[str, str], dict[str, MetricTable]] = {}
    for d in devices:
        by_node.setdefault((d["grp"], d["node"]), {})[d["device"]] = MetricTable.from_json(json.loads(d["metrics"]))
    return [StoredNode(r["grp"], r["node"], r["bd_seq"], r["seq"], MetricTable.from_json(json.loads(r["metrics"])),
                       by_node.get((r["grp"], r["node"]), {})) for r in nodes]
