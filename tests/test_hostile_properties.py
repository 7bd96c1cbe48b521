"""Property tests (Hypothesis) against a real PostgreSQL/TimescaleDB: every API body model, and
every text field that reaches the store (wire-format batches and transfer declarations, Sparkplug
B metric names, config text), with generated hostile input: NUL, lone surrogates, invalid UTF-8,
huge and non-finite numbers, deep nesting, duplicate keys. Only documented errors come out (a 4xx
with a JSON reason, a dead letter with a documented reason); the database never refuses what
validation let through; and the pipeline keeps acknowledging."""
from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plantwatch.connectors.sparkplug import payload as sp
from plantwatch.connectors.store import Store
from plantwatch.daemon.alarms.service import AlarmManagement, load_book
from plantwatch.daemon.alarms.api import Api, Tokens, hash_token
from plantwatch.daemon.config.model import ConfigError, load_config_text
from plantwatch.daemon.detection import DetectorSet
from plantwatch.daemon.alarms.lifecycle import ACTIONS
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.ingest.pipeline import Pipeline
from plantwatch.daemon.ingest.sparkplug import SparkplugIngest
from plantwatch.daemon.ingest.validate import Registry

from .helpers import site_config

pytestmark = pytest.mark.slow

TOKEN = "tok-eng-props"
#: every reason a dead letter may carry (README "Rejection reasons")
REASONS = {"oversized", "invalid_utf8", "malformed_json", "bad_envelope", "bad_version", "bad_topic",
           "collector_mismatch", "duplicate_key", "wrong_type", "non_finite", "unknown_sensor", "wrong_kind",
           "wrong_collector", "missing_position", "bad_area", "bad_time", "future_time", "too_old", "out_of_range",
           "bad_transfer", "bad_text", "sp_malformed", "sp_no_birth", "sp_unknown_alias", "sp_unsupported_type"}

SPARKPLUG = ("sparkplug:\n  groups: [plant]\n  by_name: true\n"
             "  metrics:\n    - {source: plant/node1, metric: Gas/H2S, sensor: G1}\n")
DETECTORS = ("detectors:\n"
             "  - {id: h2s-limit, type: limit, select: {kind: gas}, params: {high: 5, high_high: 10}}\n"
             "  - {id: stale, type: stale, select: {kind: gas}, params: {timeout: 3600}}\n")

# --- strategies --------------------------------------------------------------------------------
hostile_text = (st.text(max_size=12)
                | st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)
                | st.sampled_from(["a\x00b", "\x00", "\ud800", "x\udfffy", "G0", "edge1", "area1", "good", "x" * 3000,
                                   "2026-01-01T00:00:00Z", "1e999", "area1\x00"]))
numbers = (st.integers() | st.floats() | st.integers(min_value=10**300, max_value=10**400)
           | st.sampled_from([0, -1, 1e308, 2**63, 2**64, -(2**63) - 1]))
scalars = st.none() | st.booleans() | numbers | hostile_text
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(hostile_text, c, max_size=3),
                           max_leaves=8)


def _dumps(doc: Any) -> bytes:
    """JSON as a hostile client writes it: NaN tokens, lone surrogates as \\u escapes."""
    return json.dumps(doc, ensure_ascii=True, allow_nan=True).encode()


body_keys = st.sampled_from(["reason", "text", "duration"]) | hostile_text
api_bodies = (st.dictionaries(body_keys, json_values, max_size=4).map(_dumps)
              | st.fixed_dictionaries({"reason": hostile_text}, optional={"duration": numbers, "text": hostile_text})
              .map(_dumps)
              | json_values.map(_dumps) | st.binary(max_size=64)
              | st.sampled_from([b"[" * 30000, b'{"reason":"a","reason":"b"}', b'{"duration":1' + b"0" * 400 + b"}"]))

NOW = time.time()
good_time = st.floats(min_value=NOW - 3000, max_value=NOW - 10)
reading = st.fixed_dictionaries(
    {"sensor": st.sampled_from(["G0", "G1", "G2", "R0"]) | hostile_text,
     "time": good_time | good_time | numbers | hostile_text, "value": st.floats(0, 100) | numbers},
    optional={"quality": st.sampled_from(["good", "bad", "uncertain"]) | hostile_text, "x": st.floats(0, 200) | numbers,
              "y": st.floats(0, 100) | numbers, "area": st.sampled_from(["area1", "area2", None]) | hostile_text,
              "extra": json_values})
batch = st.fixed_dictionaries(
    {"v": st.just(1) | st.just(1) | st.just(1) | numbers,
     "collector": st.sampled_from(["edge1", "robot1"]) | st.sampled_from(["edge1", "robot1"]) | hostile_text,
     "seq": st.integers(0, 2**63 - 1) | st.integers(0, 100) | numbers, "readings": st.lists(reading, max_size=4)},
    optional={"sent": good_time | numbers | st.none()})
