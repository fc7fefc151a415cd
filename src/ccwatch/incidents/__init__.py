"""Incidents: the pure lifecycle state machine and the SQLite state store."""
