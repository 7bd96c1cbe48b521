"""Sparkplug B on a partitioned site (``cluster:``): nodes are partitioned by ``group/node`` like
collectors; each partition's session subscribes to its own nodes' topics and, with a host id,
publishes its own STATE (``{host_id}-p{k}``); a node's session (births, aliases, last seq) moves
with its partition, so data after a hand-over or a takeover is stored without a rebirth. The
nodes' payloads are pysparkplug's; real Mosquitto, TimescaleDB, two daemon processes."""
from __future__ import annotations

import asyncio
import time
import uuid
import zlib

import aiomqtt
import asyncpg
import pysparkplug as ps
import pytest

from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.ingest.partitions import Partitioner

from .helpers import DaemonProcess, new_metrics_port, site_config
from .test_sparkplug import DT, _ms, _until
from .test_sparkplug_sessions import watch_commands

P, LEASE, RENEW = 2, 4.0, 1.0


def _nodes(group: str) -> list[str]:
    """Two node ids, the first in partition 0, the second in partition 1."""
    out: dict[int, str] = {}
    i = 0
    while len(out) < P:
        out.setdefault(zlib.crc32(f"{group}/n{i}".encode()) % P, f"n{i}")
        i += 1
    return [out[k] for k in range(P)]


def _text(group: str, nodes: list[str], *, name: str = "a", by_name: bool = False, mqtt=("localhost", 1883),
          dsn: str | None = None, client_id: str = "pw", port: int = 0, host_id: str = "pw") -> str:
    detectors = "detectors:\n  - {id: silent, type: stale, select: {areas: [area1, area2]}, params: {timeout: 3600}}\n"
    text = site_config(n_gas=len(nodes), mqtt=mqtt, dsn=dsn, client_id=client_id, metrics_port=port,
                       detectors=detectors, ingest="{flush_interval: 0.05}", state="{snapshot_interval: 2}")
    text = text.replace("sensors:\n", f"cluster: {{instance_id: {name}, partitions: {P}, lease_seconds: {LEASE},"
                                      f" renew_interval: {RENEW}}}\nsensors:\n", 1)
    return text + (f"sparkplug:\n  groups: [{group}]\n  host_id: {host_id}\n  by_name: {str(by_name).lower()}\n"
                   "  metrics:\n" + "".join(f"    - {{source: {group}/{n}, metric: H2S, sensor: G{i}}}\n"
                                            for i, n in enumerate(nodes)))


def test_sparkplug_with_cluster_loads_and_partitions_nodes_by_group_and_node():
    """Was refused at load ("sparkplug: not supported together with cluster")."""
    nodes = _nodes("plant")
    cfg = load_config_text(_text("plant", nodes))
    part = Partitioner(cfg)
    assert [part.part_of(f"plant/{n}") for n in nodes] == [0, 1]
    assert part.part_of("plant/unmapped") == 0
    t1, shared1 = part.topics(1)
    assert [t for t in t1 if t.startswith("spBv1.0")] == [f"spBv1.0/plant/+/{nodes[1]}", f"spBv1.0/plant/+/{nodes[1]}/+"]
    assert part.mine(1)(f"spBv1.0/plant/DDATA/{nodes[1]}/d") and not part.mine(1)(f"spBv1.0/plant/NDATA/{nodes[0]}")
    t0, _ = part.topics(0)
    assert f"spBv1.0/plant/+/{nodes[0]}" in t0 and "spBv1.0/plant/#" not in t0
    # by_name: unmapped nodes may feed sensors, so partition 0 takes the groups' wildcard and leaves
    # the other partitions' nodes to them
    wide = Partitioner(load_config_text(_text("plant", nodes, by_name=True)))
    t0, shared0 = wide.topics(0)
    assert "spBv1.0/plant/#" in t0 and shared0 and not wide.mine(0)(f"spBv1.0/plant/NDATA/{nodes[1]}")
    assert wide.topics(1)[0] == t1


def test_config_check_prints_each_nodes_primary_host(tmp_path, capsys):
    """With cluster and host_id, each node must name its partition's host id (``{host_id}-p{k}``):
    ``plantwatch config check`` prints the mapping (nothing printed it before)."""
    from plantwatch.daemon.cli.main import main

    nodes = _nodes("plant")
    f = tmp_path / "site.yaml"
    f.write_text(_text("plant", nodes, host_id="north"))
    assert main(["config", "check", str(f), "--skip-files"]) == 0
    out = capsys.readouterr().out
    assert "Sparkplug primary host of each node (2 partitions" in out, out
    assert f"plant/{nodes[0]}: north-p0" in out and f"plant/{nodes[1]}: north-p1" in out, out
    assert Partitioner(load_config_text(_text("plant", nodes).replace("partitions: 2", "partitions: 1"))
                       ).primary_hosts() == {}


