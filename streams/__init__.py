"""The Kafka log: event schema, topics, producers, the Beam source and the dead-letter sink."""
