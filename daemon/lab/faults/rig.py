"""One fault run's equipment: its own broker and database, TCP proxies in front of both, a fresh
database set up as a site's administrator does it, the simulated collectors with their ledger, an
alarm subscriber and a freshness probe."""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from plantwatch.connectors.db_setup import provision
from plantwatch.connectors.rig_db import RigDb
from plantwatch.connectors.tcp_proxy import PgCopyWatch, TcpProxy
from plantwatch.daemon.lab.bench.env import SITE, Daemon, Services, new_port, site_yaml

from plantwatch.daemon.lab.faults import checker
from plantwatch.daemon.lab.faults.ledger import Ledger, LedgerPublisher, LedgerSpec, collector_id
from plantwatch.daemon.lab.faults.watch import AlarmWatch, Freshness

#: the limit detector of the generated site (gas sensors: high 5, high-high 10) and the crossing value
LIMIT_DETECTOR = "h2s-limit"
CROSSING_VALUE = 7.0
APP_ROLE = "plantwatch_app"


@dataclass
class Settings:
    rate: float = 20_000.0
    collectors: int = 20
    per_collector: int = 100
    settle: float = 5.0  # steady seconds after recovery, before the next fault
    baseline: float = 10.0  # steady seconds before the first fault
    recovered_lag: float = 2.0  # recovered: the store is at most this far behind the collectors again
    recover_timeout: float = 300.0
    crossing_seconds: float = 1.0
    durations: dict[str, float] = field(default_factory=dict)


class Rig:
    def __init__(self, svc: Services, workdir: Path, st: Settings):
        self.svc = svc
        self.dir = workdir
        self.st = st
        self.prefix = f"faults{uuid.uuid4().hex[:6]}"
        self.db_name = f"faults_{uuid.uuid4().hex[:10]}"
        self.admin_dsn = svc.pg.dsn_for(self.db_name)  # superuser: the checker's
        self.broker_proxy = TcpProxy(svc.broker.host, svc.broker.port)
        self.db_proxy = TcpProxy(svc.pg.host, svc.pg.port, watch=PgCopyWatch)
        self.pub: LedgerPublisher | None = None
        self.watch = AlarmWatch(svc.broker.host, svc.broker.port, f"{self.prefix}/{SITE}/alarms/changes",
                                f"faults-watch-{uuid.uuid4().hex[:6]}")
        self.fresh: Freshness | None = None
        self.db_ids: dict[int, int] = {}  # sensor index -> database id
        self._tasks: list[asyncio.Task] = []
        self._crossings = 0
        self._used: dict[int, int] = {}  # crossings so far per collector
        self._gas = [j for j in range(st.per_collector - 1) if j % 5 < 3]  # the last sensor of each is its probe

    @property
    def n_sensors(self) -> int:
        return self.st.collectors * self.st.per_collector

    def app_dsn(self, *, via_proxy: bool) -> str:
        port = self.db_proxy.port if via_proxy else self.svc.pg.port
        return f"postgresql://{APP_ROLE}@{self.svc.pg.host}:{port}/{self.db_name}"

    async def open(self) -> None:
        await provision(self.svc.pg.admin_dsn, self.admin_dsn, role=APP_ROLE, database=self.db_name,
                        timescaledb=self.svc.pg.timescaledb)
        await self.broker_proxy.start()
        await self.db_proxy.start()
        self._tasks.append(asyncio.create_task(self.watch.run()))
        await asyncio.wait_for(self.watch.ready.wait(), 30)

    def site(self, *, client_id: str, metrics_port: int, via_proxy: bool, cluster: str = "", state: str = "") -> str:
        host, port = ((self.broker_proxy.host, self.broker_proxy.port) if via_proxy
                      else (self.svc.broker.host, self.svc.broker.port))
        return site_yaml(self.n_sensors, host=host, port=port, prefix=self.prefix, dsn=self.app_dsn(via_proxy=via_proxy),
                         client_id=client_id, metrics_port=metrics_port, cluster=cluster,
                         per_collector=self.st.per_collector, state=state)

    def daemon(self, name: str, *, via_proxy: bool, client_id: str, cluster: str = "", state: str = "") -> Daemon:
        port = new_port()
        d = Daemon(self.dir, self.site(client_id=client_id, metrics_port=port, via_proxy=via_proxy, cluster=cluster,
                                       state=state), port, name=name)
        d.stop_timeout = 60.0
        return d

    async def start_load(self) -> None:
        """Once the daemon has registered the sensors: the probe and the collectors."""
        async with await RigDb.connect(self.admin_dsn) as db:
            ids = await db.sensor_ids()
        self.db_ids = {int(tag[1:]): i for tag, i in ids.items() if tag[1:].isdigit()}
        per = self.st.per_collector
        probes = [self.db_ids[c * per + per - 1] for c in range(self.st.collectors)]
        self.fresh = Freshness(self.admin_dsn, probes)
        self._tasks.append(asyncio.create_task(self.fresh.run()))
        spec = LedgerSpec(self.svc.broker.host, self.svc.broker.port, self.prefix, SITE, self.st.collectors, per,
                          self.st.rate, str(self.dir / "ledger.npz"), client_prefix=f"{self.prefix}-edge")
        self.pub = LedgerPublisher(spec)
        await asyncio.to_thread(self.pub.start)

    def inject(self, collector: int | None = None) -> int:
        """A limit crossing on the next unused gas sensor (of ``collector``, or round robin)."""
        c = self._crossings % self.st.collectors if collector is None else collector
        self._crossings += 1
        m = self._used.get(c, 0)
        self._used[c] = m + 1
        sensor = c * self.st.per_collector + self._gas[m % len(self._gas)]
        ticks = max(2, round(self.st.crossing_seconds / self.pub.spec.period))
        self.pub.inject(sensor, ticks=ticks, value=CROSSING_VALUE)
        return sensor

    def collector_name(self, c: int) -> str:
        return collector_id(c)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.pub is not None:
            self.pub.kill()
        await self.broker_proxy.close()
        await self.db_proxy.close()


