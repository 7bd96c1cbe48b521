"""The demo site config shipped with plantwatch (``daemon/lab/sites/demo.yaml``, package data)."""
from __future__ import annotations

from importlib import resources

from plantwatch.daemon.config.model import Config, load_config_text

DEMO_SITE = "sites/demo.yaml"


def demo_config_text() -> str:
    return resources.files("plantwatch.daemon.lab").joinpath(DEMO_SITE).read_text(encoding="utf-8")


def load_demo_config() -> Config:
    """The demo site's validated config (raises ConfigError if the shipped file is broken)."""
    return load_config_text(demo_config_text(), source="plantwatch/daemon/" + DEMO_SITE)
