"""Wiring and supervision: config, pipeline stages, alarms, metrics, CLI."""
