"""Data connectors (MQTT, TimescaleDB)."""
