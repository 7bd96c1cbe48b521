"""The part of a config an inspector may read: the site, its sensors (with their descriptions),
the detectors and the alarm settings — never the sections that can hold credentials (``mqtt``,
``database``, ``api``, ``notify``, TLS files). Stored beside the full text in ``config_versions``
(``public_content``, readable by the read-only role) and chained by its SHA-256."""
from __future__ import annotations

import yaml

#: top-level sections copied (everything else is left out)
PUBLIC_SECTIONS = ("site", "sensors", "detectors", "alarms")


def public_config(text: str) -> str:
    """YAML of the public sections of config ``text`` ('' when it does not parse as a mapping)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return ""
    if not isinstance(doc, dict):
        return ""
    part = {k: doc[k] for k in PUBLIC_SECTIONS if k in doc}
    return yaml.safe_dump(part, sort_keys=False, allow_unicode=True, width=120) if part else ""
