"""Eclipse Sparkplug B (spBv1.0): topics, payloads and per-node session state.

``sparkplug_b.proto`` is Eclipse Tahu's payload definition (EPL-2.0, header kept);
``sparkplug_b_pb2.py`` is generated from it and checked in (see docs/sparkplug.md to
regenerate). Nothing here knows the sensor registry: :mod:`plantwatch.daemon.ingest.sparkplug` maps
decoded metrics to readings.
"""
