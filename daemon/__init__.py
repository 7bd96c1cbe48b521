"""The daemon: its runtime at the top (service wires the rooms, runtime, detection, metrics) and its rooms: ingest/, alarms/, config/, collect/, cli/, lab/."""
