"""Headless Debian Chromium driven by selenium (no browser download: /usr/bin/chromium and
/usr/bin/chromedriver come from deploy/dev/install-services.sh)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000"]


@contextlib.contextmanager
def chromium() -> Iterator["object"]:
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium manager must not try to download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="pw-chromium-") as profile:
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for f in FLAGS + [f"--user-data-dir={profile}"]:
            opts.add_argument(f)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        try:
            driver.set_page_load_timeout(30)
            yield driver
        finally:
            driver.quit()
