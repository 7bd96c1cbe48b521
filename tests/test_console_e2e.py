"""The operator console end to end: a real daemon process (Mosquitto, TimescaleDB), its HTTP
API with token roles, a real headless Chromium acknowledging and shelving alarms on the page,
the database record and the audit chain, webhooks, the incident page and report, restart."""
from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import asyncpg
import pytest

from plantwatch.connectors.services import free_port
from plantwatch.connectors.wire import encode_batch
from plantwatch.daemon.alarms.api import hash_token

from .browser import chromium
from .helpers import DaemonProcess, new_metrics_port, publish_batches, site_config, until

pytestmark = pytest.mark.slow

TOKENS = {"ann": ("operator", "tok-ann-" + uuid.uuid4().hex), "ins": ("inspector", "tok-ins-" + uuid.uuid4().hex),
          "eve": ("engineer", "tok-eve-" + uuid.uuid4().hex)}


class Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []
    fail_first = 2

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Hook.fail_first > 0:  # the first attempts fail: the sender must retry
            Hook.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


def _call(port, path, token=None, body=None, method=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method or ("POST" if body is not None else "GET"),
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            ct = r.headers.get("Content-Type", "")
            data = r.read()
            return r.status, (json.loads(data) if "json" in ct else data.decode())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")



def _cli(*args):
    return subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "250"})


