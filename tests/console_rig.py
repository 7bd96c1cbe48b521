"""A daemon with the operator console for the browser tests: config, tokens, publishing through
the broker, logging a headless Chromium in, and reading the page."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from plantwatch.connectors.services import free_port
from plantwatch.connectors.wire import encode_batch
from plantwatch.daemon.alarms.api import hash_token

from .helpers import DaemonProcess, new_metrics_port, publish_batches, site_config, until

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"

GAS_LIMIT = "  - {id: h2s-limit, type: limit, select: {kind: gas}, params: {high: 5, high_high: 10, deadband: 0.5}}\n"
PRESSURE_LIMIT = "  - {id: p-limit, type: limit, select: {kind: pressure}, params: {high: 30, high_high: 35, deadband: 0.5}}\n"


class ConsoleSite:
    """Config file, tokens and the daemon process of one console test."""

    def __init__(self, tmp_path: Path, mosquitto, db: str, topic_prefix: str, *, n_gas: int = 6, n_pressure: int = 2,
                 alarms: str = "", api: str = ""):
        self.mosquitto = mosquitto
        self.prefix = topic_prefix.rstrip("/")
        self.tokens = {"ann": ("operator", "tok-ann-" + uuid.uuid4().hex),
                       "ins": ("inspector", "tok-ins-" + uuid.uuid4().hex)}
        self.port, mport = free_port(), new_metrics_port()
        toks = "\n".join(f"      - {{name: {n}, role: {r}, sha256: {hash_token(t)}}}" for n, (r, t) in self.tokens.items())
        extra = ("detectors:\n" + GAS_LIMIT + (PRESSURE_LIMIT if n_pressure else "") + "alarms:\n  incidents: {window: 600, close_after: 3600}\n"
                 "  positions: [{id: pos-gas, areas: [area1]}, {id: pos-press, areas: [area2]}]\n" + alarms +
                 f"api:\n  port: {self.port}\n  tokens:\n{toks}\n" + api)
        cfg = tmp_path / "site.yaml"
        cfg.write_text(site_config(n_gas=n_gas, n_pressure=n_pressure, mqtt=(mosquitto.host, mosquitto.port),
                                   prefix=self.prefix, dsn=db, client_id=f"pw-{uuid.uuid4().hex[:8]}",
                                   metrics_port=mport, detectors=extra))
        self.daemon = DaemonProcess(cfg, mport)
        self.seq = 0
        self.url = f"http://127.0.0.1:{self.port}"

    def token(self, name: str) -> str:
        return self.tokens[name][1]

    async def start(self) -> None:
        self.daemon.start()
        await self.daemon.wait_connected()
        await until(lambda: self.call("/healthz")[0] == 200, what="the console's API")

    def stop(self) -> None:
        if self.daemon.proc and self.daemon.proc.poll() is None:
            self.daemon.kill()

    async def publish(self, readings: list[tuple[str, float, float]]) -> None:
        """(sensor, time, value) readings, one batch, through the broker."""
        batch = encode_batch("edge1", self.seq, [{"sensor": s, "time": t, "value": v} for s, t, v in readings])
        self.seq += 1
        await publish_batches(self.mosquitto.host, self.mosquitto.port, f"{self.prefix}/testsite/edge1/readings", [batch])

    def call(self, path: str, token: str | None = None, body=None, headers: dict | None = None):
        req = urllib.request.Request(self.url + path, method="POST" if body is not None else "GET",
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json", **(headers or {}),
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")
        except OSError as e:  # not listening (yet)
            return 0, {"error": str(e)}

    def summary(self) -> dict[str, dict]:
        """tag -> summary row, as the API answers now."""
        st, body = self.call("/api/console/alarms", self.token("ins"))
        assert st == 200, body
        return {a["sensor"]: a for a in body["alarms"]}


def login(browser, site: ConsoleSite, name: str = "ann", path: str = "/") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(site.url + path)
    wait = WebDriverWait(browser, 20)
    wait.until(EC.visibility_of_element_located((By.ID, "token"))).send_keys(site.token(name))
    browser.find_element(By.ID, "login-button").click()
    wait.until(EC.presence_of_element_located((By.ID, "who")))
    wait.until(lambda b: b.find_element(By.ID, "who").text)


def rows(browser) -> list[tuple[str, str]]:
    """(tag, state) of the summary's rows, top to bottom."""
    return [tuple(x) for x in browser.execute_script(
        "return [...document.querySelectorAll('#summary tbody tr[data-id]')]"
        ".map(r => [r.querySelector('td.tag').firstChild.textContent, r.dataset.state])")]


def wait_js(browser, script: str, *args, timeout: float = 20.0, what: str = "page condition"):
    """Poll a JavaScript expression (``return ...``, with ``arguments``) until truthy; returns its value."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = browser.execute_script(script, *args)
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
