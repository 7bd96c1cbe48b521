"""Alarms: the ISA-18.2 book and its lifecycle, suppression, the journal, publishing and notification, incident reports."""
