"""The event-time watermark of one followed partition."""

from __future__ import annotations

from apache_beam.io.iobase import WatermarkEstimator
from apache_beam.utils.timestamp import Duration, Timestamp

# When an idle partition's watermark falls back to the wall clock, it trails it by this much
# so that a record already on its way is not made late.
IDLE_WATERMARK_LAG_S = 5.0


class EventTimeWatermarkEstimator(WatermarkEstimator):
    """The highest event time read so far; the wall clock (minus a lag) once the partition idles.

    Fed by the DoFn once per batch rather than per output: dead letters carry their log
    time, which must not move an event-time watermark.
    """

    def __init__(self, state: tuple[Timestamp, Timestamp], idle_timeout_s: float):
        self._watermark, self._last_record_at = state
        self._idle_timeout = Duration(seconds=idle_timeout_s)

    def advance(self, high_water_ms: int) -> None:
        """Records arrived; the highest event time read so far is ``high_water_ms`` (-1: none yet)."""
        self._last_record_at = Timestamp.now()
        if high_water_ms >= 0:
            self._watermark = max(self._watermark, Timestamp(micros=high_water_ms * 1000))

    def observe_timestamp(self, timestamp: Timestamp) -> None:
        pass

    def current_watermark(self) -> Timestamp:
        now = Timestamp.now()
        if now - self._last_record_at > self._idle_timeout:
            self._watermark = max(self._watermark, now - Duration(seconds=IDLE_WATERMARK_LAG_S))
        return self._watermark

    def get_estimator_state(self) -> tuple[Timestamp, Timestamp]:
        return self._watermark, self._last_record_at
