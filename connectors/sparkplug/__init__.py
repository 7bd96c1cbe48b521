"""Eclipse Sparkplug B (spBv1.0), one folder: topics (``topic``), payloads (``payload``), per-node
session state (``session``), the primary host's STATE (``host``) and the sessions' storage
(``births``, the only SQL). The config section is ``daemon/config/sparkplug.py`` and the mapping
to readings ``daemon/ingest/sparkplug.py`` (the daemon's rooms); docs/sparkplug.md covers all.

``sparkplug_b.proto`` is Eclipse Tahu's payload definition (EPL-2.0, header kept);
``sparkplug_b_pb2.py`` is generated from it and checked in (see docs/sparkplug.md to
regenerate). Nothing here knows the sensor registry: :mod:`plantwatch.daemon.ingest.sparkplug` maps
decoded metrics to readings.
"""
