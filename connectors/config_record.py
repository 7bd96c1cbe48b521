"""The part of a config an inspector may read: the site, its sensors (with their descriptions),
the detectors and the alarm settings — never the sections that can hold credentials (``mqtt``,
``database``, ``api``, ``notify``, TLS files). Stored beside the full text in ``config_versions``
(``public_content``, readable by the read-only role) and chained by its SHA-256.

The part is cut from the text by its top-level keys (a site of 50,000 sensors in milliseconds;
parsing and dumping the YAML took tens of seconds at every start): what is kept is exactly as
written, comments included."""
from __future__ import annotations

import re

#: top-level sections kept (everything else is left out)
PUBLIC_SECTIONS = frozenset({"version", "site", "sensors", "detectors", "compositions", "alarms"})
_TOP_KEY = re.compile(r"""^(?:"([^"]*)"|'([^']*)'|([^\s#:'"][^:#]*?))\s*:(?:\s|$)""")


def public_config(text: str) -> str:
    """The public sections of config ``text``, as written."""
    out: list[str] = []
    keep = False
    for line in text.splitlines(keepends=True):
        m = _TOP_KEY.match(line)
        if m and not line.startswith("- "):
            keep = next(g for g in m.groups() if g is not None).strip() in PUBLIC_SECTIONS
        if keep:
            out.append(line)
    return "".join(out)
