"""Several sites per process and several workers per fleet (issue 14, "Beyond one host").

- ``config``: the ``sites:`` and ``fleet:`` sections.
- ``leases``: the tables ``site_leases``, ``job_leases`` and ``fleet_workers``
  (PostgreSQL), all their SQL, the fence a site's (or a job lease's) writes check, and
  ``Lease``, a held lease with its local deadline.
- ``balance``: how many sites a worker should hold, and which to take or give back (pure).
- ``manager``: ``LeaseManager``, the worker's loop: heartbeat, renew, take, give back,
  stop a site whose lease it cannot renew before the lease can run out; the job leases
  (``fleet``, ``host:<host>``) likewise, taken when free rather than balanced.

The services of one site (its incident service, pipeline, MQTT session, outbox
dispatcher, SLA watcher) are put together by the composition root (``ccwatch.sites``).
Nothing here is imported when ``sites:`` is not configured. See docs/architecture.md,
"Several sites and workers".
"""
