"""Dead letters of a destination: list them, and re-drive them (``liveprofile sync replay DEST``).

Re-driving moves dead-letter entries, in one Lua script per chunk, to the
destination's redrive stream ``{p}:sync-redrive:{dest}``, which the
destination's current holder reads with the change feed (same consumer group,
same crash safety). A re-driven item is sent with the profile's **current**
values of its fields — never the stale values it held when it failed — so per
user order holds even when newer versions were delivered since; its trigger
events are sent as recorded (with the same event ids) and a deletion is sent
again. Entries dead-lettered as ``malformed`` (unreadable change entries)
cannot be re-driven and stay.

With a Redis Cluster a destination has one dead-letter and one redrive stream
per user group (:class:`~liveprofile.sync.model.SyncKeys`); both functions walk
every group (listing merges them oldest first), and each group's entries move
to that group's redrive stream (the script touches one slot).
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import redis

from liveprofile.store.keys import Keys
from liveprofile.store.scripts import lua_source, sync_redrive_argv
from liveprofile.sync.model import SyncKeys

__all__ = ["dead_letters", "replay", "REDRIVE_LUA"]

REDRIVE_LUA = lua_source("sync_redrive")


def _sync_keys(keys: Keys | str, dest: str) -> SyncKeys:
    k = Keys(keys) if isinstance(keys, str) else keys
    return SyncKeys(k.prefix, dest, k.cluster_groups)


def dead_letters(client: redis.Redis, keys: Keys | str, dest: str, count: int | None = None) -> list[dict[str, Any]]:
    """Dead-letter entries of ``dest``, oldest first, with ``item`` decoded (``keys``: the
    layout, or a prefix for the single-Redis one)."""
    sk = _sync_keys(keys, dest)
    rows: list[tuple[tuple[int, int], dict[str, Any]]] = []
    for g in sk.groups:
        for entry_id, fields in client.xrange(sk.dead_letter_in(g), count=count):
            d = {_s(k): _s(v) for k, v in fields.items()}
            with contextlib.suppress(orjson.JSONDecodeError):
                d["item"] = orjson.loads(d.get("item", "null"))
            ms, _, seq = _s(entry_id).partition("-")
            rows.append(((int(ms), int(seq or 0)), {"id": _s(entry_id), **d}))
    rows.sort(key=lambda r: r[0])
    out = [d for _, d in rows]
    return out if count is None else out[:count]


def replay(client: redis.Redis, keys: Keys | str, dest: str, *, limit: int | None = None, chunk: int = 500) -> int:
    """Move up to ``limit`` dead letters of ``dest`` to its redrive stream(s); how many moved."""
    sk = _sync_keys(keys, dest)
    script = client.register_script(REDRIVE_LUA)
    moved = 0
    for g in sk.groups:
        dl, redrive = sk.dead_letter_in(g), sk.redrive_in(g)
        start = "-"
        while limit is None or moved < limit:
            n = chunk if limit is None else min(chunk, limit - moved)
            entries = client.xrange(dl, min=start, count=n)
            if not entries:
                break
            ids = [_s(e[0]) for e in entries]
            moved += int(script(keys=[dl, redrive], args=sync_redrive_argv(ids)))
            start = "(" + ids[-1]
    return moved


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
