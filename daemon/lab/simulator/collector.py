"""Simulated edge collectors: the plant model's readings published over MQTT in wire format v1.

Each sensor is published by the collector the site config names for it (the sensor's
``collector``, else its area's; the demo site has ``edge-<area>`` per area and ``robot1`` for the
channels ``ROBOT1-*``): fixed instruments on ``{prefix}/{site}/<collector>/readings``, robot
channels on ``.../<collector>/robot`` with the robot's position in every reading.
Every simulated second each collector sends the readings of that second, split into messages of
at most ``max_readings`` readings; each message is one batch with the collector's ``seq`` one
higher than its previous batch. Messages go out with QoS 1.

Like a real edge collector the simulator keeps producing while the broker is away: batches wait
in an outbox (bounded: the oldest are dropped past ``outbox_limit``, which shows as a ``seq`` gap
downstream) and are sent when the connection is back. aiomqtt does not reconnect by itself, so
the publisher loop does: connect, drain the outbox, and on ``MqttError`` wait (backing off up to
5 s) and connect again. A batch whose PUBACK did not arrive is sent again (at-least-once).

Time: the run starts at ``t0`` (default: the current whole second) and simulated second k is
published when the simulated clock reaches ``t0 + k + 1``; the simulated clock runs ``speed``
times faster than the wall clock (``speed`` > 1 stamps readings ahead of the wall clock, which is
meant for tests, not for the demo). ``sent`` is the simulated clock at sending.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import aiomqtt

from plantwatch.connectors.mqtt import BrokerAddress, connected
from plantwatch.connectors.tls import ClientTls
from plantwatch.connectors.wire import encode_batch, topic as wire_topic

from plantwatch.daemon.lab.simulator.plant import Frame, Plant
from plantwatch.daemon.lab.simulator.scenario import Scenario, check_against, default_scenario, load_scenario
from plantwatch.daemon.lab.simulator.truth import build_truth, close_truth, write_truth

if TYPE_CHECKING:  # pragma: no cover
    from plantwatch.daemon.config.model import Config

log = logging.getLogger("plantwatch.simulator")

DEFAULT_MAX_READINGS = 200
DEFAULT_OUTBOX_LIMIT = 10_000
#: messages published concurrently (each waits for its PUBACK)
INFLIGHT = 20
PUBLISH_TIMEOUT = 5.0
#: seconds the publisher keeps trying to flush the outbox after the run stops
FLUSH_GRACE = 5.0


@dataclass(slots=True)
class Outgoing:
    topic: str
    collector: str
    seq: int
    readings: list[dict[str, Any]]


@dataclass
class SimulatorStats:
    t0: float = 0.0
    seconds: int = 0  # simulated seconds produced
    batches: int = 0  # batches produced (= seq numbers used)
    published: int = 0  # batches acknowledged by the broker (PUBACK)
    readings: int = 0  # readings in acknowledged batches
    resent: int = 0  # batches sent again after a connection loss
    dropped: int = 0  # batches dropped from a full outbox
    unsent: int = 0  # batches still in the outbox when the run ended
    connects: int = 0
    errors: list[str] = field(default_factory=list)


class Collectors:
    """Turns plant frames into per-collector batches with sequence numbers."""

    def __init__(self, config: "Config", prefix: str, max_readings: int = DEFAULT_MAX_READINGS):
        if max_readings < 1:
            raise ValueError("max_readings must be >= 1")
        self.site = config.site.id
        self.prefix = prefix
        self.max_readings = max_readings
        self.ids = [s.id for s in config.sensors]
        self.collector = [config.collector_of(s) for s in config.sensors]
        self.seq: dict[str, int] = {}

    def batches(self, frame: Frame) -> list[Outgoing]:
        by: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for i, t, v in zip(frame.idx.tolist(), frame.time.tolist(), frame.value.tolist()):
            by.setdefault((self.collector[i], "readings"), []).append({"sensor": self.ids[i], "time": t, "value": v})
        for k, i in enumerate(frame.robot_idx.tolist()):
            r = {"sensor": self.ids[i], "time": float(frame.robot_time[k]), "value": float(frame.robot_value[k]),
                 "x": float(frame.robot_x[k]), "y": float(frame.robot_y[k])}
            if frame.robot_area[k] is not None:
                r["area"] = frame.robot_area[k]
            by.setdefault((self.collector[i], "robot"), []).append(r)
        out = []
        for (coll, kind), readings in by.items():
            for j in range(0, len(readings), self.max_readings):
                seq = self.seq.get(coll, -1) + 1
                self.seq[coll] = seq
                out.append(Outgoing(wire_topic(self.prefix, self.site, coll, kind), coll, seq,
                                    readings[j:j + self.max_readings]))
        return out


async def run_simulator(config: "Config", mqtt_host: str, mqtt_port: int, prefix: str = "plantwatch",
                        duration: float | None = None, speed: float = 1.0, scenario: Scenario | None = None,
                        truth_path: str | Path | None = None, stop_event: asyncio.Event | None = None, *,
                        seed: int | None = None, t0: float | None = None,
                        max_readings: int = DEFAULT_MAX_READINGS, outbox_limit: int = DEFAULT_OUTBOX_LIMIT,
                        username: str | None = None, password: str | None = None,
                        client_id: str | None = None, flush_grace: float = FLUSH_GRACE,
                        tls: ClientTls | None = None) -> SimulatorStats:
    """Simulate the plant and publish its readings until ``duration`` simulated seconds have been
    produced (None: until ``stop_event`` is set), then flush the outbox (for up to ``flush_grace`` s).

    ``scenario`` defaults to the shipped demo scenario. The ground truth is written to
    ``truth_path`` (when given) at the start, and again at the end with open-ended incidents
    closed at the run's end. Returns counts of what was produced and acknowledged.
    """
    if speed <= 0 or not math.isfinite(speed):
        raise ValueError("speed must be a positive number")
    broker = BrokerAddress(mqtt_host, mqtt_port, username, password, tls)
    scenario = scenario if scenario is not None else default_scenario()
    stop_event = stop_event if stop_event is not None else asyncio.Event()
    t0 = float(math.floor(time.time())) if t0 is None else float(t0)
    plant = Plant(config, scenario, t0=t0, seed=seed)
    colls = Collectors(config, prefix, max_readings)
    stats = SimulatorStats(t0=t0)
    truth = build_truth(config, scenario, t0=t0, duration=duration, seed=seed)
    if truth_path is not None:
        write_truth(truth_path, truth)

    outbox: deque[Outgoing] = deque()
    wake = asyncio.Event()
    produced_all = asyncio.Event()
    loop = asyncio.get_running_loop()
    wall0 = loop.time() - (time.time() - t0) / speed if t0 <= time.time() else loop.time()

    def sim_now() -> float:
        return t0 + (loop.time() - wall0) * speed

    async def produce() -> None:
        try:
            k = 0
            while duration is None or k < duration:
                due = wall0 + (k + 1) / speed  # the end of simulated second k
                delay = due - loop.time()
                if delay > 0:
                    try:
                        await asyncio.wait_for(stop_event.wait(), timeout=delay)
                    except asyncio.TimeoutError:
                        pass
                if stop_event.is_set():
                    break
                frame = plant.step()
                k += 1
                stats.seconds = k
                for msg in colls.batches(frame):
                    if len(outbox) >= outbox_limit:
                        outbox.popleft()
                        stats.dropped += 1
                    outbox.append(msg)
                    stats.batches += 1
                wake.set()
        finally:
            produced_all.set()
            wake.set()

    async def publish() -> None:
        backoff = 0.5
        healthy = True  # last state seen: log the change to "unavailable" once, not every retry
        flush_deadline: float | None = None
        in_flight = 0
        while True:
            if produced_all.is_set():
                if not outbox:
                    return
                if flush_deadline is None:
                    flush_deadline = loop.time() + flush_grace
                if loop.time() >= flush_deadline:
                    return
            try:
                async with connected(broker, identifier=client_id, keepalive=15, timeout=PUBLISH_TIMEOUT) as client:
                    stats.connects += 1
                    if not healthy:
                        log.info("simulator: reconnected to MQTT %s:%s", mqtt_host, mqtt_port)
                    healthy = True
                    backoff = 0.5
                    while True:
                        if not outbox:
                            if produced_all.is_set():
                                return
                            wake.clear()
                            await wake.wait()
                            continue
                        head = [outbox[i] for i in range(min(INFLIGHT, len(outbox)))]
                        now = round(sim_now(), 3)
                        in_flight = len(head)
                        results = await asyncio.gather(
                            *(client.publish(m.topic, encode_batch(m.collector, m.seq, m.readings, sent=now), qos=1,
                                             timeout=PUBLISH_TIMEOUT) for m in head),
                            return_exceptions=True)
                        failed = next((r for r in results if isinstance(r, BaseException)), None)
                        if failed is not None:
                            raise failed
                        in_flight = 0
                        for m in head:
                            # the producer may have dropped some of them from a full outbox meanwhile
                            if outbox and outbox[0] is m:
                                outbox.popleft()
                            stats.published += 1
                            stats.readings += len(m.readings)
            except aiomqtt.MqttError as e:
                if healthy:
                    log.warning("simulator: %s; buffering and retrying", e)
                healthy = False
                if len(stats.errors) < 100:
                    stats.errors.append(str(e))
                stats.resent += in_flight  # sent, but not acknowledged: they go again
                in_flight = 0
                if produced_all.is_set() and flush_deadline is not None and loop.time() >= flush_deadline:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    producer = asyncio.create_task(produce(), name="simulator-produce")
    publisher = asyncio.create_task(publish(), name="simulator-publish")
    try:
        await producer
        await publisher
    finally:
        for task in (producer, publisher):
            if not task.done():
                task.cancel()
        await asyncio.gather(producer, publisher, return_exceptions=True)
        stats.unsent = len(outbox)
        if truth_path is not None:
            write_truth(truth_path, close_truth(truth, t0 + stats.seconds))
    return stats


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="plantwatch simulate",
                                 description="Simulate the plant's edge collectors and publish readings over MQTT."
                                 " Prints a one-line summary when it ends (-v: progress as it runs).",
                                 epilog="environment: PLANTWATCH_MQTT_PASSWORD (the MQTT password when --password is"
                                 " not given)")
    ap.add_argument("--config", type=Path, help="site config (default: the demo site)")
    ap.add_argument("--host", help="MQTT broker host (default: the config's mqtt.host or 127.0.0.1)")
    ap.add_argument("--port", type=int, help="MQTT broker port (default: the config's mqtt.port or 1883)")
    ap.add_argument("--broker", metavar="HOST:PORT", help="MQTT broker, instead of --host and --port")
    ap.add_argument("--prefix", help="topic prefix (default: the config's mqtt.topic_prefix or plantwatch)")
    ap.add_argument("--username", help="MQTT user (default: none; the config's mqtt.username only when publishing"
                    " to the config's own broker). A broker that takes certificates names the user by --tls-cert")
    ap.add_argument("--password", help="MQTT password (default: the environment variable PLANTWATCH_MQTT_PASSWORD)")
    ap.add_argument("--duration", type=float, help="simulated seconds to run (default: until Ctrl-C)")
    ap.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall-clock second (default 1)")
    ap.add_argument("--scenario", type=Path, help="scenario YAML/JSON (default: the demo scenario)")
    ap.add_argument("--truth", type=Path, default=Path("truth.json"), help="ground truth JSON to write (default truth.json)")
    ap.add_argument("--seed", type=int, help="override the scenario's seed")
    ap.add_argument("--max-readings", type=int, default=DEFAULT_MAX_READINGS, help="readings per MQTT message")
    from plantwatch.daemon.config.broker_options import add_broker_arguments

    add_broker_arguments(ap, broker=False)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """``plantwatch simulate``: run the simulator until --duration or Ctrl-C. Returns an exit code."""
    from plantwatch.daemon.config.model import ConfigError, load_config
    from plantwatch.daemon.lab.demo_site import load_demo_config

    args = _parser().parse_args(argv)
    try:
        # the daemon's own files (certificates, password files) are not the simulator's business
        config = load_config(args.config, check_files=False) if args.config else load_demo_config()
        scenario = load_scenario(args.scenario) if args.scenario else default_scenario()
    except (ConfigError, OSError, ValueError) as e:
        print(f"plantwatch simulate: {e}", file=sys.stderr)
        return 2
    if args.config and not args.scenario and check_against(scenario, {s.id for s in config.sensors},
                                                           {a.id for a in config.site.areas}):
        print(f"plantwatch simulate: the demo scenario names sensors {args.config} does not have: give --scenario"
              " with one written for this site (deploy/site/plantwatch/scenario.yaml is the site stack's)",
              file=sys.stderr)
        return 2
    from plantwatch.daemon.config.broker_options import BrokerArgumentError, broker_from

    mq = config.mqtt
    prefix = args.prefix or (mq.topic_prefix if mq else "plantwatch")
    host, port = args.host, args.port
    if args.broker:
        h, sep, p = args.broker.rpartition(":")
        if not sep or not h or not p.isdigit():
            print(f"plantwatch simulate: --broker {args.broker!r}: give HOST:PORT", file=sys.stderr)
            return 2
        host, port = h, int(p)
    own_broker = mq is not None and host in (None, mq.host) and port in (None, mq.port)
    # the config's user is the daemon's: the simulator uses it only on the daemon's own broker
    username = args.username or (mq.username if mq and own_broker else None)
    password = args.password or (mq.password if mq and own_broker and username == mq.username else None)
    args.broker = None
    try:
        broker = broker_from(args, mq, username=username, password=password, host=host, port=port)
    except BrokerArgumentError as e:
        print(f"plantwatch simulate: {e}", file=sys.stderr)
        return 2
    host, port = broker.host, broker.port

    async def _run() -> SimulatorStats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
                pass
        log.info("simulating site %s -> mqtt://%s:%s/%s/%s/... (speed %g, %s), truth in %s", config.site.id, host,
                 port, prefix, config.site.id, args.speed,
                 "until Ctrl-C" if args.duration is None else f"{args.duration:g} s", args.truth)
        return await run_simulator(config, host, port, prefix, args.duration, args.speed, scenario, args.truth, stop,
                                   seed=args.seed, max_readings=args.max_readings, username=broker.username,
                                   password=broker.password, tls=broker.tls)

    try:
        stats = asyncio.run(_run())
    except ValueError as e:
        print(f"plantwatch simulate: {e}", file=sys.stderr)
        return 2
    print(f"simulated {stats.seconds} s of site {config.site.id!r} to {host}:{port}: {stats.batches} batches,"
          f" {stats.published} acknowledged ({stats.readings} readings), {stats.resent} resent, {stats.dropped}"
          f" dropped, {stats.unsent} unsent" + (f"; last broker error: {stats.errors[-1]}" if stats.errors else ""))
    return 0 if stats.unsent == 0 and stats.dropped == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
