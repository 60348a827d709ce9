"""Milliseconds per unit of time, defined once: event times and log times are all in ms."""

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


def utc_text(epoch_ms: int) -> str:
    """An epoch-ms time as people read it, in UTC (the log's times carry no zone)."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
