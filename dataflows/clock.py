"""The stream's event-time clock, per process.

``now()`` = the newest event time this process has seen, plus the wall time
elapsed since it was seen (Bytewax's event-clock watermark rule). During a fast
replay it follows the events' own times; on live traffic it keeps advancing
with wall time when no event arrives, so event-time timers (session end, cart
abandonment) still fire. An event claiming a time later than its receipt
advances the clock only to its receipt time, so a forged future timestamp
cannot fire everyone's timers early.
"""

from __future__ import annotations

import threading
import time

__all__ = ["StreamClock", "CLOCK"]


class StreamClock:
    """Monotone event-time clock (ms)."""

    def __init__(self) -> None:
        self._max = -(2**62)
        self._wall_at = time.time()
        self._lock = threading.Lock()

    def observe(self, event_ms: int) -> None:
        """Advance to ``event_ms`` if it is newer."""
        if event_ms > self._max:
            with self._lock:
                if event_ms > self._max:
                    self._max = event_ms
                    self._wall_at = time.time()

    def now(self) -> int:
        """Current stream time (ms); ``-2**62`` before any event."""
        if self._max == -(2**62):
            return self._max
        return self._max + int((time.time() - self._wall_at) * 1000)

    def newest(self) -> int:
        """The newest event time seen (no wall-time extrapolation); ``-2**62`` before any."""
        return self._max

    def seconds_until(self, event_ms: int) -> float:
        """Wall seconds until the clock reaches ``event_ms`` if no event arrives
        (infinite before the first event: nothing is known about stream time yet)."""
        if self._max == -(2**62):
            return float("inf")
        return (event_ms - self.now()) / 1000


CLOCK = StreamClock()