# --- process faults ---------------------------------------------------------------------------
def signal_tree(pid: int, sig: signal.Signals) -> int:
    """Send ``sig`` to a process and its descendants (children first for SIGSTOP, parent first
    otherwise); returns how many got it."""
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True)
    except psutil.Error:
        return 0
    order = procs + [root] if sig == signal.SIGSTOP else [root] + procs
    n = 0
    for p in order:
        try:
            os.kill(p.pid, sig)
            n += 1
        except ProcessLookupError:
            pass
    return n


def wait_exit(d: Daemon, timeout: float) -> int | None:
    """The exit code of a daemon asked to stop; None when it was still running after ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rc = d.proc.poll()
        if rc is not None:
            return rc
        time.sleep(0.05)
    return None


def settings(args: argparse.Namespace) -> Settings:
    q = args.quick
    return Settings(rate=args.rate or (5_000.0 if q else 20_000.0), collectors=args.collectors or (5 if q else 20),
                    per_collector=args.per_collector, settle=args.settle if args.settle is not None else (2.0 if q else 5.0),
                    baseline=3.0 if q else 10.0, recovered_lag=args.recovered_lag)


def select(names: str, known: list[str]) -> list[str]:
    want = [x for x in names.split(",") if x]
    bad = [x for x in want if x not in known]
    if bad:
        raise ValueError(f"unknown fault(s) {', '.join(bad)}; known: {', '.join(known)}")
    return [k for k in known if not want or k in want]


async def check_run(rig: Rig, ledger: Ledger) -> tuple[checker.ReadingCheck, list[checker.Crossing], dict]:
    """After a run: every reading row by row, every crossing matched with its alarm (on MQTT and
    in the database), and the checker's self-check; (readings, crossings, self-check)."""
    sid, t = await checker.stored_rows(rig.admin_dsn, ledger.t0)
    index = await checker.sensor_index(rig.admin_dsn)
    rc = checker.check_readings(ledger, sid, t, index)
    crossings = checker.crossings_of(ledger)
    checker.match_alarms(crossings, rig.watch.changes, rig.db_ids, detector=LIMIT_DETECTOR)
    await checker.record_alarms(rig.admin_dsn, crossings, rig.db_ids, detector=LIMIT_DETECTOR)
    return rc, crossings, await checker.self_check(rig.admin_dsn, ledger, index, rc)
