"""The online feature store: feature definitions, the Redis backend, and the one reader API."""
