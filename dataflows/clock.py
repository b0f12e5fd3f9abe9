"""The stream's event-time clock, per process.

``now()`` = the newest event time this process has seen, plus the wall time
elapsed since it was seen (Bytewax's event-clock watermark rule). During a fast
replay it follows the events' own times; on live traffic it keeps advancing
with wall time when no event arrives, so event-time timers (session end, cart
abandonment) still fire. An event claiming a time later than its receipt
advances the clock only to its receipt time, so a forged future timestamp
cannot fire everyone's timers early.

Shards read at different paces: a page of one buffer shard may span hours more event time than
another's (a backlog, a replay). So while a shard the source read from still has entries coming
(:meth:`StreamClock.reading` ``True``), ``now()`` is the *watermark*: the oldest of those shards'
newest event times (never going back), with no wall-time extrapolation — a timer (a window
exit, say) does not fire while a user's earlier events may still be in another shard's next
page. Once every shard is caught up, ``now()`` is the newest event time plus the wall time since
(as before). Across processes the published newest times are adopted as the newest (the shared
clock of :func:`dataflows.sources.streams.share_progress`), which holds back nothing.

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
        self._shard_max: dict[int, int] = {}  # newest event time per shard
        self._pending: set[int] = set()  # shards whose last read returned entries
        self._floor = -(2**62)  # the last time now() returned: it never goes back

    def wall(self) -> datetime:
        """The wall clock as Bytewax wants it for ``notify_at`` (aware UTC)."""
        return datetime.fromtimestamp(self._wall(), UTC)

    def wall_s(self) -> float:
        """The wall clock in seconds since the epoch."""
        return self._wall()

    def observe(self, event_ms: int, shard: int | None = None) -> None:
        """Advance to ``event_ms`` if it is newer (and ``shard``'s newest, when given)."""
        if shard is not None and event_ms > self._shard_max.get(shard, -(2**62)):
            with self._lock:
                if event_ms > self._shard_max.get(shard, -(2**62)):
                    self._shard_max[shard] = event_ms
        if event_ms > self._max:
            with self._lock:
                if event_ms > self._max:
                    self._max = event_ms
                    self._wall_at = self._wall()

    def reading(self, shard: int, more: bool) -> None:
        """The source's word on ``shard``: its last read returned entries (``more``: there may be
        more, older than other shards' newest) or none (caught up: it holds nothing back)."""
        if more:
            if shard not in self._pending:
                with self._lock:
                    self._pending.add(shard)
        elif shard in self._pending:
            with self._lock:
                self._pending.discard(shard)

    def now(self) -> int:
        """Current stream time (ms); ``-2**62`` before any event (see the module doc).

        >>> c = StreamClock(lambda: 0.0)
        >>> c.reading(0, True); c.reading(1, True)
        >>> c.observe(5_000, 0); c.observe(9_000, 1)
        >>> c.now()  # shard 0 may still hold events older than shard 1's newest
        5000
        >>> c.reading(0, False); c.now()  # shard 0 caught up
        9000
        >>> c.reading(0, True); c.observe(6_000, 0); c.now()  # never back
        9000
        """
        if self._max == -(2**62):
            return self._max
        pending = self._pending
        if pending:
            shard_max = self._shard_max
            floor = self._floor
            t = min(shard_max.get(s, floor) for s in list(pending))
        else:
            t = self._max + int((self._wall() - self._wall_at) * 1000)
        if t < self._floor:
            return self._floor
        self._floor = t
        return t

    def newest(self) -> int:
        """The newest event time seen (no wall-time extrapolation); ``-2**62`` before any."""
        return self._max

    def seconds_until(self, event_ms: int) -> float:
        """Wall seconds until the clock reaches ``event_ms`` if no event arrives
        (infinite before the first event: nothing is known about stream time yet)."""
        if self._max == -(2**62):
            return float("inf")
        return (event_ms - self.now()) / 1000

