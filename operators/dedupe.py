"""De-duplication by ``messageId`` inside an event-time window, in bounded memory.

Contract
--------
A :class:`SeenIds` remembers the message ids one user sent within
``window_ms`` of event time before the newest event it saw, and never more than
``max_ids`` of them (oldest inserted go first). ``first_sight`` answers
``True`` exactly once per id while the id is remembered, so feeding the same
events twice is a no-op (idempotent), whatever the order.

Ids are kept as 64-bit BLAKE2b digests packed in one ``bytearray`` (8 bytes
per id; lookups are a C ``find`` over it, not a Python loop) with their event
times in an ``array('q')``, so a user's dedupe state costs far less than a set
of strings. The collision probability within one user's window is ~n²/2⁶⁴:
nil in practice.
"""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass, field
from typing import Any

from mypy_extensions import mypyc_attr

from operators.snapshot import reset_to_defaults

__all__ = ["DedupeConfig", "SeenIds"]


def _digest(message_id: str) -> bytes:
    """Stable 64-bit BLAKE2b digest of a message id (never Python's ``hash``).

    >>> _digest("m1") == _digest("m1"), _digest("m1") == _digest("m2"), len(_digest("m1"))
    (True, False, 8)
    """
    return hashlib.blake2b(message_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def _find(buf: bytearray, d: bytes) -> int:
    """Index (in ids) of digest ``d`` in ``buf``, or -1; only 8-aligned matches count."""
    i = buf.find(d)
    while i != -1 and i & 7:
        i = buf.find(d, i + 1)
    return i >> 3 if i != -1 else -1


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class DedupeConfig:
    """Window of event time (ms) and the per-user cap on remembered ids."""

    window_ms: int = 48 * 3_600_000
    max_ids: int = 2000

    def __post_init__(self) -> None:
        if self.window_ms <= 0 or self.max_ids <= 0:
            msg = "dedupe window and max_ids must be positive"
            raise ValueError(msg)


@dataclass(slots=True)
class SeenIds:
    """Remembered ids of one user, with their event times.

    >>> cfg = DedupeConfig(window_ms=1000, max_ids=10)
    >>> s = SeenIds()
    >>> [s.first_sight(cfg, m, t) for m, t in [("a", 0), ("b", 5), ("a", 6), ("b", 5)]]
    [True, True, False, False]
    >>> s.first_sight(cfg, "c", 5000), len(s)   # pruning is amortized: nothing dropped yet
    (True, 3)
    >>> s.prune(cfg); len(s)                      # 'a' and 'b' fell out of the window
    1
    >>> "c" in s, "a" in s
    (True, False)
    """

    ids: bytearray = field(default_factory=bytearray)
    times: array = field(default_factory=lambda: array("q"))
    newest: int = -(2**62)

    def __len__(self) -> int:
        return len(self.times)

    def __getstate__(self) -> tuple[int, bytes, bytes | array]:
        """The pickled state (snapshot version 9): ``(newest, ids, times)``, the times as 32-bit
        offsets below ``newest`` (their bytes) when they all fit (a window under 49 days: 4 bytes
        an id less), else the int64 array itself."""
        times, newest = self.times, self.newest
        try:
            off = array("I", [newest - t for t in times]).tobytes()
        except OverflowError:
            return newest, bytes(self.ids), times
        return newest, bytes(self.ids), off

    def __setstate__(self, state: Any) -> None:
        """Restore a pickle of this or an earlier layout (before version 9: the slots)."""
        if type(state) is tuple and type(state[0]) is int:
            newest, ids, times = state
            self.newest, self.ids = newest, bytearray(ids)
            self.times = times if type(times) is array else array("q", [newest - o for o in array("I", times)])
        else:
            for k, v in reset_to_defaults(self, state).items():
                object.__setattr__(self, k, v)

    def __contains__(self, message_id: object) -> bool:
        """Whether ``message_id`` is remembered (nothing is recorded)."""
        return isinstance(message_id, str) and _find(self.ids, _digest(message_id)) != -1

    def first_sight(self, cfg: DedupeConfig, message_id: str, ts: int) -> bool:
        """Record ``message_id`` seen at event time ``ts``; ``False`` if already seen."""
        d = _digest(message_id)
        if _find(self.ids, d) != -1:
            return False
        self.ids += d
        self.times.append(ts)
        if ts > self.newest:
            self.newest = ts
        n = len(self.times)
        if n > cfg.max_ids:
            self._drop_oldest(n - cfg.max_ids)
        elif n & 31 == 0:  # amortized: an O(n) prune every 32 inserts, not every insert
            self.prune(cfg)
        return True

    def _drop_oldest(self, k: int) -> None:
        del self.ids[: 8 * k]
        del self.times[:k]

    def merge(self, cfg: DedupeConfig, other: SeenIds) -> None:
        """Remember ``other``'s ids too (identity merge); the cap keeps the newest inserted."""
        ids = other.ids
        for i, ts in enumerate(other.times):
            d = bytes(ids[8 * i : 8 * i + 8])
            if _find(self.ids, d) == -1:
                self.ids += d
                self.times.append(ts)
        self.newest = max(self.newest, other.newest)
        if len(self.times) > cfg.max_ids:
            self._drop_oldest(len(self.times) - cfg.max_ids)

    def prune(self, cfg: DedupeConfig) -> None:
        """Forget ids older than the window before the newest event time."""
        cutoff = self.newest - cfg.window_ms
        times = self.times
        if all(t >= cutoff for t in times):
            return
        keep = [i for i, t in enumerate(times) if t >= cutoff]
        ids = self.ids
        self.ids = bytearray(b"".join(ids[8 * i : 8 * i + 8] for i in keep))
        self.times = array("q", (times[i] for i in keep))
