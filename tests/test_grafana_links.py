"""Every link a dashboard makes into the operator console opens a page the running daemon serves,
for ids that exist in its database (a real daemon, Mosquitto and TimescaleDB), and the console's
query forms find what the link is about."""
from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
import uuid

import asyncpg
import pytest

from plantwatch.connectors.grafana import load_dashboards
from plantwatch.connectors.services import free_port
from plantwatch.connectors.wire import encode_batch
from plantwatch.daemon.alarms.api import hash_token

from .browser import chromium
from .helpers import DaemonProcess, new_metrics_port, publish_batches, site_config

TOKEN = "tok-ins-" + uuid.uuid4().hex


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)


def console_links() -> list[tuple[str, str]]:
    """(dashboard file, url template) of every link into the console."""
    return sorted({(p.name, s) for p, d in load_dashboards() for s in _strings(d) if s.startswith("${console_url}")})


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture
async def site(tmp_path, mosquitto, db, topic_prefix):
    """A daemon with its API, after G0 crossed its limit: an event, an alarm and an incident."""
    prefix = topic_prefix.rstrip("/")
    api_port, mport = free_port(), new_metrics_port()
    extra = ("detectors:\n"
             "  - {id: h2s-limit, type: limit, select: {kind: gas}, params: {high: 5, high_high: 10}}\n"
             f"api:\n  port: {api_port}\n  tokens:\n      - {{name: ins, role: inspector, sha256: {hash_token(TOKEN)}}}\n")
    cfg = tmp_path / "site.yaml"
    cfg.write_text(site_config(n_gas=3, mqtt=(mosquitto.host, mosquitto.port), prefix=prefix, dsn=db,
                               client_id=f"pw-{uuid.uuid4().hex[:8]}", metrics_port=mport, detectors=extra))
    d = DaemonProcess(cfg, mport)
    d.start()
    try:
        await d.wait_connected()
        now = time.time()
        await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/testsite/edge1/readings", [
            encode_batch("edge1", 0, [{"sensor": s, "time": now - 60, "value": 1.0} for s in ("G0", "G1", "G2")]),
            encode_batch("edge1", 1, [{"sensor": "G0", "time": now - 50, "value": 12.0}])])
        conn = await asyncpg.connect(db)
        try:
            for _ in range(150):
                row = await conn.fetchrow(
                    "SELECT ia.incident_id, ia.alarm_id, e.id AS event_id FROM incident_alarms ia"
                    " JOIN alarms a ON a.id = ia.alarm_id JOIN events e ON e.detector_id = a.detector_id"
                    " AND e.sensor_id = a.sensor_id LIMIT 1")
                if row is not None:
                    break
                await asyncio.sleep(0.2)
            assert row is not None, d.log()
        finally:
            await conn.close()
        for _ in range(150):
            if _get(f"http://127.0.0.1:{api_port}/healthz")[0] == 200 if _port_open(api_port) else False:
                break
            await asyncio.sleep(0.2)
        yield {"url": f"http://127.0.0.1:{api_port}", "incident": row["incident_id"], "alarm": row["alarm_id"],
               "event": row["event_id"], "sensor": "G0"}
        assert d.terminate() == 0, d.log()
    finally:
        if d.proc and d.proc.poll() is None:
            d.kill()


def _port_open(port: int) -> bool:
    import socket
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _fill(template: str, site: dict) -> str:
    """The link as Grafana would make it for a row about this site's alarm, incident, event."""
    value = (site["alarm"] if "/alarms/${__value.raw}" in template else
             site["incident"] if "/incidents/${__value.raw}" in template else
             site["event"] if "event=${__value.raw}" in template else None)
    url = template.replace("${console_url}", site["url"]).replace("${sensor}", site["sensor"])
    if "${__value.raw}" in url:
        assert value is not None, f"no test value for {template}"
        url = url.replace("${__value.raw}", str(value))
    assert "$" not in url, f"unexpanded variable in {template}"
    return url


async def test_every_dashboard_link_opens_a_console_page(site):
    links = console_links()
    assert {t for _, t in links} >= {"${console_url}/alarms/${__value.raw}", "${console_url}/incidents/${__value.raw}",
                                      "${console_url}/incidents?event=${__value.raw}",
                                      "${console_url}/incidents?sensor=${sensor}"}, links
    for name, template in links:
        status, body = _get(_fill(template, site))
        assert status == 200 and b"<html" in body, f"{name}: {template} -> {status} {body[:200]!r}"


async def test_incident_query_forms_find_the_incident(site):
    base, iid = site["url"], site["incident"]

    def ids(query: str) -> list[int]:
        status, body = _get(f"{base}/api/incidents?{query}", TOKEN)
        assert status == 200, (query, status, body)
        return [i["id"] for i in json.loads(body)["incidents"]]

    assert ids(f"sensor={site['sensor']}") == [iid]
    assert ids(f"event={site['event']}") == [iid]
    assert ids("sensor=G2") == []
    assert ids("sensor=G0&event=999999") == []
    for bad in ("event=abc", "event=-1", "sensor=" + "x" * 200):
        status, body = _get(f"{base}/api/incidents?{bad}", TOKEN)
        assert status == 400 and b"error" in body, (bad, status, body)
    assert _get(f"{base}/api/incidents?sensor=G0")[0] == 401

    # the console page the dashboards link to lists that incident, linking to its own page
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium() as browser:
        wait = WebDriverWait(browser, 20)
        browser.get(f"{base}/incidents?event={site['event']}")
        wait.until(EC.visibility_of_element_located((By.ID, "token"))).send_keys(TOKEN)
        browser.find_element(By.ID, "login-button").click()
        wait.until(EC.presence_of_element_located((By.ID, f"incident-{iid}")))
        assert re.search(r"event", browser.find_element(By.ID, "incidents-title").text)
        link = browser.find_element(By.CSS_SELECTOR, f"#incident-{iid} a").get_attribute("href")
        assert link.endswith(f"/incidents/{iid}")
        browser.get(f"{base}/incidents?sensor=G2")
        wait.until(EC.presence_of_element_located((By.ID, "no-incidents")))
