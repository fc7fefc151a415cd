"""MQTT ingestion: the reconnecting source and payload parsing."""
