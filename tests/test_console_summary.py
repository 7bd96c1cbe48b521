"""The operator console as a DCS-style alarm summary, in headless Chromium against a real daemon,
Mosquitto and TimescaleDB, with readings published through the broker: banner, rows, filters
and sort in the URL, acknowledge selected / page / incident (one audited action per alarm),
shelved and suppressed lists, the detail view, the horn, login per browser with CSRF, the live
push and "connection lost", and the layout at 1920x1080 and 1366x768."""
from __future__ import annotations

import time

import asyncpg
import pytest

from .browser import chromium
from .console_rig import SCREENSHOTS, ConsoleSite, login, rows, wait_js

pytestmark = pytest.mark.slow

SUPPRESS = "  suppress_when: [{alarms: {sensors: [P1]}, upstream: {detector: p-limit, sensors: [P0]}}]\n"


def _states(browser) -> dict[str, str]:
    return dict(rows(browser))


async def test_console_summary_in_a_browser(tmp_path, mosquitto, db, topic_prefix):
    from selenium.webdriver.common.by import By

    site = ConsoleSite(tmp_path, mosquitto, db, topic_prefix, alarms=SUPPRESS)
    await site.start()
    now = time.time()
    try:
        await site.publish([(s, now - 120, 1.0) for s in ("G0", "G1", "G2", "G3", "G4", "G5")] +
                           [("P0", now - 120, 20.0), ("P1", now - 120, 20.0)])
        with chromium() as browser:
            login(browser, site)
            wait_js(browser, "return document.querySelector('#conn').textContent === 'live'", what="the live stream")
            assert wait_js(browser, "return document.querySelector('#count-p1')?.dataset.unack") == "0"

            # --- push: a raise appears without a reload (the page keeps its marker), brought by the
            #     stream and not by the page's 5 s refresh: well within 5 s of the alarm change (its
            #     row's updated_at, written in the transaction that raised it). How fast it is on a
            #     quiet machine is the printed figure (79-520 ms), not an assertion: on the loaded
            #     2-core CI machine it once took 1.14 s.
            browser.execute_script("window.__same_page = 1; window.__seen = null;"
                                   " new MutationObserver(() => { if (!window.__seen && document.querySelector("
                                   "'#summary tbody tr[data-state=unack]')) window.__seen = Date.now(); })"
                                   ".observe(document.querySelector('#summary tbody'), {childList: true});")
            t0 = time.time()
            await site.publish([("G0", now - 100, 12.0)])
            seen = wait_js(browser, "return window.__seen", timeout=5, what="G0 pushed into the summary") / 1000
            changed = next(a["updated_at"] for a in site.call("/api/alarms", site.token("ins"))[1]["alarms"])
            print(f"\npush: the raise was on the page {(seen - changed) * 1000:.0f} ms after the alarm change was"
                  f" written ({(seen - t0) * 1000:.0f} ms after the reading was published to the broker)")
            assert browser.execute_script("return window.__same_page") == 1  # no reload
            assert seen - changed < 3.0
            # --- the horn: a new priority-1 alarm sounds; silencing does not acknowledge
            assert browser.find_element(By.ID, "horn").is_displayed()
            browser.find_element(By.ID, "silence").click()
            assert not browser.find_element(By.ID, "horn").is_displayed()
            assert _states(browser) == {"G0": "unack"}

            # --- the rest of the scenario
            await site.publish([("G1", now - 90, 7.0)])
            await site.publish([("G2", now - 85, 12.0)])
            await site.publish([("G2", now - 80, 1.0)])        # cleared: rtn_unack, keeps "high_high (cleared)"
            await site.publish([("P0", now - 75, 36.0)])
            await site.publish([("P1", now - 70, 31.0)])       # suppressed by design while P0 is active
            await site.publish([("G3", now - 65, 7.0)])
            expected = {"G3": "unack", "P0": "unack", "G2": "rtn_unack", "G1": "unack", "G0": "unack"}
            wait_js(browser, f"return document.querySelectorAll('#summary tbody tr[data-id]').length === 5",
                    what="five active alarms")
            assert rows(browser) == list(expected.items())  # newest first by default
            ids = {tag: a["id"] for tag, a in site.summary().items()}

            def click(sel: str) -> None:
                browser.execute_script("document.querySelector(arguments[0]).click()", sel)

            def txt(sel: str) -> str:  # the summary re-renders on every push: read it in one go
                return browser.execute_script("return document.querySelector(arguments[0])?.textContent ?? ''", sel)
            # --- the banner follows: per priority unack / ack, oldest unack, flood state per position
            counts = browser.execute_script("return [1,2,3,4].map(p => { const c = document.querySelector('#count-p' + p);"
                                            " return [c.dataset.unack, c.dataset.ack]; })")
            assert counts == [["3", "0"], ["2", "0"], ["0", "0"], ["0", "0"]]
            assert "G0" in browser.execute_script("return document.querySelector('#oldest').textContent")
            assert set(browser.execute_script("return [...document.querySelectorAll('#banner .pos')]"
                                              ".map(e => e.dataset.position)")) >= {"pos-gas", "pos-press"}

            # --- the row: priority by shape + text, alarmed condition kept on the cleared row, values with units
            g2, p0 = f"#alarm-{ids['G2']}", f"#alarm-{ids['P0']}"
            assert "high_high (cleared)" in txt(f"{g2} td.cond")
            assert "P1" in txt(f"{g2} td.pcell") and txt(f"{g2} td.pcell .shape.p1") == ""
            assert browser.execute_script(f"return !!document.querySelector('{g2} td.pcell .shape.p1')")
            assert "12 ppm" in txt(f"{g2} td.val") and "live 1 ppm" in txt(f"{g2} td.val")  # at alarm, live
            assert txt(f"{g2} td.lim") == "10 ppm"
            assert txt(f"{g2} .ind span") == "RTN"
            assert txt(f"{p0} .ind span") == "!"
            assert "area2" in txt(p0) and "pos-press" in txt(p0)
            assert "36 bar" in txt(f"{p0} td.val") and txt(f"{p0} td.lim") == "35 bar"
            raised = browser.execute_script(f"const t = document.querySelector('{p0} td.time time');"
                                            " return [t.textContent, t.title]")
            assert raised[0].endswith("Z") and len(raised[1]) == len("2026-01-01 00:00:00.000Z")
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)

            # --- filters and sorts give the expected rows; the view lives in the URL
            def view(query: str) -> list[tuple[str, str]]:
                browser.get(site.url + "/" + query)
                wait_js(browser, "return document.querySelector('#page-info')?.textContent", what="the summary")
                return rows(browser)
            assert [t for t, _ in view("?prio=1")] == ["P0", "G2", "G0"]
            assert [t for t, _ in view("?area=area2")] == ["P0"]
            assert [t for t, _ in view("?position=pos-gas&sort=oldest")] == ["G0", "G1", "G2", "G3"]
            assert [t for t, _ in view("?sort=priority")] == ["P0", "G2", "G0", "G3", "G1"]
            assert view("?state=rtn_unack") == [("G2", "rtn_unack")]
            assert view("?q=g1") == [("G1", "unack")]
            sup = view("?state=suppressed")
            assert sup == [("P1", "suppressed")]
            assert "SUPPRESSED" in txt(f"#alarm-{ids['P1']}")
            view("")  # the controls write the URL
            browser.find_element(By.CSS_SELECTOR, ".f-prio[value='2']").click()
            wait_js(browser, "return location.search === '?prio=2'", what="the filter in the URL")
            assert [t for t, _ in rows(browser)] == ["G3", "G1"]

            # --- acknowledge the visible page: exactly its rows, one audited action each
            assert [t for t, _ in view("?position=pos-gas&sort=oldest")] == ["G0", "G1", "G2", "G3"]
            browser.find_element(By.ID, "ack-page").click()
            wait_js(browser, "return [...document.querySelectorAll('#summary tbody tr[data-id]')]"
                             ".every(r => r.dataset.state === 'ack')", what="the page acknowledged")
            assert rows(browser) == [("G0", "ack"), ("G1", "ack"), ("G3", "ack")]  # G2 was rtn_unack: now normal
            conn = await asyncpg.connect(db)
            try:
                acts = dict(await conn.fetch("SELECT alarm_id, count(*) FROM operator_actions WHERE action = 'ack'"
                                             " GROUP BY alarm_id"))
                assert acts == {ids["G0"]: 1, ids["G1"]: 1, ids["G2"]: 1, ids["G3"]: 1}  # not P0: not on the page
                audited = await conn.fetchval("SELECT count(*) FROM audit_log WHERE ref IN (SELECT 'operator_action:'"
                                              " || id FROM operator_actions WHERE action = 'ack')")
                assert audited == 4
            finally:
                await conn.close()
            view("")
            counts = browser.execute_script("return [1,2].map(p => { const c = document.querySelector('#count-p' + p);"
                                            " return [c.dataset.unack, c.dataset.ack]; })")
            assert counts == [["1", "1"], ["0", "2"]]

            # --- acknowledge selected: a new alarm, picked by its checkbox
            await site.publish([("G4", now - 60, 12.0)])
            wait_js(browser, "return document.querySelector('#summary tbody tr[data-state=unack] td.tag')?.textContent"
                             ".startsWith('G4')", what="G4 pushed")
            g4 = site.summary()["G4"]["id"]
            click(f"input.pick[data-id='{g4}']")
            browser.find_element(By.ID, "ack-selected").click()
            wait_js(browser, f"return document.querySelector('#alarm-{g4}')?.dataset.state === 'ack'", what="G4 acked")
            assert site.summary()["P0"]["state"] == "unack"

            # --- shelve with reason and expiry; the shelved list and the suppressed list
            click(f"#alarm-{ids['G1']} button.act-shelve")
            wait_js(browser, "return !document.querySelector('#action-panel').hidden", what="the action panel")
            browser.find_element(By.ID, "action-reason").send_keys("sensor maintenance")
            browser.find_element(By.ID, "action-duration").send_keys("15 min")
            browser.find_element(By.ID, "action-confirm").click()
            wait_js(browser, f"return document.querySelector('#alarm-{ids['G1']}') === null", what="G1 leaves the summary")
            browser.get(site.url + "/?view=shelved")
            wait_js(browser, "return document.querySelector('#shelved-list')", what="the shelved list")
            shelved = txt(f"#shelved-{ids['G1']}")
            assert "G1" in shelved and "sensor maintenance" in shelved and "ann" in shelved
            browser.save_screenshot(str(SCREENSHOTS / "console-shelved.png"))
            click(f"#shelved-{ids['G1']} button.act-unshelve")
            wait_js(browser, "return !document.querySelector('#action-panel').hidden", what="the action panel")
            browser.find_element(By.ID, "action-confirm").click()
            wait_js(browser, f"return document.querySelector('#shelved-{ids['G1']}') === null", what="G1 unshelved")
            browser.get(site.url + "/?view=suppressed")
            wait_js(browser, "return document.querySelector('#suppressed-list')", what="the suppressed list")
            hidden = txt(f"#suppressed-{ids['P1']}")
            assert "P1" in hidden and "p-limit/P0 is active" in hidden and "high (" not in hidden

            # --- the detail of a selected alarm; acknowledge its incident
            browser.get(site.url + "/")
            wait_js(browser, f"return document.querySelector('#alarm-{ids['P0']}')", what="P0 row")
            click(f"#alarm-{ids['P0']} td.tag")
            wait_js(browser, "return document.querySelector('#trend polyline')", what="the trend")
            assert f"sel={ids['P0']}" in browser.current_url
            assert browser.execute_script("return document.querySelectorAll('#trend line.limit').length") == 2
            assert browser.execute_script("return !!document.querySelector('#alarm-span')")
            assert "normal → unack" in txt("#life")
            assert "p-limit" in txt("#detector-config") and "high_high" in txt("#detector-config")
            browser.save_screenshot(str(SCREENSHOTS / "console-detail.png"))
            click("#ack-incident")
            wait_js(browser, f"return document.querySelector('#alarm-{ids['P0']}')?.dataset.state === 'ack'",
                    what="P0 acked with its incident")
            # P1 is suppressed: skipped, not acknowledged
            wait_js(browser, "return document.querySelector('#status').textContent.includes('acknowledged 1 alarm(s)')",
                    what="the incident's acknowledgement reported")
            wait_js(browser, "return document.querySelector('#life')?.textContent.includes('ann (operator)')",
                    what="the ack in the alarm's life")

            # --- login per browser: a second tab is logged in; an action without the CSRF token is refused
            browser.switch_to.new_window("tab")
            browser.get(site.url + f"/alarms/{ids['G0']}")
            wait_js(browser, "return document.querySelector('#who').textContent", what="second tab logged in")
            assert "ann (operator)" in browser.find_element(By.ID, "who").text
            assert not browser.find_element(By.ID, "login").is_displayed()
            post = ("const cb = arguments[arguments.length - 1]; fetch('/api/alarms/ack', {method: 'POST',"
                    " headers: Object.assign({'Content-Type': 'application/json'}, arguments[0]),"
                    f" body: JSON.stringify({{ids: [{ids['G0']}]}})}}).then(r => cb(r.status))")
            assert browser.execute_async_script(post, {}) == 403
            assert browser.execute_async_script(post, {"X-CSRF-Token": "forged"}) == 403
            assert browser.execute_async_script(post.replace("arguments[0]", "{'X-CSRF-Token': csrf}")) == 200
            assert site.call("/api/alarms/ack", site.token("ins"), {"ids": [ids["G0"]]})[0] == 403  # reads only
            ann = site.token("ann")  # acknowledge many: bad bodies are 400 with the reason, never a 500
            for bad, why in (({}, "either ids or incident"), ({"ids": [1], "incident": 1}, "either ids or incident"),
                             ({"ids": ["1"]}, "ids.0"), ({"ids": [0]}, "ids.0"), ({"incident": 1.5}, "incident"),
                             ({"ids": list(range(1, 5002))}, "ids"), ({"ids": [1], "colour": "red"}, "colour")):
                st, body = site.call("/api/alarms/ack", ann, bad)
                assert st == 400 and why in body["error"], (bad, st, body)
            assert site.call("/api/alarms/ack", ann, {"incident": 999999})[0] == 404
            assert site.call("/api/alarms/ack", ann, {"ids": [999999]}) == (
                200, {"acked": [], "skipped": [{"id": 999999, "error": "no such alarm"}]})
            cookie = browser.get_cookie("pw_session")
            assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"

            # --- layout: no horizontal scroll at 1920x1080 and 1366x768
            browser.switch_to.window(browser.window_handles[0])
            for w, h in ((1920, 1080), (1366, 768)):
                browser.set_window_size(w, h)
                view("?state=all")
                width = browser.execute_script("return [document.documentElement.scrollWidth,"
                                               " document.documentElement.clientWidth]")
                assert width[0] <= width[1], (w, h, width)
            browser.save_screenshot(str(SCREENSHOTS / "console-summary-1366.png"))

            # --- the push stops: "connection lost" within 5 s
            view("")
            site.daemon.kill()
            t0 = time.monotonic()
            wait_js(browser, "return document.querySelector('#conn').textContent.includes('CONNECTION LOST')",
                    timeout=5, what="connection lost shown")
            print(f"connection lost: shown {(time.monotonic() - t0) * 1000:.0f} ms after the daemon was killed")
    finally:
        site.stop()
