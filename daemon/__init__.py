"""plantwatch daemon: config, pipeline wiring, supervisor and CLI."""
