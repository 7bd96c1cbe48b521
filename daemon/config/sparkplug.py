"""Config types of Sparkplug B ingest that are not the metric mapping (docs/sparkplug.md)."""
from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

#: a Sparkplug host application id: one topic level of ``spBv1.0/STATE/<host_id>`` (no ``/``,
#: ``+``, ``#`` or white space)
HostId = Annotated[str, StringConstraints(pattern=r"^[^/#+\s]+$", max_length=64)]
