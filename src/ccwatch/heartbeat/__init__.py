"""The dead-man's switch (README, "Dead-man's switch").

``config.py`` is the ``heartbeat:`` section; ``health.py`` decides, purely, whether
ccwatch is healthy (MQTT connected, state database takes writes, ingest not stalled);
``targets.py`` sends to a healthchecks.io-style ping URL and/or an always-firing
``Watchdog`` alert through an Alertmanager upstream; ``service.py`` is the loop that runs
as one of a generation's service tasks, with its metrics.
"""
