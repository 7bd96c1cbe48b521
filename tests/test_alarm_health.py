"""Alarm-system health (EEMUA 191 / ISA-18.2): the views and `plantwatch alarms report` on a
history written through the real alarm write path; webhooks; the checked-in OpenAPI file;
config validation of the new sections."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from aiohttp import web

from plantwatch.connectors import health
from plantwatch.connectors.webhook import WebhookSender
from plantwatch.daemon.config.model import ConfigError, load_config_text

from .test_alarm_db import Rig, rig  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[1]


async def test_health_report_flood_chatter_stale_bad_actors(rig: Rig, db):  # noqa: F811
    now = datetime.now(timezone.utc).replace(microsecond=0)
    base = (now - timedelta(hours=2)).timestamp()
    base -= base % 600  # start of a 10-minute period
    # a flood: 12 activations in one 10-minute period (G1 chatters: 3 within a minute)
    t = base + 10
    for k in range(4):
        for tag in ("G1", "G0", "G3"):
            await rig.change(tag, "normal", "high", t)
            await rig.change(tag, "high", "normal", t + 1)
            await rig.act(tag, "ack", now=t + 2)
            t += 4
    # a stale alarm: raised 25 h ago, still active
    await rig.change("G2", "normal", "high_high", (now - timedelta(hours=25)).timestamp())
    # suppressed (upstream G2 active), then out of service
    await rig.change("P0", "normal", "low", base + 900)
    await rig.act("P0", "out_of_service", reason="pump removed", now=base + 950)
    async with rig.store.pool.acquire() as conn:
        r = await health.report(conn, now - timedelta(hours=3), now)
    site = next(p for p in r["positions"] if p["position"] == "site")
    # the stale G2 alarm was raised before the range; P0 was raised while G2 (its upstream by
    # design) was active, so it was suppressed, not annunciated: neither counts
    assert site["alarms"] == 12 == r["activations"]
    assert site["max_10min"] == 12 and site["flood_periods"] == 1
    assert site["flood_pct"] == pytest.approx(100 / 18)
    chat = {c["sensor"]: c["chatter_activations"] for c in r["chattering"]}
    assert set(chat) == {"G0", "G1", "G3"}  # 4 activations within 48 s each
    assert [s["sensor"] for s in r["stale"]] == ["G2"]
    assert [b["activations"] for b in r["bad_actors"]][:3] == [4, 4, 4]
    assert r["out_of_service_now"] == 1
    assert r["priority_distribution"][2] == 12
    assert r["actions"]["ack"] == 12
    # the CLI prints it
    out = subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", "alarms", "report", "--dsn", db,
                          "--from", "3h", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["chattering"]
    out = subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", "alarms", "report", "--dsn", db, "--from", "3h"],
                         capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin"})
    assert out.returncode == 0 and "bad actors" in out.stdout and "chattering" in out.stdout, out.stderr


async def test_webhook_retries_with_backoff_and_bounded_queue_drops_oldest():
    got: list[dict] = []
    fails = {"n": 3}

    async def hook(request: web.Request) -> web.Response:
        if fails["n"] > 0:
            fails["n"] -= 1
            return web.Response(status=500)
        got.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/h", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        s = WebhookSender(f"http://127.0.0.1:{port}/h", queue=3, attempts=5, backoff=0.05, max_backoff=0.2)
        for i in range(5):  # offer never blocks; beyond the queue the oldest are dropped
            s.offer({"i": i})
        assert s.stats.dropped == 2 and s.pending == 3
        task = asyncio.create_task(s.run())
        for _ in range(200):
            if len(got) == 3:
                break
            await asyncio.sleep(0.05)
        assert [m["i"] for m in got] == [2, 3, 4] and s.stats.retries == 3 and s.stats.sent == 3
        # an endpoint that is down: gives up after the attempts, counted as failed, keeps going
        dead = WebhookSender("http://127.0.0.1:9/none", queue=10, attempts=2, backoff=0.01, timeout=1)
        dead.offer({"x": 1})
        t2 = asyncio.create_task(dead.run())
        for _ in range(100):
            if dead.stats.failed:
                break
            await asyncio.sleep(0.05)
        assert dead.stats.failed == 1
        for t_ in (task, t2):
            t_.cancel()
        await asyncio.gather(task, t2, return_exceptions=True)
    finally:
        await runner.cleanup()


def test_checked_in_openapi_matches_the_served_one():
    from plantwatch.daemon.alarms.openapi import spec
    assert json.loads((ROOT / "docs" / "openapi.json").read_text()) == json.loads(json.dumps(spec())), \
        "regenerate: plantwatch api openapi > docs/openapi.json"


BASE = """
site: {id: s, areas: [{id: a1, collector: edge1}]}
sensors: [{id: G0, kind: gas, unit: ppm, range: [0, 100], area: a1}]
detectors: [{id: d, type: limit, select: {kind: gas}, params: {high: 5}}]
"""


def test_config_sections_validated():
    cfg = load_config_text(BASE + "alarms: {suppress_when: [{alarms: {sensors: [G0]}, upstream: {detector: d}}]}\n"
                                  "api: {port: 0, tokens: [{name: a, role: operator, sha256: '" + "0" * 64 + "'}]}\n"
                                  "notify: {webhooks: [{url: 'http://127.0.0.1:1/x'}]}\n")
    assert cfg.alarms.suppress_when[0].upstream.detector == "d" and cfg.api.tokens[0].role == "operator"
    with pytest.raises(ConfigError) as e:
        load_config_text(BASE + "alarms: {suppress_when: [{alarms: {sensors: [NOPE]}, upstream: {detector: zz}}]}\n")
    msg = str(e.value)
    assert "unknown sensor 'NOPE'" in msg and "unknown detector 'zz'" in msg
    with pytest.raises(ConfigError, match="role"):
        load_config_text(BASE + "api: {tokens: [{name: a, role: admin, sha256: '" + "0" * 64 + "'}]}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config_text(BASE + "alarms: {shelve_forever: true}\n")
    with pytest.raises(ConfigError, match="webhook names must be unique"):
        load_config_text(BASE + "notify: {webhooks: [{name: a, url: 'http://x/1'}, {name: a, url: 'http://x/2'}]}\n")


def test_token_file(tmp_path):
    from plantwatch.daemon.alarms.api import Tokens, hash_token, read_token_file
    f = tmp_path / "tokens"
    f.write_text(f"# comment\nann operator {hash_token('s3cret')}\n\nins inspector {hash_token('other')}  # x\n")
    t = Tokens(read_token_file(f))
    assert t.check("s3cret").role == "operator" and t.check("other").name == "ins" and t.check("nope") is None
    f.write_text("bad line\n")
    with pytest.raises(ValueError, match=":1:"):
        read_token_file(f)




def test_flood_consequences_grouped_and_cause_notified_once():
    from plantwatch.connectors.store import AlarmWrite
    from plantwatch.daemon.metrics import Metrics
    from plantwatch.daemon.alarms.notify import Notifications

    cfg = load_config_text(BASE + "notify: {webhooks: [{url: 'http://127.0.0.1:9/x'}]}\n")
    m = Metrics()
    n = Notifications(cfg, m, {1: "G0"})
    (_, sender), = n.senders

    def w(cause, severity="medium"):
        return AlarmWrite("d", 1, "normal", "unack", True, "high", severity, 1.0, cause, raised=True)

    n.offer([w({"by": "detector", "incident": "k", "incident_role": "cause", "flood": False}),
             w({"by": "detector", "incident": "k", "incident_role": "consequence", "flood": False}),
             w({"by": "detector", "incident": "k", "incident_role": "consequence", "flood": True,
                "flood_started": "site"}),
             w({"by": "detector", "incident": "k", "incident_role": "consequence", "flood": True}, "low"),
             w({"by": "detector", "incident": "k", "incident_role": "consequence", "flood": True}, "high"),
             w({"by": "detector", "incident": "k", "incident_role": "consequence", "flood": True}, "critical")])
    msgs = list(sender._q)
    # priority 1 and 2 consequences are sent one by one even in a flood; lower ones are grouped
    assert [(x["type"], x.get("severity")) for x in msgs] == [
        ("alarm", "medium"), ("alarm", "medium"), ("flood", None), ("alarm", "high"), ("alarm", "critical")]
    assert msgs[0]["incident"]["opened"] is True
    assert m.registry.get_sample_value("plantwatch_notifications_grouped_total") == 2
