"""The local stack: an Apache Kafka broker (KRaft), Redis and, opt-in, a Flink cluster."""
