"""Milliseconds per unit of time, defined once: event times and log times are all in ms."""

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
