"""The operator pages (server-rendered HTML and their JSON twins); ``views.add_routes``
mounts them. See README, "Operator pages"."""
