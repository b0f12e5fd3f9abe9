"""The stream's event-time clock, per process.

``now()`` = the newest event time this process has seen, plus the wall time
elapsed since it was seen (Bytewax's event-clock watermark rule). During a fast
replay it follows the events' own times; on live traffic it keeps advancing
with wall time when no event arrives, so event-time timers (session end, cart
abandonment) still fire. An event claiming a time later than its receipt
advances the clock only to its receipt time, so a forged future timestamp
cannot fire everyone's timers early.

One instance per flow, passed in where the flow is built (:func:`dataflows.build.build_flow`,
the sources): there is no module-level clock, so tests run flows side by side with their own
clocks, and ``wall`` (seconds, ``time.time`` by default) can be a test's settable clock. The
stateful adapters read time only through it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["StreamClock"]


class StreamClock:
    """Monotone event-time clock (ms) over a wall clock ``wall`` (seconds since the epoch)."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._max = -(2**62)
        self._wall_at = wall()
        self._lock = threading.Lock()

    def wall(self) -> datetime:
        """The wall clock as Bytewax wants it for ``notify_at`` (aware UTC)."""
        return datetime.fromtimestamp(self._wall(), UTC)

    def observe(self, event_ms: int) -> None:
        """Advance to ``event_ms`` if it is newer."""
        if event_ms > self._max:
            with self._lock:
                if event_ms > self._max:
                    self._max = event_ms
                    self._wall_at = self._wall()

    def now(self) -> int:
        """Current stream time (ms); ``-2**62`` before any event."""
        if self._max == -(2**62):
            return self._max
        return self._max + int((self._wall() - self._wall_at) * 1000)

    def newest(self) -> int:
        """The newest event time seen (no wall-time extrapolation); ``-2**62`` before any."""
        return self._max

    def seconds_until(self, event_ms: int) -> float:
        """Wall seconds until the clock reaches ``event_ms`` if no event arrives
        (infinite before the first event: nothing is known about stream time yet)."""
        if self._max == -(2**62):
            return float("inf")
        return (event_ms - self.now()) / 1000

