"""plantwatch connectors: I/O to MQTT brokers, PostgreSQL/TimescaleDB and the embedded services."""
