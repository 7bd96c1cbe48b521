"""The plantwatch daemon: CLI wiring, file reading, services."""
