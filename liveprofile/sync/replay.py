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
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import redis

from liveprofile.sync.model import SyncKeys

__all__ = ["dead_letters", "replay", "REDRIVE_LUA"]

REDRIVE_LUA = """
-- KEYS[1] dead-letter stream, KEYS[2] redrive stream; ARGV entry ids
local n = 0
for _, id in ipairs(ARGV) do
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if #e == 1 then
    local f = e[1][2]
    local item, reason = nil, nil
    for j = 1, #f, 2 do
      if f[j] == 'item' then item = f[j + 1] elseif f[j] == 'reason' then reason = f[j + 1] end
    end
    if item and reason ~= 'malformed' then
      redis.call('XADD', KEYS[2], '*', 'item', item, 'dead_letter_id', id)
      redis.call('XDEL', KEYS[1], id)
      n = n + 1
    end
  end
end
return n
"""


def dead_letters(client: redis.Redis, prefix: str, dest: str, count: int | None = None) -> list[dict[str, Any]]:
    """Dead-letter entries of ``dest``, oldest first, with ``item`` decoded."""
    out = []
    for entry_id, fields in client.xrange(SyncKeys(prefix, dest).dead_letter, count=count):
        d = {_s(k): _s(v) for k, v in fields.items()}
        with contextlib.suppress(orjson.JSONDecodeError):
            d["item"] = orjson.loads(d.get("item", "null"))
        out.append({"id": _s(entry_id), **d})
    return out


def replay(client: redis.Redis, prefix: str, dest: str, *, limit: int | None = None, chunk: int = 500) -> int:
    """Move up to ``limit`` dead letters of ``dest`` to its redrive stream; how many moved."""
    sk = SyncKeys(prefix, dest)
    script = client.register_script(REDRIVE_LUA)
    moved = 0
    start = "-"
    while limit is None or moved < limit:
        n = chunk if limit is None else min(chunk, limit - moved)
        entries = client.xrange(sk.dead_letter, min=start, count=n)
        if not entries:
            break
        ids = [_s(e[0]) for e in entries]
        moved += int(script(keys=[sk.dead_letter, sk.redrive], args=ids))
        start = "(" + ids[-1]
    return moved


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