class Node:
    def __init__(self, c: aiomqtt.Client, group: str, node: str):
        self.c, self.group, self.node, self.seq = c, group, node, 0

    async def send(self, kind: str, payload) -> None:
        await self.c.publish(f"spBv1.0/{self.group}/{kind}/{self.node}", payload.encode(), qos=1)

    async def birth(self, ms: int, v: float) -> None:
        self.seq = 1
        await self.send("NBIRTH", ps.NBirth(ms, 0, [ps.Metric(ms, "bdSeq", DT.INT64, 0),
                                                     ps.Metric(ms, "H2S", DT.FLOAT, v, alias=5)]))

    async def data(self, ms: int, v: float) -> None:
        s, self.seq = self.seq, (self.seq + 1) % 256
        await self.send("NDATA", ps.NData(ms, s, [ps.Metric(ms, None, DT.FLOAT, v, alias=5)]))


@pytest.mark.slow
async def test_node_sessions_move_with_their_partitions(tmp_path, mosquitto, db):
    group = f"g{uuid.uuid4().hex[:10]}"
    names = _nodes(group)
    client_id, host_id = f"pwc-{uuid.uuid4().hex[:8]}", f"pw{uuid.uuid4().hex[:6]}"
    procs = {}
    for name in ("a", "b"):
        port = new_metrics_port()
        (tmp_path / f"{name}.yaml").write_text(_text(group, names, name=name, mqtt=(mosquitto.host, mosquitto.port),
                                                     dsn=db, client_id=client_id, port=port, host_id=host_id))
        procs[name] = DaemonProcess(tmp_path / f"{name}.yaml", port)
    a, b = procs["a"], procs["b"]
    conn = await asyncpg.connect(db)
    try:
        a.start()
        await a.wait_connected()
        await _until(conn, "SELECT count(*) FROM partition_leases WHERE holder = 'a' AND expires_at > now()", P)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, max_inflight_messages=1000) as pub, \
                aiomqtt.Client(mosquitto.host, mosquitto.port) as watcher:
            commands, watching = await watch_commands(watcher, group)
            nodes = [Node(pub, group, n) for n in names]
            t = _ms() - 120_000
            for n in nodes:
                await n.birth(t, 1.0)
                await n.data(t + 1000, 2.0)
            await _until(conn, "SELECT count(*) FROM readings", 4)

            # b joins: a hands one partition over (drained, state saved); its node's session goes with it
            b.start()
            await b.wait_connected()
            await _until(conn, "SELECT count(DISTINCT holder) FROM partition_leases WHERE expires_at > now()", 2, timeout=60)
            for i in range(5):
                for n in nodes:
                    await n.data(t + 10_000 + i * 1000, 10.0 + i)
            await _until(conn, "SELECT count(*) FROM readings", 14, timeout=60)

            # a dies: b takes its partition over when the lease expires; what the node published
            # meanwhile (QoS 1, kept in the partition's session) is stored with the restored session
            a.kill()
            for i in range(5):
                for n in nodes:
                    await n.data(t + 20_000 + i * 1000, 20.0 + i)
            await _until(conn, "SELECT count(*) FROM partition_leases WHERE holder = 'b' AND expires_at > now()", P,
                         timeout=LEASE + 30)
            await _until(conn, "SELECT count(*) FROM readings", 24, timeout=60)
            dead = await conn.fetch("SELECT reason, topic FROM dead_letters")
            assert [tuple(r) for r in dead] == []
            await asyncio.sleep(1.0)
            assert commands == []  # every node's session was known: no rebirth asked for
            restored = b.metrics().get("plantwatch_sparkplug_sessions_restored_total", 0)
            assert restored >= 2, b.log()
            # each partition's STATE: ONLINE, retained, published by b
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as late:
                await late.subscribe("spBv1.0/STATE/+", qos=1)
                states: dict[str, bool] = {}
                async with asyncio.timeout(10):
                    async for m in late.messages:
                        if str(m.topic).startswith(f"spBv1.0/STATE/{host_id}-"):
                            states[str(m.topic)] = ps.State.decode(m.payload).online
                        if len(states) == P:
                            break
                assert states == {f"spBv1.0/STATE/{host_id}-p{k}": True for k in range(P)}
            watching.cancel()
        assert b.terminate() == 0, b.log()
    finally:
        await conn.close()
        for d in procs.values():
            if d.proc and d.proc.poll() is None:
                d.kill()