transfer = st.fixed_dictionaries(
    {"tank": st.sampled_from(["TK1"]) | hostile_text, "start": numbers | hostile_text, "end": numbers | hostile_text,
     "quantity": numbers, "unit": st.sampled_from(["m3", "%"]) | hostile_text},
    optional={"by": hostile_text, "reference": hostile_text})


sp_names = (hostile_text.filter(lambda s: 0 < len(s.encode("utf-8", "surrogatepass")) < 100 and s != "bdSeq")
            | st.binary(min_size=1, max_size=8) | st.sampled_from(["Gas/H2S", "G2", "G3\x00", "Node Control/Rebirth"]))


class Env:
    """A real Store, Pipeline with a writer, AlarmBook and API app, on the test's event loop."""

    def __init__(self, cfg, store, pipeline, mgmt, writer):
        self.cfg, self.store, self.pipeline, self.mgmt, self.writer = cfg, store, pipeline, mgmt, writer
        self.acked = 0
        self.sent = 0

    def ack(self) -> None:
        self.acked += 1

    async def submit(self, topic: str, payload: bytes) -> None:
        self.sent += 1
        self.pipeline.submit(topic, payload, self.ack)
        await self.pipeline.flush()

    async def settle(self) -> None:
        await self.pipeline.flush()
        for _ in range(600):
            if self.pipeline.idle:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the pipeline did not commit what it was given")


async def _env(db: str) -> Env:
    text = site_config(n_gas=4, n_robot=1, dsn=db, detectors=DETECTORS + SPARKPLUG).replace(
        "sensors:\n", "sensors:\n  - {id: TK1, kind: level, unit: m3, range: [0, 100], area: area1}\n", 1)
    cfg = load_config_text(text)
    m = Metrics()
    store = await Store.open(db, connections=4)
    ids = await store.sync_registry(cfg.site, cfg.sensors)
    reg = Registry.build(cfg, ids)
    book = await load_book(cfg, store, reg.db_id)
    pipeline = Pipeline(cfg, store, reg, DetectorSet(cfg), book, m)
    mgmt = AlarmManagement(cfg, store, m, book, pipeline)
    return Env(cfg, store, pipeline, mgmt, asyncio.create_task(pipeline.writer()))


async def _close(env: Env) -> None:
    await env.settle()
    await env.pipeline.units.put(None)
    await env.writer
    await env.store.close()


def _run_in_thread(loop: asyncio.AbstractEventLoop, coro, timeout: float = 60):
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


def _no_refusals(env: Env) -> None:
    m = env.pipeline.m
    assert m.write_errors._value.get() == 0, env.pipeline.last_write_error  # noqa: SLF001
    for reason in ("unstorable", "unstorable_alarm_op"):
        assert m.rejected.labels(reason)._value.get() == 0, reason  # noqa: SLF001


async def _dead_reasons(env: Env) -> set[str]:
    async with env.store.pool.acquire() as conn:
        return {r["reason"] for r in await conn.fetch("SELECT DISTINCT reason FROM dead_letters")}


PROPS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)


