"""Beam feature transforms over the event log, and the jobs (backfill, stream) that run them."""
