"""The local stack: a Kafka-protocol broker (Tansu), Redis and, opt-in, a Flink cluster."""
