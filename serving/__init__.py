"""The gRPC serving process (personalised, similar, trending) over the ScaNN index and feature store."""
