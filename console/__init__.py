"""``kapparec console``: a web console that shows the streaming recommender at work.

It is a client of what already exists: the gRPC server (pages, trending, similar items, and
``LogEvents`` for the event buttons), ``FeatureReader`` (history, hourly counts, popularity),
the feature store and model registry, the server's Prometheus metrics and the experiments
report. Pages are rendered on the server (Flask and Jinja2) and work without JavaScript; a
small script only refreshes the trending panel in place.
"""
