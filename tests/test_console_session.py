"""Login per browser with a name and password (``api.users``): the hash in the config, the CLI
that makes it, a bad hash refused at load with its place, and the console's login form in a
real browser against a real daemon (a wrong password refused, the session cookie after the right one)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from plantwatch.daemon.config.console_users import hash_password, password_matches
from plantwatch.daemon.config.model import ConfigError, load_config_text

from .browser import chromium
from .console_rig import ConsoleSite, wait_js
from .helpers import site_config

PASSWORD = "correct horse battery staple"


def test_password_hash_from_the_cli_matches_only_its_password():
    r = subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", "token", "password", "--name", "olga",
                        "--role", "operator"], input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert PASSWORD not in r.stdout
    stored = r.stdout.split("password_scrypt: '")[1].split("'")[0]
    assert password_matches(PASSWORD, stored) and not password_matches(PASSWORD + "!", stored)
    short = subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", "token", "password", "--name", "olga",
                            "--role", "operator"], input="short\n", capture_output=True, text=True, timeout=60)
    assert short.returncode == 2 and "at least 12 characters" in short.stderr and "Traceback" not in short.stderr


def test_a_plain_password_in_the_config_is_refused_at_load():
    text = site_config(n_gas=1) + "api:\n  port: 0\n  users:\n    - {name: olga, role: operator, password_scrypt: hunter2}\n"
    with pytest.raises(ConfigError) as e:
        load_config_text(text, source="site.yaml")
    msg = str(e.value)
    assert "site.yaml:" in msg and "api.users" in msg and "password_scrypt" in msg, msg


@pytest.mark.slow
async def test_name_and_password_login_in_a_browser(tmp_path, mosquitto, db, topic_prefix):
    users = f"  users:\n    - {{name: olga, role: operator, password_scrypt: '{hash_password(PASSWORD)}'}}\n"
    site = ConsoleSite(tmp_path, mosquitto, db, topic_prefix, n_gas=2, n_pressure=0, api=users)
    await site.start()
    try:
        assert site.call("/api/session", body={"name": "olga", "password": "wrong password"})[0] == 401
        assert site.call("/api/session", body={"name": "nobody", "password": PASSWORD})[0] == 401
        with chromium() as browser:
            browser.get(site.url + "/")
            wait_js(browser, "return document.querySelector('#user-name')?.offsetParent !== null", what="login form")
            fill = ("document.querySelector('#user-name').value = arguments[0];"
                    " document.querySelector('#password').value = arguments[1];"
                    " document.querySelector('#login-button').click()")
            browser.execute_script(fill, "olga", "not it at all")
            wait_js(browser, "return document.querySelector('#status').textContent.includes('login refused')",
                    what="a wrong password refused")
            browser.execute_script(fill, "olga", PASSWORD)
            wait_js(browser, "return document.querySelector('#who').textContent === 'olga (operator)'", what="logged in")
            wait_js(browser, "return document.querySelector('#conn')?.textContent === 'live'", what="the summary, live")
            cookie = browser.get_cookie("pw_session")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert PASSWORD not in browser.page_source
        # guessing is throttled: after 10 failures (per name, per address) the right password waits too
        codes = [site.call("/api/session", body={"name": "olga", "password": "guess"})[0] for _ in range(10)]
        assert codes[0] == 401 and codes[-1] == 429, codes
        st, body = site.call("/api/session", body={"name": "olga", "password": PASSWORD})
        assert st == 429 and "too many failed logins" in body["error"], (st, body)
    finally:
        site.stop()
