"""``plantwatch demo --keep``: after the result table the daemon, the embedded broker and database
and the console keep running, with the console's URL and an operator and an inspector login
printed, until Ctrl-C. The console is opened in a browser during the demo's leak (the screenshot
docs/console.md shows)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from plantwatch.connectors.services import free_port

from .browser import chromium
from .console_rig import SCREENSHOTS, wait_js

pytestmark = pytest.mark.slow


def _get(url: str, token: str):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_demo_keep_leaves_the_console_running(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "plantwatch.daemon.cli.main", "demo", "--keep", "--duration", "40",
                             "--data-dir", str(tmp_path / "data"), "--console-port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "160"})
    out: list[str] = []
    try:
        end = time.monotonic() + 300
        while time.monotonic() < end:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            if "Ctrl-C stops them" in line:
                break
        text = "".join(out)
        assert "incidents detected" in text, text[-3000:]  # the result table came first
        url = re.search(r"console: (http://\S+)/", text).group(1)
        operator = re.search(r"operator login token: (\S+)", text).group(1)
        inspector = re.search(r"inspector login token: (\S+)", text).group(1)
        assert url == f"http://localhost:{port}"
        assert _get(url + "/api/whoami", inspector)["role"] == "inspector"
        alarms = _get(url + "/api/console/alarms", inspector)["alarms"]
        assert any(a["detector_id"] == "gas-h2s-limit" for a in alarms), alarms
        time.sleep(2)
        assert proc.poll() is None  # still running after the table
        with chromium() as browser:
            browser.set_window_size(1920, 1080)
            browser.get(url + "/?sort=priority&state=all")
            wait_js(browser, "return document.querySelector('#token')?.offsetParent !== null", what="login form")
            browser.execute_script("document.querySelector('#token').value = arguments[0]", operator)
            browser.execute_script("document.querySelector('#login-button').click()")
            wait_js(browser, "return document.querySelectorAll('#summary tbody tr[data-id]').length > 0",
                    what="the demo's alarms in the summary")
            assert "operator (operator)" in browser.execute_script("return document.querySelector('#who').textContent")
            leak = [a["id"] for a in alarms if a["detector_id"] == "gas-h2s-limit"]
            shown = wait_js(browser, "return arguments[0].filter(id => document.querySelector('#alarm-' + id))", leak,
                            what="the leak's alarms on the summary")
            assert "gas-h2s-limit" in browser.execute_script(f"return document.querySelector('#alarm-{shown[0]}')"
                                                             ".textContent")
            wait_js(browser, "return document.querySelector('#conn').textContent === 'live'", what="live")
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(SCREENSHOTS / "console-demo-leak.png"))
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest[-3000:]
        assert "stopped: daemon, console, broker and database" in rest
        assert "Traceback" not in rest, rest[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