async def test_console_browser_ack_shelve_audit_report_restart(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    api_port, mport = free_port(), new_metrics_port()
    tokens = "\n".join(f"      - {{name: {n}, role: {r}, sha256: {hash_token(t)}}}" for n, (r, t) in TOKENS.items())
    extra = (
        "detectors:\n"
        "  - {id: h2s-limit, type: limit, select: {kind: gas}, params: {high: 5, high_high: 10, deadband: 0.5}}\n"
        "alarms:\n  incidents: {window: 600, close_after: 3600}\n"
        f"api:\n  port: {api_port}\n  tokens:\n{tokens}\n"
        f"notify:\n  backoff: 0.1\n  webhooks:\n    - {{url: 'http://127.0.0.1:{hook.server_address[1]}/hook'}}\n")
    cfg = tmp_path / "site.yaml"
    cfg.write_text(site_config(n_gas=3, n_robot=1, mqtt=(mosquitto.host, mosquitto.port), prefix=prefix, dsn=db,
                               client_id=f"pw-{uuid.uuid4().hex[:8]}", metrics_port=mport, detectors=extra))
    d = DaemonProcess(cfg, mport)
    topic = f"{prefix}/testsite/edge1/readings"
    ann, ins, eve = (TOKENS[n][1] for n in ("ann", "ins", "eve"))
    d.start()
    try:
        await d.wait_connected()
        await until(lambda: _call(api_port, "/healthz")[0] == 200 if _port_open(api_port) else False, what="api")
        now = time.time()
        await publish_batches(mosquitto.host, mosquitto.port, topic, [
            encode_batch("edge1", 0, [{"sensor": s, "time": now - 60, "value": 1.0} for s in ("G0", "G1", "G2")]),
            encode_batch("edge1", 1, [{"sensor": "G0", "time": now - 50, "value": 12.0}]),  # cause: high-high
            encode_batch("edge1", 2, [{"sensor": "G1", "time": now - 40, "value": 7.0}]),   # consequence: high
        ])
        await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/testsite/robot1/robot", [encode_batch(
            "robot1", 0, [{"sensor": "R0", "time": now - 45 + k, "value": 2.0 + k, "x": 3.0 + k, "y": 8.0}
                          for k in range(5)])])
        alarms = await until(lambda: (lambda r: r[1]["alarms"] if r[0] == 200 and len(r[1]["alarms"]) == 2 else None)(
            _call(api_port, "/api/alarms", ins)), what="two alarms in the API")
        by = {a["sensor"]: a for a in alarms}
        assert [a["sensor"] for a in alarms] == ["G0", "G1"]  # priority 1 (critical) first
        assert by["G0"]["priority"] == 1 and by["G0"]["state"] == "unack"

        # --- authentication and roles
        assert _call(api_port, "/api/alarms")[0] == 401
        assert _call(api_port, "/api/alarms", "wrong-token")[0] == 401
        assert _call(api_port, f"/api/alarms/{by['G1']['id']}/ack", ins, {})[0] == 403
        assert _call(api_port, f"/api/alarms/{by['G1']['id']}/out-of-service", ann, {"reason": "x"})[0] == 403
        assert _call(api_port, f"/api/alarms/{by['G1']['id']}/shelve", ann, {"reason": "x", "duration": 1e9})[0] == 400
        st, body = _call(api_port, f"/api/alarms/{by['G1']['id']}/comment", ann, {"text": "checking G1"})
        assert st == 200 and body["actions"][-1]["reason"] == "checking G1"
        st, body = _call(api_port, f"/api/alarms/{by['G1']['id']}/out-of-service", eve, {"reason": "calibration"})
        assert (st, body["state"], body["oos_by"]) == (200, "out_of_service", "eve")
        st, body = _call(api_port, f"/api/alarms/{by['G1']['id']}/return-to-service", eve, {"reason": "done"})
        assert (st, body["state"]) == (200, "unack")
        assert _call(api_port, "/openapi.json")[1]["openapi"].startswith("3.")

        # --- the page, in a real browser: log in, acknowledge G0, shelve G1
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.ui import WebDriverWait

        g0, g1 = by["G0"]["id"], by["G1"]["id"]
        with chromium() as browser:
            # the list re-renders on every push: an element found just before a refresh goes stale
            wait = WebDriverWait(browser, 20, ignored_exceptions=(StaleElementReferenceException,))
            browser.get(f"http://127.0.0.1:{api_port}/?sort=priority")
            wait.until(EC.visibility_of_element_located((By.ID, "token"))).send_keys(ann)
            browser.find_element(By.ID, "login-button").click()
            wait.until(EC.presence_of_element_located((By.ID, f"alarm-{g0}")))
            ids = browser.execute_script("return [...document.querySelectorAll('#summary tbody tr')].map(r => r.id)")
            assert ids == [f"alarm-{g0}", f"alarm-{g1}"]  # priority, then age
            assert "ann (operator)" in browser.find_element(By.ID, "who").text
            wait.until(lambda b: b.find_element(By.CSS_SELECTOR, f"#alarm-{g0} button.act-ack").click() or True)
            wait.until(lambda b: b.find_element(By.ID, f"alarm-{g0}").get_attribute("data-state") == "ack")
            assert "is now ack" in browser.find_element(By.ID, "status").text
            wait.until(lambda b: b.find_element(By.CSS_SELECTOR, f"#alarm-{g1} button.act-shelve").click() or True)
            wait.until(EC.visibility_of_element_located((By.ID, "action-reason"))).send_keys("known sensor drift")
            browser.find_element(By.ID, "action-duration").send_keys("15 min")
            browser.find_element(By.ID, "action-confirm").click()
            wait.until(lambda b: not b.find_elements(By.ID, f"alarm-{g1}"))  # shelved: off the summary ...
            browser.get(f"http://127.0.0.1:{api_port}/?view=shelved")  # ... and on the shelved list
            wait.until(lambda b: "known sensor drift" in b.find_element(By.ID, f"shelved-{g1}").text)
            # the alarm page Grafana links to
            browser.get(f"http://127.0.0.1:{api_port}/alarms/{g0}")
            wait.until(EC.presence_of_element_located((By.ID, "life")))
            assert "ann (operator)" in browser.find_element(By.ID, "life").text
            # the incident page
            inc_id = _call(api_port, f"/api/alarms/{g0}", ins)[1]["incident_id"]
            assert inc_id and _call(api_port, f"/api/alarms/{g1}", ins)[1]["incident_id"] == inc_id
            browser.get(f"http://127.0.0.1:{api_port}/incidents/{inc_id}")
            title = wait.until(EC.presence_of_element_located((By.ID, "incident-title")))
            assert "G0" in title.text
            browser.save_screenshot(str(tmp_path / "incident-page.png"))

        # --- the database record and the audit chain
        conn = await asyncpg.connect(db)
        try:
            a = await conn.fetchrow("SELECT state, acked_by, acked_at FROM alarms WHERE id = $1", g0)
            assert (a["state"], a["acked_by"]) == ("ack", "ann") and a["acked_at"] is not None
            act = await conn.fetchrow("SELECT id, actor, role, from_state, to_state FROM operator_actions"
                                      " WHERE alarm_id = $1 AND action = 'ack'", g0)
            assert (act["actor"], act["role"], act["from_state"], act["to_state"]) == ("ann", "operator", "unack", "ack")
            entry = await conn.fetchrow("SELECT seq, body::text AS body FROM audit_log WHERE ref = $1",
                                        f"operator_action:{act['id']}")
            assert json.loads(entry["body"])["actor"] == "ann"
            change = await conn.fetchrow("SELECT id FROM alarm_changes WHERE alarm_id = $1 AND to_state = 'ack'", g0)
            assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE ref = $1", f"alarm_change:{change['id']}") == 1
            s1 = await conn.fetchrow("SELECT state, shelved_by, state_reason,"
                                     " extract(epoch FROM shelved_until - shelved_at) AS dur FROM alarms WHERE id = $1", g1)
            assert (s1["state"], s1["shelved_by"], s1["state_reason"], float(s1["dur"])) == (
                "shelved", "ann", "known sensor drift", 900.0)
        finally:
            await conn.close()
        r = _cli("audit", "verify", "--dsn", db)
        assert r.returncode == 0 and "audit chain OK" in r.stdout, r.stdout + r.stderr
        assert _call(api_port, "/api/audit/verify", ins)[1]["ok"] is True

        # --- webhooks: retried past the failures, cause notified
        await until(lambda: any(m.get("to") == "ack" for m in Hook.received), what="webhook for the ack")
        assert any(m.get("incident", {}).get("opened") for m in Hook.received)

        # --- a shelve runs out on its own (the daemon's alarm clock): G0 is still active → unack
        st, body = _call(api_port, f"/api/alarms/{g0}/shelve", ann, {"reason": "brief", "duration": 1})
        assert (st, body["state"]) == (200, "shelved")
        await until(lambda: _call(api_port, f"/api/alarms/{g0}", ins)[1]["state"] == "unack", timeout=15,
                     what="shelve expiry")
        last = _call(api_port, f"/api/alarms/{g0}", ins)[1]["actions"][-1]
        assert (last["action"], last["actor"]) == ("shelve_expired", "system")
        assert _call(api_port, f"/api/alarms/{g0}/ack", ann, {})[1]["state"] == "ack"

        # --- restart: the states survive
        assert d.terminate() == 0, d.log()
        d.start()
        await d.wait_connected()
        await until(lambda: _port_open(api_port), what="api after restart")
        states = {a["id"]: a["state"] for a in _call(api_port, "/api/alarms", ins)[1]["alarms"]}
        assert states == {g0: "ack", g1: "shelved"}
        assert d.terminate() == 0, d.log()
    finally:
        hook.shutdown()
        if d.proc and d.proc.poll() is None:
            d.kill()

    # --- the incident report, written by the CLI and opened in the browser: renders, has plots,
    #     makes no request of its own
    out = tmp_path / "incident.html"
    r = _cli("incident", "report", str(inc_id), "--dsn", db, "--out", str(out))
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert not re.search(r"""(src|href|action)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import""", text)
    assert "<script" not in text
    with chromium() as browser:
        browser.get(out.as_uri())
        assert browser.find_element(By.ID, "title").text.startswith(f"Incident {inc_id}")
        for pid in ("plot-readings", "plot-timeline", "plot-map"):
            svg = browser.find_element(By.CSS_SELECTOR, f"#{pid} svg")
            assert svg.size["width"] > 200 and svg.size["height"] > 50, pid
        assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
        assert "G1" in browser.find_element(By.ID, "alarms").text
        assert "shelve" in browser.find_element(By.ID, "timeline").text
        assert "R0" in browser.find_element(By.ID, "robot").text
        assert "h2s-limit" in browser.find_element(By.ID, "detectors").text
        browser.save_screenshot(str(tmp_path / "report.png"))
    r = _cli("incident", "list", "--dsn", db)
    assert r.returncode == 0 and "G0" in r.stdout
    r = _cli("incident", "show", str(inc_id), "--dsn", db)
    assert r.returncode == 0 and "known sensor drift" in r.stdout, r.stdout


def _port_open(port: int) -> bool:
    import socket
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
