"""Pacing from the vendor's own signals, and retry backoff (pure, clock injected).

:class:`Pacer` holds one destination's "not before" time, shared by all its
in-flight requests:

* ``429`` (or ``503``) with ``Retry-After`` (delta seconds or an HTTP date)
  pauses the destination until then; without it, until the backoff delay.
* ``RateLimit-Limit`` / ``RateLimit-Remaining`` / ``RateLimit-Reset`` (IETF
  draft and Klaviyo style; ``Reset`` in delta seconds): when ``Remaining`` is 0
  the destination waits for the reset; when it falls under a fifth of
  ``Limit`` the remaining budget is spread evenly over the time left
  (``Reset / Remaining`` between requests) — slowing down *before* hitting 0.
* an optional static ``rate_per_s`` keeps requests at least ``1/rate`` apart.

:func:`backoff` is exponential with "equal jitter": attempt ``n`` waits
between half and all of ``min(cap, base * 2**n)`` — never zero, so a fleet of
retrying clients spreads out but still makes progress.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

__all__ = ["Pacer", "backoff", "retry_after_s"]

_LOW_WATER = 0.2


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value (None if absent/unreadable).

    >>> retry_after_s("3"), retry_after_s(None), retry_after_s("soon")
    (3.0, None, None)
    >>> retry_after_s("Thu, 01 Jan 1970 00:00:10 GMT", now=4.0)
    6.0
    """
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        at = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, at - (time.time() if now is None else now))


def backoff(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (1-based): equal-jitter exponential.

    >>> all(0.5 <= backoff(1, 1.0, 60) <= 1.0 for _ in range(100))
    True
    >>> all(30 <= backoff(20, 1.0, 60) <= 60 for _ in range(100))
    True
    """
    ceiling = min(cap, base * (2 ** min(attempt - 1, 30)))
    r = (rng or random).random()
    return ceiling / 2 + r * ceiling / 2


def _header(headers: Mapping[str, str], name: str) -> float | None:
    v = headers.get(name)
    if v is None:
        return None
    try:
        return float(v.split(",")[0].split(";")[0].strip())
    except ValueError:
        return None


@dataclass
class Pacer:
    """When the next request to one destination may start (see module docstring)."""

    rate_per_s: float | None = None
    clock: Callable[[], float] = time.monotonic
    not_before: float = 0.0
    _last_start: float = field(default=-1e18, repr=False)

    def delay(self) -> float:
        """Seconds to wait before starting a request now (0 = go)."""
        now = self.clock()
        at = self.not_before
        if self.rate_per_s:
            at = max(at, self._last_start + 1.0 / self.rate_per_s)
        return max(0.0, at - now)

    def started(self) -> None:
        """Record that a request starts now (for the static rate)."""
        self._last_start = max(self.clock(), self._last_start)

    def pause(self, seconds: float) -> None:
        """Hold every request of this destination for ``seconds`` from now."""
        self.not_before = max(self.not_before, self.clock() + seconds)

    def observe(self, status: int, headers: Mapping[str, str]) -> float | None:
        """Update from one response; returns the ``Retry-After`` seconds if any.

        >>> t = [100.0]
        >>> p = Pacer(clock=lambda: t[0])
        >>> p.observe(200, {"ratelimit-limit": "10", "ratelimit-remaining": "1", "ratelimit-reset": "4"})
        >>> p.delay()
        4.0
        >>> p.observe(200, {"ratelimit-limit": "10", "ratelimit-remaining": "8", "ratelimit-reset": "4"})
        >>> p.delay()  # plenty left: no extra wait (the earlier hold still stands)
        4.0
        >>> p.observe(429, {"retry-after": "9"})
        9.0
        >>> p.delay()
        9.0
        """
        ra = retry_after_s(headers.get("retry-after"))
        if status in (429, 503) and ra is not None:
            self.pause(ra)
        limit = _header(headers, "ratelimit-limit")
        remaining = _header(headers, "ratelimit-remaining")
        reset = _header(headers, "ratelimit-reset")
        if remaining is not None and reset is not None:
            if remaining <= 0:
                self.pause(reset)
            elif limit and remaining < limit * _LOW_WATER:
                self.pause(reset / remaining)
        return ra
