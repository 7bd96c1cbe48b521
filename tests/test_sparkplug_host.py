"""plantwatch as a Sparkplug 3.0 primary host application: its STATE on spBv1.0/STATE/<host_id>
(Will OFFLINE, ONLINE after subscribing, OFFLINE before a clean disconnect, one timestamp per
connection, newer on each), an edge node that publishes only while its primary host is ONLINE
and stores its data meanwhile, and its history flushed after the host comes back: the
``is_historical`` metrics are stored with their own timestamps and not judged as live values
(a historical value over the limit raises no alarm; the same value live does). The edge node's
payloads (and its reading of STATE) are pysparkplug's; real Mosquitto, TimescaleDB, the daemon
as a process."""
from __future__ import annotations

import asyncio
import time
import uuid

import aiomqtt
import asyncpg
import pysparkplug as ps

from plantwatch.connectors.sparkplug.host import HostState, read_state

from .helpers import DaemonProcess, new_metrics_port, site_config
from .test_sparkplug import DT, _ms, _until

LIMIT_ALARMS = "SELECT count(*) FROM alarms a JOIN sensors s ON s.id = a.sensor_id WHERE s.tag = 'G0' AND a.detector_id = 'h2s-limit'"


def test_state_timestamps_will_and_answer():
    h = HostState("pw")
    topic, will = h.next_connection(now=1000.0)
    assert (topic, read_state(will), read_state(h.online())) == ("spBv1.0/STATE/pw", (False, 1_000_000), (True, 1_000_000))
    _, will2 = h.next_connection(now=999.0)  # a clock that stepped back: still newer than the last connection
    assert read_state(will2) == (False, 1_000_001) and read_state(h.offline()) == (False, 1_000_001)
    assert h.answer(ps.State(5, False).encode()) == h.online()  # an OFFLINE of our id while here: ONLINE again
    assert h.answer(ps.State(5, True).encode()) is None and h.answer(b"not json") is None


class PrimaryHostNode:
    """An edge node configured with a primary host: it publishes only while the host's latest
    STATE (by timestamp) is ONLINE, keeps what it measures meanwhile, and after the host comes
    back sends a new NBIRTH and then its history as is_historical metrics."""

    def __init__(self, c: aiomqtt.Client, group: str, host_id: str):
        self.c, self.group, self.host_id = c, group, host_id
        self.states: list[tuple[ps.State, bool]] = []  # (state, retained) in arrival order
        self.online = asyncio.Event()
        self.last_ts = -1
        self.seq = 0
        self.bd_seq = 0
        self.history: list[tuple[int, float]] = []

    async def follow(self, sub: aiomqtt.Client) -> None:
        """Read the primary host's STATE (on a connection of its own)."""
        await sub.subscribe(f"spBv1.0/STATE/{self.host_id}", qos=1)
        async for m in sub.messages:
            st = ps.State.decode(m.payload)
            self.states.append((st, m.retain))
            if st.timestamp < self.last_ts:
                continue  # older than what we saw: a late Will of an earlier connection
            self.last_ts = st.timestamp
            if st.online:
                self.online.set()
            else:
                self.online.clear()

    def _next(self) -> int:
        s, self.seq = self.seq, (self.seq + 1) % 256
        return s

    async def birth(self, v: float) -> None:
        ms = _ms()
        self.seq = 0
        await self.c.publish(f"spBv1.0/{self.group}/NBIRTH/edge1", ps.NBirth(ms, self._next(), [
            ps.Metric(ms, "bdSeq", DT.INT64, self.bd_seq), ps.Metric(ms, "Node/H2S", DT.FLOAT, v, alias=1)]).encode(), qos=1)

    async def measure(self, ms: int, v: float) -> None:
        if not self.online.is_set():
            self.history.append((ms, v))
            return
        await self.c.publish(f"spBv1.0/{self.group}/NDATA/edge1", ps.NData(ms, self._next(), [
            ps.Metric(ms, None, DT.FLOAT, v, alias=1)]).encode(), qos=1)

    async def flush_history(self) -> None:
        metrics = [ps.Metric(ms, None, DT.FLOAT, v, alias=1, is_historical=True) for ms, v in self.history]
        await self.c.publish(f"spBv1.0/{self.group}/NDATA/edge1", ps.NData(_ms(), self._next(), metrics).encode(), qos=1)
        self.history.clear()


