"""Maintenance windows: scheduled (config ``maintenance:``) and ad-hoc (state database).

``windows.py`` decides, purely, whether a component is in a window at an instant;
``config.py`` is the ``maintenance:`` section; ``store.py`` owns the ad-hoc table and
``MaintenanceCalendar``, which the incident service asks (docs/architecture.md,
"Maintenance windows").
"""
