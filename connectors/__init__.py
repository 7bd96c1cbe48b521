"""Everything that talks to the outside: MQTT, the database, Grafana, embedded services."""
