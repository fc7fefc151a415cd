"""The command line's feature verbs, one module per feature (``ccwatch.cli`` loads each on
first use). They sit on top with the composition root: they may build what they need
with ``ccwatch.compose`` (docs/architecture.md, "Dependency rules")."""
