"""Alarms: the ISA-18.2 book and its lifecycle, suppression, alarm management, the operator API and console, publishing and notification, incident reports."""
