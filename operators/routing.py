"""Stable routing of users to buffer shards.

``shard_of(identity, n)`` = CRC-32 of the UTF-8 identity modulo ``n``. Stable
across processes, machines and Python versions (never ``hash()``), so a user's
events always land in the same stream and keep their order.

The identity is the parsed event's :attr:`operators.events.Event.uid` (the one identity rule:
``userId`` once trimmed, else ``anonymousId``), whoever routes: the envelope check
(:func:`liveprofile.buffer.ingest.prepare`) picks the shard by it and the dataflow keys the user
by it, so they cannot disagree.
"""

from __future__ import annotations

import zlib

__all__ = ["shard_of"]


def shard_of(identity: str, n: int) -> int:
    """Shard index of ``identity`` among ``n`` shards.

    >>> shard_of("user-1", 4), shard_of("user-1", 4) == shard_of("user-1", 4)
    (0, True)
    """
    return zlib.crc32(identity.encode("utf-8", "surrogatepass")) % n
