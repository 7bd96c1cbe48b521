"""``plantwatch failover``: three daemon instances sharing a site (``cluster:`` with the documented
defaults) under a steady load, with a limit crossing injected every ``--cross-every`` seconds on
the collectors in turn, while instances, the database and the broker fail.

Faults: kill -9 (the instance stays dead), kill -9 and a fast restart with the same instance id
(within the lease), SIGTERM, SIGSTOP then SIGCONT, the database stopped, a broker restart, and the
three instances started at the same moment. The instance hit is the holder of collector
``edge000``'s partition. Per fault: readings lost and duplicated (the ledger checker), crossings →
alarms (lost: never raised; duplicated; left active after the sensor returned to normal), the
longest alarm gap (the longest time a crossing of the phase waited for its alarm on MQTT, or until
the end of the phase when it never came; one crossing is injected on ``edge000`` 0.1 s after each
fault, so that the wait for the takeover is in it), the takeover time (until every partition the failed
instance held is held again, under a new epoch, by a live instance) and instances that exited
on their own.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from plantwatch.connectors.rig_db import RigDb
from plantwatch.daemon.lab.bench.env import Daemon, Services

from plantwatch.daemon.lab.faults.rig import Rig, check_run, select, settings, signal_tree, wait_exit
from plantwatch.daemon.lab.faults.watch import DB_ERRORS, drain

NAMES = ("pw-a", "pw-b", "pw-c")
#: the failover faults in the order they run (``--only`` names)
FAULTS = ["kill9-dead", "kill9-restart", "sigterm", "sigstop", "db-stop", "broker-restart", "simultaneous-start"]


@dataclass
class Phase:
    name: str
    label: str
    t_fault: float = 0.0
    t_restored: float = 0.0
    t_end: float = 0.0
    victim: str | None = None
    victim_parts: dict[int, int] = field(default_factory=dict)  # partition -> epoch at the fault
    takeover: float | None = None
    exited: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Cluster:
    def __init__(self, rig: Rig, *, partitions: int, grace: float):
        self.rig = rig
        self.partitions = partitions
        self.grace = grace
        cols = ", ".join(rig.collector_name(c) for c in range(rig.st.collectors))
        client_id = f"pwc-{uuid.uuid4().hex[:6]}"  # the same on every instance, as docs/scaling.md asks
        self.d: dict[str, Daemon] = {
            n: rig.daemon(n, via_proxy=False, client_id=client_id,
                          cluster=f"{{instance_id: {n}, partitions: {partitions}, collectors: [{cols}]}}")
            for n in NAMES}
        self.down: set[str] = set()  # stopped on purpose
        self.paused = False  # no crossing injected (the seconds before a fault: each phase's own)
        self.leases: dict[int, tuple[str, int, float]] = {}  # partition -> holder, epoch, expires (epoch s)
        self.exits: list[tuple[float, str, int]] = []
        self.history: list[tuple[float, int, str, int]] = []  # (seen at, partition, holder, epoch) changes
        self._seen_exit: set[int] = set()

    def partition_of(self, c: int) -> int:
        return zlib.crc32(self.rig.collector_name(c).encode()) % self.partitions

    def live(self, name: str) -> bool:
        p = self.d[name].proc
        return p is not None and p.poll() is None

    def held(self) -> dict[int, tuple[str, int]]:
        now = time.time()
        return {k: (h, e) for k, (h, e, x) in self.leases.items() if x > now}

    async def watch_leases(self) -> None:
        db: RigDb | None = None
        while True:
            try:
                if db is None:
                    db = await RigDb.connect(self.rig.admin_dsn, timeout=2)
                leases = await asyncio.wait_for(db.partition_leases(), 2)
                for k, (h, e, _) in leases.items():
                    if self.leases.get(k, (None, None))[:2] != (h, e):
                        self.history.append((time.time(), k, h, e))
                self.leases = leases
            except DB_ERRORS:
                if db is not None:
                    db.terminate()
                    db = None
            for n, d in self.d.items():
                p = d.proc
                if p is not None and p.poll() is not None and id(p) not in self._seen_exit:
                    self._seen_exit.add(id(p))
                    if n not in self.down:
                        self.exits.append((time.time(), n, p.returncode))
            await asyncio.sleep(0.25)

    async def cross(self, every: float) -> None:
        c = 0
        while True:
            if not self.paused:
                self.rig.inject(collector=c % self.rig.st.collectors)
                c += 1
            await asyncio.sleep(every)

    async def start_all(self) -> None:
        for n in NAMES:
            self.down.discard(n)
            self.d[n].start()
        await asyncio.gather(*(self.d[n].wait_connected() for n in NAMES))

    async def held_by_live(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            h = self.held()
            if len(h) == self.partitions and all(self.live(x) for x, _ in h.values()) and all(map(self.live, NAMES)):
                return True
            await asyncio.sleep(0.25)
        return False

    async def restore(self, timeout: float = 60.0) -> str | None:
        """Every instance running (an exited one is started again, as a service manager does),
        every partition held by a live instance and every collector's readings stored again. When
        the cluster does not get there by itself, every instance is restarted (SIGTERM, start), as
        an operator would, so that the next fault starts from a working cluster; says so."""
        for n in NAMES:
            if not self.live(n):
                self.down.discard(n)
                self.d[n].start()
        st = self.rig.st
        if await self.held_by_live(timeout) and \
                await self.rig.fresh.until_fresh(st.recovered_lag, timeout, after=time.time()) is not None:
            return None
        stops = await asyncio.gather(*(self.stop(n, "term") for n in NAMES))
        # The hand restart of an operator who distrusts the leases: once every lease has expired,
        # start first the instance named in the fewest lease rows, let it take every partition,
        # then the others. (Reported in the row: a cluster that needs it fails the fault.)
        end = time.monotonic() + 60
        while self.held() and time.monotonic() < end:
            await asyncio.sleep(0.5)
        named = {n: sum(1 for h, _, _ in self.leases.values() if h == n) for n in NAMES}
        order = sorted(NAMES, key=lambda n: named[n])
        self.down.discard(order[0])
        self.d[order[0]].start()
        end = time.monotonic() + timeout
        while time.monotonic() < end and not (len(self.held()) == self.partitions and
                                              {h for h, _ in self.held().values()} == {order[0]}):
            await asyncio.sleep(0.25)
        for n in order[1:]:
            self.down.discard(n)
            self.d[n].start()
        ok = await self.held_by_live(2 * timeout) and \
            await self.rig.fresh.until_fresh(st.recovered_lag, 2 * timeout, after=time.time()) is not None
        return (f"the cluster did not resume storing every collector by itself within {timeout:.0f} s: every "
                f"instance stopped by hand ({'; '.join(stops)}), then, once every lease had expired, {order[0]} "
                f"started alone until it held every partition, then the others"
                + ("" if ok else "; still not resumed after that"))

    def victim(self) -> str:
        holder = self.held().get(self.partition_of(0), (NAMES[0], 0))[0]
        return holder if holder in self.d else NAMES[0]

    async def stop(self, name: str, how: str) -> str:
        d = self.d[name]
        self.down.add(name)
        if how == "kill":
            await asyncio.to_thread(d.kill)
            return "killed"
        d.proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(wait_exit, d, self.grace)
        if rc is None:
            await asyncio.to_thread(d.kill)
            return f"{name} still running {self.grace:.0f} s after SIGTERM: killed (a hang)"
        return f"{name} exit code {rc} after SIGTERM"

    async def takeover(self, ph: Phase, until: float) -> None:
        """Time until every partition the victim held is held again under a newer epoch by a live instance."""
        while time.time() < until:
            h = self.held()
            if ph.victim_parts and all(k in h and h[k][1] > e and self.live(h[k][0]) for k, e in ph.victim_parts.items()):
                ph.takeover = time.time() - ph.t_fault
                return
            await asyncio.sleep(0.1)


async def run_cluster(args: argparse.Namespace, svc: Services, workdir: Path, step) -> dict:
    q = args.quick
    st = settings(args)
    if args.rate is None:
        st.rate = 2_000.0 if q else 6_000.0
    if args.collectors is None:
        st.collectors = 6
    st.crossing_seconds = 1.0

    def dur(full: float) -> float:
        d = 8.0 if q else full
        return min(d, args.outage) if args.outage else d

    observe = 20.0 if q else 40.0  # seconds a phase is watched after its fault (past lease + renew)
    labels = {"kill9-dead": "kill -9, stays dead", "kill9-restart": "kill -9, restarted at once (same id)",
              "sigterm": "SIGTERM", "sigstop": f"SIGSTOP {dur(60):g} s, then SIGCONT",
              "db-stop": f"database stopped {dur(30):g} s", "broker-restart": "broker restart",
              "simultaneous-start": "all three started at once"}
    chosen = select(args.only, FAULTS)
    rig = Rig(svc, workdir, st)
    cl = None
    tasks: list[asyncio.Task] = []
    try:
        await rig.open()
        cl = Cluster(rig, partitions=8, grace=30.0 if q else 60.0)
        step(f"three instances, 8 partitions, {st.collectors} collectors × {st.per_collector} sensors, "
             f"{st.rate:,.0f} readings/s, a crossing every {args.cross_every:g} s")
        await cl.start_all()
        tasks.append(asyncio.create_task(cl.watch_leases()))
        if not await cl.held_by_live(120.0):
            step("[yellow]the partitions were not all held by live instances after 120 s[/yellow]")
        await rig.start_load()
        tasks.append(asyncio.create_task(cl.cross(args.cross_every)))
        phases = [Phase("steady", "no fault (steady load)")]
        ph = phases[0]
        ph.t_fault = ph.t_restored = time.time()
        await asyncio.sleep(st.baseline)
        ph.t_end = time.time()
        for i, name in enumerate(chosen, start=1):
            ph = Phase(name, labels[name])
            phases.append(ph)
            rig.pub.set_phase(i)
            n_exits = len(cl.exits)
            v = cl.victim()
            step(labels[name] + (f" ({v})" if name not in ("db-stop", "broker-restart", "simultaneous-start") else ""))
            cl.paused = True  # the previous phase's crossings are answered before this fault
            await asyncio.sleep(3.0)
            cl.paused = False
            held = cl.held()
            ph.t_fault = time.time()
            if name in ("kill9-dead", "kill9-restart", "sigterm", "sigstop"):
                ph.victim = v
                ph.victim_parts = {k: e for k, (h, e) in held.items() if h == v}
            else:
                ph.victim_parts = {k: e for k, (h, e) in held.items()}
            take = asyncio.create_task(cl.takeover(ph, ph.t_fault + observe + dur(60) + 30))
            # a crossing on the hit instance's collector right after the fault: the longest alarm
            # gap then includes the wait for the takeover (not only crossings that came later)
            asyncio.get_running_loop().call_later(0.1, rig.inject, 0)
            if name == "kill9-dead":
                await cl.stop(v, "kill")
                ph.t_restored = time.time()
                await asyncio.sleep(observe)
            elif name == "kill9-restart":
                await cl.stop(v, "kill")
                await asyncio.sleep(0.5)
                cl.down.discard(v)
                cl.d[v].start()
                ph.t_restored = time.time()
                await asyncio.sleep(observe)
            elif name == "sigterm":
                ph.notes.append(await cl.stop(v, "term"))
                ph.t_restored = time.time()
                await asyncio.sleep(observe)
            elif name == "sigstop":
                pid = cl.d[v].pid
                signal_tree(pid, signal.SIGSTOP)
                try:
                    await asyncio.sleep(dur(60))
                finally:
                    signal_tree(pid, signal.SIGCONT)
                ph.t_restored = time.time()
                await asyncio.sleep(observe / 2)
            elif name == "db-stop":
                await asyncio.to_thread(svc.pg.halt)
                await asyncio.sleep(dur(30))
                await asyncio.to_thread(svc.pg.start)
                ph.t_restored = time.time()
                await asyncio.sleep(observe)
            elif name == "broker-restart":
                await asyncio.to_thread(svc.broker.halt)
                await asyncio.sleep(1.0)
                await asyncio.to_thread(svc.broker.start)
                ph.t_restored = time.time()
                await asyncio.sleep(observe)
            elif name == "simultaneous-start":
                stops = await asyncio.gather(*(cl.stop(n, "term") for n in NAMES))
                ph.notes += [s for s in stops if "hang" in s or "code 0" not in s]
                for n in NAMES:
                    cl.down.discard(n)
                for n in NAMES:
                    cl.d[n].start()
                ph.t_restored = time.time()
                await asyncio.sleep(observe)
            take.cancel()
            await asyncio.gather(take, return_exceptions=True)
            ph.exited = [f"{n} (exit code {rc})" for t, n, rc in cl.exits[n_exits:]]
            note = await cl.restore()
            if note:
                ph.notes.append(note)
                step(f"  [yellow]{note}[/yellow]")
            ph.t_end = time.time()
            await asyncio.sleep(st.settle)
        for t in tasks[1:]:  # no more crossings; the last one returns to normal before the collectors stop
            t.cancel()
        await asyncio.sleep(3.0)
        step("stopping the collectors; waiting for the store to drain")
        summary, ledger = await asyncio.to_thread(rig.pub.finish)
        await drain(rig.admin_dsn, ledger)
        await asyncio.sleep(2.0)  # the last alarm changes
        finals = await asyncio.gather(*(cl.stop(n, "term") for n in NAMES))
        step("instances stopped: " + "; ".join(finals))
        return await verify_cluster(rig, ledger, summary, phases) | {"final_stops": finals, "lease_history": cl.history}
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if cl is not None:
            for d in cl.d.values():
                d.kill()
        await rig.close()


async def verify_cluster(rig: Rig, ledger, summary: dict, phases: list[Phase]) -> dict:
    rc, crossings, self_check = await check_run(rig, ledger)
    rows = []
    for p, ph in enumerate(phases):
        mine = [c for c in crossings if c.phase == p]
        r = rc.phases.get(p, {"sent": 0, "stored": 0, "lost": 0, "unacked_missing": 0, "duplicated": 0})
        gaps = [c.delay if c.delay is not None else max(0.0, ph.t_end - c.t_first) for c in mine]
        notes = list(ph.notes)
        if r["unacked_missing"]:
            notes.append(f"{r['unacked_missing']:,} readings never acknowledged by the broker and not stored")
        if ph.victim:
            notes.append(f"instance hit: {ph.victim}, holding partitions {sorted(ph.victim_parts)}")
        if ph.exited:
            notes.append("exited on their own: " + ", ".join(ph.exited))
        rows.append({"phase": p, "name": ph.name, "label": ph.label, "readings": r,
                     "alarms": {"injected": len(mine), "raised": sum(1 for c in mine if c.raised),
                                "lost": sum(1 for c in mine if not c.raised),
                                "duplicated": sum(max(0, c.raised - 1) for c in mine),
                                "stale": sum(1 for c in mine if c.left_active),
                                "longest_gap": max(gaps) if gaps else None},
                     "takeover": ph.takeover, "exited": len(ph.exited), "notes": notes,
                     "t_fault": ph.t_fault, "t_restored": ph.t_restored, "t_end": ph.t_end})
    span = max(1e-9, summary["t_end"] - summary["t_start"])
    return {"mode": "cluster", "load": {"collectors": ledger.collectors, "per_collector": ledger.per_collector,
                                        "rate_target": rig.st.rate, "rate_sent": summary["sent"] / span, "seconds": span},
            "rows": rows, "total": rc.total, "examples_lost": rc.examples_lost,
            "crossings": [c.as_dict() for c in crossings], "self_check": self_check,
            "alarm_watch": {"changes": len(rig.watch.changes), "reconnects": rig.watch.reconnects}}
