"""The HTTP API's handlers, one module per area; ``ccwatch.http`` mounts them. They sit on
top with the HTTP server and reach the incident service through the ``Runtime``
(docs/architecture.md, "Dependency rules")."""
