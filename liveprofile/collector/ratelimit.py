"""Per-write-key rate limits: one token bucket per key, counted in events.

Contract
--------
* A bucket holds at most ``burst`` tokens and refills at ``rate`` tokens per
  second; one event costs one token, so a 500-event batch costs 500.
* :meth:`TokenBuckets.take` either admits the whole request (returns ``0.0``)
  or refuses it whole and returns the seconds until enough tokens will be
  there (the caller answers 429 with ``Retry-After`` and keeps nothing). A
  refused request costs nothing.
* A request larger than the burst could never fit; it is admitted when the
  bucket is full and leaves the bucket in debt (negative), which later requests
  wait out. The long-run rate is therefore still at most ``rate``.
* State is in memory, **per collector process**: with ``W`` uvicorn workers and
  ``P`` pods a key may send up to ``W x P x rate`` events/s in total. Memory is
  one small entry per configured key (only authenticated keys reach a bucket).
* Not thread-safe: used from the event loop only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["TokenBuckets", "DEFAULT_MIN_BURST", "retry_after_header"]

#: Default smallest burst: one full Segment batch (500 events) must always fit.
DEFAULT_MIN_BURST = 500


class TokenBuckets:
    """Token buckets keyed by an opaque key (the write key's bytes).

    >>> t = [0.0]
    >>> b = TokenBuckets(rate=10, burst=20, clock=lambda: t[0])
    >>> b.take(b"k", 15), b.take(b"k", 10)
    (0.0, 0.5)
    >>> t[0] = 0.5; b.take(b"k", 10)
    0.0
    >>> b.take(b"big", 50), b.take(b"big", 1)    # over the burst: admitted when full, then debt
    (0.0, 3.1)
    """

    __slots__ = ("rate", "burst", "_clock", "_state")

    def __init__(self, rate: float, burst: float = 0, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not rate > 0 or not math.isfinite(rate):
            msg = f"rate must be a positive number of events per second, got {rate!r}"
            raise ValueError(msg)
        self.rate = float(rate)
        self.burst = float(burst) if burst > 0 else max(self.rate, DEFAULT_MIN_BURST)
        self._clock = clock
        self._state: dict[bytes, list[float]] = {}  # key -> [tokens, at]

    def take(self, key: bytes, cost: int) -> float:
        """Admit ``cost`` events for ``key`` (``0.0``) or return seconds to wait (> 0)."""
        now = self._clock()
        st = self._state.get(key)
        if st is None:
            st = self._state[key] = [self.burst, now]
        tokens = st[0] + (now - st[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        st[1] = now
        need = cost if cost < self.burst else self.burst
        if tokens >= need:
            st[0] = tokens - cost
            return 0.0
        st[0] = tokens
        return round((need - tokens) / self.rate, 6)

    def refund(self, key: bytes, cost: int) -> None:
        """Give back what an admitted request took when it could not be served (503)."""
        st = self._state.get(key)
        if st is not None:
            st[0] = min(self.burst, st[0] + cost)

    def tokens(self, key: bytes) -> float:
        """Tokens ``key`` has now (for tests and debugging)."""
        st = self._state.get(key)
        if st is None:
            return self.burst
        return min(self.burst, st[0] + (self._clock() - st[1]) * self.rate)


def retry_after_header(wait_s: float) -> bytes:
    """``Retry-After`` value: whole seconds, rounded up, at least 1.

    >>> retry_after_header(0.01), retry_after_header(2.0), retry_after_header(2.2)
    (b'1', b'2', b'3')
    """
    return str(max(1, math.ceil(wait_s - 1e-9))).encode()