async def test_primary_host_state_and_history_flush(tmp_path, mosquitto, db):
    group, host_id = f"g{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex[:8]}"
    port = new_metrics_port()
    detectors = ("detectors:\n"
                 "  - {id: silent, type: stale, select: {areas: [area1, area2]}, params: {timeout: 3600}}\n"
                 "  - {id: h2s-limit, type: limit, select: {kind: gas}, params: {high: 5, high_high: 10, deadband: 0.5}}\n")
    text = site_config(n_gas=2, mqtt=(mosquitto.host, mosquitto.port), dsn=db, client_id=f"pw-{uuid.uuid4().hex[:8]}",
                       metrics_port=port, detectors=detectors) + (
        f"sparkplug:\n  groups: [{group}]\n  host_id: {host_id}\n"
        f"  metrics:\n    - {{source: {group}/edge1, metric: Node/H2S, sensor: G0}}\n")
    (tmp_path / "site.yaml").write_text(text)
    d = DaemonProcess(tmp_path / "site.yaml", port)
    conn = await asyncpg.connect(db)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as sub, aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
        node = PrimaryHostNode(pub, group, host_id)
        following = asyncio.create_task(node.follow(sub))
        try:
            # the host is not there yet: the node publishes nothing, it keeps its measurements
            t0 = _ms() - 20_000
            await node.measure(t0, 1.0)
            await asyncio.sleep(0.5)
            assert node.states == [] and node.history == [(t0, 1.0)]
            d.start()
            await asyncio.wait_for(node.online.wait(), 60)
            first, retained = node.states[-1]
            assert first.online and retained is False  # live, not a retained one
            await node.birth(2.0)
            await node.flush_history()  # what it measured before the host was there
            await node.measure(t0 + 1000, 2.5)
            await _until(conn, "SELECT count(*) FROM readings", 3)

            # the host stops: OFFLINE, retained, with the timestamp of its ONLINE; the node keeps
            # its measurements (one over the limit) until the host is back
            assert d.terminate() == 0, d.log()
            await _until_state(node, online=False)
            off, _ = node.states[-1]
            assert off.timestamp == first.timestamp
            await node.measure(t0 + 5000, 50.0)
            await node.measure(t0 + 6000, 3.0)
            assert len(node.history) == 2
            d.start()
            await asyncio.wait_for(node.online.wait(), 60)
            second, _ = node.states[-1]
            assert second.timestamp > first.timestamp
            node.bd_seq += 1
            await node.birth(3.0)
            await node.flush_history()
            await _until(conn, "SELECT count(*) FROM readings", 6)
            got = await conn.fetch("SELECT (extract(epoch FROM r.time) * 1000)::bigint AS ms, r.value FROM readings r"
                                   " JOIN sensors s ON s.id = r.sensor_id WHERE s.tag = 'G0' AND r.time < to_timestamp($1)"
                                   " ORDER BY r.time", (t0 + 10_000) / 1000)
            assert [(r["ms"], r["value"]) for r in got] == [(t0, 1.0), (t0 + 1000, 2.5), (t0 + 5000, 50.0), (t0 + 6000, 3.0)]
            await asyncio.sleep(1.0)
            assert await conn.fetchval(LIMIT_ALARMS) == 0  # history is not alarmed as live
            assert d.metrics().get("plantwatch_sparkplug_historical_readings_total") == 2
            await node.measure(_ms(), 50.0)  # the same value live: alarmed
            await _until(conn, LIMIT_ALARMS, 1)

            # an OFFLINE of its host id while it is connected (a late Will): the host says ONLINE again
            seen = len(node.states)
            await pub.publish(f"spBv1.0/STATE/{host_id}", ps.State(second.timestamp, False).encode(), qos=1, retain=True)
            for _ in range(100):
                if len(node.states) >= seen + 2:
                    break
                await asyncio.sleep(0.1)
            assert [st for st, _ in node.states[seen:]] == [ps.State(second.timestamp, False), ps.State(second.timestamp, True)]

            # the host dies (SIGKILL): the broker publishes its Will, OFFLINE with that connection's timestamp
            d.kill()
            await _until_state(node, online=False)
            will, _ = node.states[-1]
            assert will.timestamp == second.timestamp
            # what stays retained for a node that connects later: the last OFFLINE
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as late:
                await late.subscribe(f"spBv1.0/STATE/{host_id}", qos=1)
                m = await asyncio.wait_for(anext(aiter(late.messages)), 10)
                assert m.retain and ps.State.decode(m.payload) == ps.State(second.timestamp, False)
        finally:
            following.cancel()
            await conn.close()
            if d.proc and d.proc.poll() is None:
                d.kill()


async def _until_state(node: PrimaryHostNode, *, online: bool, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if node.states and node.states[-1][0].online is online:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no STATE online={online}: {node.states}")
