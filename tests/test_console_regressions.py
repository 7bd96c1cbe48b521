"""Regressions of the operator console found by operators during the demo's leak (issue 17):

* a cleared row read "normal (cleared)" instead of the condition that alarmed ("high_high (cleared)");
* each row needed its own acknowledge click: there was no acknowledge-page (nor incident) action.
"""
from __future__ import annotations

import time

import asyncpg
import pytest

from .browser import chromium
from .console_rig import ConsoleSite, login, wait_js
from .helpers import until

pytestmark = pytest.mark.slow


async def _raise_three(site: ConsoleSite) -> dict[str, int]:
    now = time.time()
    await site.publish([(s, now - 60, 1.0) for s in ("G0", "G1", "G2")])
    await site.publish([("G0", now - 50, 12.0), ("G1", now - 45, 12.0), ("G2", now - 40, 7.0)])
    await site.publish([("G0", now - 30, 1.0)])  # G0 clears: rtn_unack
    alarms = await until(lambda: (lambda r: r[1]["alarms"] if r[0] == 200 and len(r[1]["alarms"]) == 3
                                  and any(a["state"] == "rtn_unack" for a in r[1]["alarms"]) else None)(
        site.call("/api/alarms", site.token("ins"))), what="three alarms, G0 cleared")
    return {a["sensor"]: a["id"] for a in alarms}


async def test_cleared_row_shows_the_condition_that_alarmed(tmp_path, mosquitto, db, topic_prefix):
    site = ConsoleSite(tmp_path, mosquitto, db, topic_prefix, n_gas=3, n_pressure=0)
    await site.start()
    try:
        ids = await _raise_three(site)
        with chromium() as browser:
            login(browser, site)
            text = wait_js(browser, f"return document.querySelector('#alarm-{ids['G0']}')?.textContent",
                           what="the cleared row")
            assert "normal (cleared)" not in text and "high_high (cleared)" in " ".join(text.split()), text
    finally:
        site.stop()


async def test_one_click_acknowledges_the_visible_page(tmp_path, mosquitto, db, topic_prefix):
    site = ConsoleSite(tmp_path, mosquitto, db, topic_prefix, n_gas=3, n_pressure=0)
    await site.start()
    try:
        ids = await _raise_three(site)
        # the API: one request for many alarms, one audited operator action each
        st, body = site.call("/api/alarms/ack", site.token("ann"), {"ids": [ids["G1"], ids["G2"]]})
        assert st == 200, body
        assert sorted(body["acked"]) == sorted([ids["G1"], ids["G2"]])
        with chromium() as browser:
            login(browser, site, path="/?prio=1")
            wait_js(browser, f"return document.querySelector('#alarm-{ids['G0']}')", what="G0's row")
            browser.execute_script("document.querySelector('#ack-page').click()")  # one click for the page
            wait_js(browser, f"return document.querySelector('#alarm-{ids['G0']}') === null",
                    what="G0 (rtn_unack) acknowledged away")
        conn = await asyncpg.connect(db)
        try:
            acts = dict(await conn.fetch("SELECT alarm_id, count(*) FROM operator_actions WHERE action = 'ack'"
                                         " GROUP BY alarm_id"))
        finally:
            await conn.close()
        assert acts == {ids["G0"]: 1, ids["G1"]: 1, ids["G2"]: 1}
    finally:
        site.stop()
