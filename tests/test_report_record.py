"""The report an inspector files (issue 16): its timeline in the order of the record (an ack that
arrives before the backlog's return-to-normal comes before it, both times shown), each alarm
with its value, limit and unit, the detector configuration as YAML with the sensors, and the
chain head and slice digests recorded so that a saved report is verified offline against an
export."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone

from plantwatch.connectors import alarm_db, report_record

from .test_alarm_db import Rig, rig  # noqa: F401 - fixture
from .test_audit_record import T0, cli, incident, reader_dsn, record, write_readings  # noqa: F401 - fixture
from .test_incident_report import report  # noqa: F401 - fixture


def _rows(html: str, table: str) -> list[list[str]]:
    body = html.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    return [re.findall(r"<td[^>]*>(.*?)</td>", r, flags=re.S) for r in re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S)][1:]


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


async def test_timeline_keeps_an_ack_before_the_backlogs_return_to_normal(rig: Rig, db, tmp_path):  # noqa: F811
    await write_readings(rig)
    rig.now["t"] = T0 + 5  # the operator acknowledges at T0 + 5 ...
    await rig.change("G0", "normal", "high", T0)
    await rig.act("G0", "ack")
    await rig.change("G0", "high", "normal", T0 + 2)  # ... the backlog's return to normal was read at T0 + 2
    async with rig.store.pool.acquire() as conn:
        iid = await alarm_db.latest_incident_id(conn, ["G0"])
    out = tmp_path / "r.html"
    r = cli("incident", "report", str(iid), "--dsn", reader_dsn(db), "--out", str(out))
    assert r.returncode == 0, r.stderr
    html = out.read_text(encoding="utf-8")
    rows = _rows(html, "timeline")
    what = [(x[3], x[5].split(" (")[0]) for x in rows]
    assert what == [("alarm change", "normal → unack"), ("alarm change", "unack → ack"), ("operator: ack", ""),
                    ("alarm change", "ack → normal")], what
    seqs = [int(x[0]) for x in rows]
    assert seqs == sorted(seqs)
    # reading time and processing time both shown: the return to normal was read before the ack was made
    assert rows[-1][1] == _utc(T0 + 2) and rows[2][1] == _utc(T0 + 5) and all(x[2] for x in rows), rows
    # the alarm line: value at alarm time, the limit and the unit
    (alarm,) = _rows(html, "alarms")
    assert alarm[2] == "G0" and alarm[5] == "high" and alarm[6] == "1 ppm" and alarm[7] == "5 ppm", alarm
    # the configuration in force as YAML, with the sensor's description fields
    yaml_text = html.split('<pre id="detectors">', 1)[1].split("</pre>", 1)[0]
    assert "detectors:" in yaml_text and "id: h2s" in yaml_text and "high: 5" in yaml_text, yaml_text
    assert "sensors:" in yaml_text and "id: G0" in yaml_text and "unit: ppm" in yaml_text, yaml_text


async def test_saved_report_verifies_offline_against_an_export(record, tmp_path):
    rig, admin, iid, ids = record
    ro = reader_dsn(rig.dsn)
    report, export = tmp_path / "r.html", tmp_path / "e.jsonl"
    assert cli("incident", "report", str(iid), "--dsn", ro, "--out", str(report)).returncode == 0
    assert cli("audit", "export", "--dsn", ro, "--out", str(export)).returncode == 0
    html = report.read_text(encoding="utf-8")
    rec = report_record.extract(html)
    head = await admin.fetchrow("SELECT seq, hash FROM audit_head")
    assert rec["head"] == {"seq": head["seq"], "hash": head["hash"]}
    assert {s["sensor"] for s in rec["slices"]} >= {"G0", "G1"} and all(s["digest"] for s in rec["slices"])
    assert any(e["ref"] == f"incident:{iid}" for e in rec["entries"])
    assert head["hash"] in html and len(_rows(html, "slices")) == len(rec["slices"])
    r = cli("audit", "verify", "--export", str(export), "--report", str(report))
    assert r.returncode == 0 and "audit chain OK" in r.stdout, r.stdout
    # a report edited after it was written (its title, a digest) is named
    forged = tmp_path / "forged.html"
    rec2 = json.loads(json.dumps(rec))
    rec2["facts"]["title"] = "routine check"
    rec2["slices"][0]["digest"] = "0" * 64
    forged.write_text(html.replace(report_record.embed(rec), report_record.embed(rec2)), encoding="utf-8")
    r = cli("audit", "verify", "--export", str(export), "--report", str(forged))
    assert r.returncode == 1 and "title: the chain says" in r.stdout and "'routine check'" in r.stdout, r.stdout
    assert f"the report's digest of readings slice {rec['slices'][0]['start']}" in r.stdout, r.stdout
    # a report made from a database edited behind the chain's back does not verify either
    await admin.execute("UPDATE incidents SET title = 'routine check' WHERE id = $1", iid)
    assert cli("incident", "report", str(iid), "--dsn", ro, "--out", str(report)).returncode == 0
    r = cli("audit", "verify", "--export", str(export), "--report", str(report))
    assert r.returncode == 1 and "title: the chain says" in r.stdout, r.stdout


async def test_console_open_report_is_the_stable_report_address(record):
    """In a real browser: the incident page's "Open report" goes to /incidents/{id}/report, which
    shows the report at that address (with the tab's token), not a blob: URL."""
    import asyncio
    import uuid

    from aiohttp import web

    from plantwatch.connectors.services import free_port
    from plantwatch.daemon.alarms.api import Api, Tokens, hash_token
    from plantwatch.daemon.alarms.report import incident_report_html

    from .browser import chromium

    rig, _, iid, _ = record
    token = "tok-" + uuid.uuid4().hex

    async def no_actions(ops):  # this test only reads
        raise AssertionError("no action expected")

    api = Api(records=rig.store.alarm_records, book=rig.book, submit=no_actions,
              tokens=Tokens([("ins", "inspector", hash_token(token))]), site="s1",
              report=lambda i: incident_report_html(rig.store.alarm_records, i))
    runner = web.AppRunner(api.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"

    def browse() -> tuple[str, str, str, str]:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.ui import WebDriverWait

        with chromium() as b:
            wait = WebDriverWait(b, 30)
            b.get(f"{base}/incidents/{iid}/report")  # no token yet: says where to log in
            no_token = wait.until(EC.presence_of_element_located((By.ID, "status"))).text
            # log in as the console does: a session cookie for the whole browser
            b.execute_async_script("""const done = arguments[arguments.length - 1];
                fetch('/api/session', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                       body: JSON.stringify({token: arguments[0]})}).then(r => done(r.status));""", token)
            b.get(f"{base}/incidents/{iid}")
            link = wait.until(EC.element_to_be_clickable((By.ID, "open-report")))
            href = link.get_attribute("href")
            link.click()
            title = wait.until(EC.presence_of_element_located((By.ID, "title"))).text
            return no_token, href, b.current_url, title

    try:
        no_token, href, url, title = await asyncio.to_thread(browse)
    finally:
        await runner.cleanup()
    assert "Log in" in no_token, no_token
    assert href == f"{base}/incidents/{iid}/report" and url == href, (href, url)
    assert title.startswith(f"Incident {iid}:"), title


def test_robot_readings_collapsed_to_the_involved_channels_in_the_incident_window(report):
    """A daemon run (tests/test_incident_report.py): R0's readings raised the incident's robot alarm,
    R1 (another quantity) stayed low. The robot table lists R0's readings during the incident and
    only a summary row for R1."""
    html, _ = report
    rows = _rows(html, "robot")
    listed = [r for r in rows if len(r) == 5]
    summary = [r[0] for r in rows if len(r) == 1]
    assert listed and {r[1] for r in listed} == {"R0"}, rows
    assert any(s.startswith("R1: 5 more reading(s) not listed (a channel not involved)") for s in summary), summary
