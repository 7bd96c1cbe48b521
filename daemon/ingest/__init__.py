"""Ingest: readings from MQTT (wire and Sparkplug) validated, split, stored and handed to detection; partitions and the cluster runner."""