async def test_every_api_body_gets_a_documented_answer_and_the_pipeline_keeps_acknowledging(db):
    env = await _env(db)
    loop = asyncio.get_running_loop()
    prefix = f"plantwatch/{env.cfg.site.id}/edge1/readings"
    # an alarm to act on, and a second one per round to show detection and storage go on
    await env.submit(prefix, msgspec.json.encode({"v": 1, "collector": "edge1", "seq": 0, "readings": [
        {"sensor": "G0", "time": time.time() - 5, "value": 12.0}]}))
    await env.settle()
    api = Api(records=env.store.alarm_records, book=env.mgmt.book, submit=env.mgmt.submit,
              tokens=Tokens([("eng", "engineer", hash_token(TOKEN))]), site=env.cfg.site.id, db_timeout=30)
    client = TestClient(TestServer(api.app()))
    await client.start_server()
    alarm_id = next(iter(env.mgmt.book.alarms.values())).alarm_id if hasattr(
        next(iter(env.mgmt.book.alarms.values())), "alarm_id") else None
    async with env.store.pool.acquire() as conn:
        alarm_id = await conn.fetchval("SELECT id FROM alarms LIMIT 1")
    seen: dict[int, int] = {}

    async def post(action: str, raw: bytes) -> tuple[int, Any]:
        r = await client.post(f"/api/alarms/{alarm_id}/{action.replace('_', '-')}", data=raw,
                              headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        return r.status, await r.json()

    @PROPS
    @given(action=st.sampled_from(sorted(ACTIONS)), raw=api_bodies)
    def prop(action: str, raw: bytes) -> None:
        status, body = _run_in_thread(loop, post(action, raw))
        seen[status] = seen.get(status, 0) + 1
        assert status in (200, 400, 409, 413), (action, raw[:100], status, body)
        if status != 200:
            assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body

    try:
        await asyncio.to_thread(prop)
        print("API answers by status over the generated bodies:", dict(sorted(seen.items())))
        assert seen.get(400, 0) > 0
        before = env.acked
        await env.submit(prefix, msgspec.json.encode({"v": 1, "collector": "edge1", "seq": 1, "readings": [
            {"sensor": "G1", "time": time.time() - 1, "value": 12.0}]}))
        await env.settle()
        assert env.acked == before + 1
        assert ("h2s-limit", int(env.pipeline.reg.db_id[1])) in env.mgmt.book.alarms
        _no_refusals(env)
    finally:
        await client.close()
        await _close(env)


async def test_every_text_that_reaches_the_store_is_validated_and_every_message_acknowledged(db):
    env = await _env(db)
    loop = asyncio.get_running_loop()
    site = env.cfg.site.id
    sp_ingest = SparkplugIngest(env.cfg, env.pipeline.reg, env.pipeline.m.registry)

    async def publish(topic: str, payload: bytes) -> None:  # Sparkplug rebirth requests: not needed here
        return None

    async def sparkplug(names: list[Any], values: list[float]) -> None:
        p = sp.Payload(timestamp=int(time.time() * 1000), seq=0)
        p.metrics.add(name="bdSeq", datatype=8, long_value=0)
        swaps = []
        for i, (name, v) in enumerate(zip(names, values)):
            enc = name if isinstance(name, bytes) else name.encode("utf-8", "surrogatepass")
            stand_in = chr(ord("a") + i) * len(enc)  # same length: the protobuf framing stays valid
            p.metrics.add(name=stand_in, datatype=10, double_value=v)
            swaps.append((bytes([len(enc)]) + stand_in.encode(), bytes([len(enc)]) + enc))
        raw = p.SerializeToString()
        for old, new in swaps:  # bytes protobuf itself would not write (invalid UTF-8, surrogates)
            raw = raw.replace(old, new, 1)
        env.sent += 1
        await sp_ingest.submit(env.pipeline, publish, "spBv1.0/plant/NBIRTH/node1", raw, env.ack)
        await env.pipeline.flush()

    async def one(kind: str, doc: Any, topic_collector: str) -> None:
        if kind == "transfer":
            await env.submit(f"plantwatch/{site}/transfers/declared", _dumps(doc))
        else:
            await env.submit(f"plantwatch/{site}/{topic_collector}/{kind}", _dumps(doc))
        await env.settle()

    @PROPS
    @given(kind=st.sampled_from(["readings", "robot"]), doc=batch,
           topic_collector=st.sampled_from(["edge1", "robot1"]))
    def prop_batches(kind: str, doc: Any, topic_collector: str) -> None:
        _run_in_thread(loop, one(kind, doc, topic_collector))

    @PROPS
    @given(doc=transfer)
    def prop_transfers(doc: Any) -> None:
        _run_in_thread(loop, one("transfer", doc, ""))

    @PROPS
    @given(names=st.lists(sp_names, min_size=1, max_size=3),
           value=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6))
    def prop_sparkplug(names: list[Any], value: float) -> None:
        _run_in_thread(loop, sparkplug(names, [value] * len(names)))
        _run_in_thread(loop, env.settle())

    try:
        await asyncio.to_thread(prop_batches)
        await asyncio.to_thread(prop_transfers)
        await asyncio.to_thread(prop_sparkplug)
        await env.settle()
        assert env.acked == env.sent
        _no_refusals(env)
        reasons = await _dead_reasons(env)
        print(f"{env.sent} messages, all acknowledged; dead-letter reasons: {sorted(reasons)}")
        assert reasons <= REASONS, reasons - REASONS
    finally:
        await _close(env)


@settings(max_examples=200, deadline=None, database=None)
@given(name=hostile_text, unit=hostile_text, description=hostile_text, param=hostile_text)
def test_config_text_that_could_not_be_stored_fails_at_load_with_its_location(name, unit, description, param):
    def q(s: str) -> str:
        return json.dumps(s, ensure_ascii=True)  # a YAML double-quoted scalar: "\u0000" is NUL, "\ud800" ...

    text = (f"site:\n  id: s1\n  name: {q(name)}\n  areas:\n    - {{id: a1, collector: e1}}\n"
            f"sensors:\n  - {{id: G1, kind: gas, unit: {q(unit)}, range: [0, 100], area: a1,"
            f" description: {q(description)}}}\n"
            f"detectors:\n  - {{id: d1, type: stale, select: {{kind: gas}}, params: {{timeout: 60}},"
            f" severity: {{}}, enabled: true}}\n")
    bad = [s for s in (name, unit, description) if "\x00" in s or any(0xD800 <= ord(c) <= 0xDFFF for c in s)]
    try:
        cfg = load_config_text(text, "site.yaml")
    except ConfigError as e:
        assert all(p.startswith("site.yaml:") for p in e.problems), e.problems
        if bad:
            assert any("NUL" in p or "surrogate" in p or "invalid YAML" in p for p in e.problems), e.problems
        return
    assert not bad, (bad, "a config with text the database cannot hold was accepted")
    for s in (cfg.site.name, cfg.sensors[0].unit, cfg.sensors[0].description):
        s.encode("utf-8")
        assert "\x00" not in s and not math.isnan(len(s))
