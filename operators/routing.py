"""Stable routing of users to buffer shards.

``shard_of(identity, n)`` = CRC-32 of the UTF-8 identity modulo ``n``. Stable
across processes, machines and Python versions (never ``hash()``), so a user's
events always land in the same stream and keep their order.
"""

from __future__ import annotations

import zlib

__all__ = ["shard_of", "routing_identity"]


def shard_of(identity: str, n: int) -> int:
    """Shard index of ``identity`` among ``n`` shards.

    >>> shard_of("user-1", 4), shard_of("user-1", 4) == shard_of("user-1", 4)
    (0, True)
    """
    return zlib.crc32(identity.encode("utf-8", "surrogatepass")) % n


def routing_identity(event: dict) -> str:
    """The identity an event is routed by: ``userId`` if present, else ``anonymousId``.

    Returns ``""`` when the event has neither (it is routed to shard 0 and
    dead-lettered downstream).

    >>> routing_identity({"userId": 7, "anonymousId": "a"}), routing_identity({"anonymousId": "a"})
    ('7', 'a')
    """
    for k in ("userId", "anonymousId"):
        v = event.get(k)
        if v is not None and v != "" and not isinstance(v, dict | list | bool):
            return str(v).strip()
    return ""
