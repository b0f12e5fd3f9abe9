"""The event buffer: Redis Streams sharded by user, appended with group commit.

Layout (see :mod:`liveprofile.store.keys`): ``{p}:events:{i}`` for ``i`` in
``0..shards-1``; an event goes to shard ``CRC-32(userId or anonymousId) mod
shards`` so one user's events stay in one stream, in order. Each entry has one
field, ``e``: the event JSON as the collector stamped it.

:class:`AsyncAppender` is used by the HTTP collector. Concurrent requests'
appends are *group-committed*: while one pipeline is in flight the next
requests queue up, and the next flush sends all of them in one round trip. At
low load that adds no latency; under load it turns thousands of small
requests into a few large pipelines. A request is acknowledged only after
Redis answered for every one of its entries.

:class:`BacklogMonitor` estimates how many buffered events the dataflow has
not read yet: per shard, ``entries-added`` (XINFO STREAM) minus the read count
the dataflow publishes in ``{p}:buffer:progress``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis
import redis.asyncio as aioredis

from liveprofile.store.keys import Keys

__all__ = ["AsyncAppender", "BacklogMonitor", "Append", "SyncAppender", "backlog"]

#: (stream key, fields) of one XADD
Append = tuple[str, dict[str, bytes | str]]


@dataclass
class _Pending:
    items: Sequence[Append]
    fut: asyncio.Future[None]


@dataclass
class AsyncAppender:
    """Group-committing XADD appender over an asyncio Redis client."""

    client: aioredis.Redis
    max_group: int = 5000
    _queue: list[_Pending] = field(default_factory=list)
    _flushing: bool = False
    flushes: int = 0
    #: the events land in the Redis the caller's other keys live in (a script could touch both)
    in_redis: bool = True

    async def close(self) -> None:
        """Nothing to release: every append returned only once Redis acknowledged it."""

    async def append(self, items: Sequence[Append]) -> None:
        """Append ``items``; returns once Redis acknowledged all, raises otherwise."""
        if not items:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(items, fut))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush_loop())
        await fut

    async def _flush_loop(self) -> None:
        try:
            while self._queue:
                group: list[_Pending] = []
                n = 0
                while self._queue and n < self.max_group:
                    p = self._queue.pop(0)
                    group.append(p)
                    n += len(p.items)
                await self._flush(group)
        finally:
            self._flushing = False

    async def _flush(self, group: list[_Pending]) -> None:
        self.flushes += 1
        pipe = self.client.pipeline(transaction=False)
        for p in group:
            for stream, fields in p.items:
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
        try:
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # connection lost: nobody in this group is acknowledged
            for p in group:
                if not p.fut.done():
                    p.fut.set_exception(exc)
            return
        i = 0
        for p in group:
            n = len(p.items)
            errs = [r for r in results[i : i + n] if isinstance(r, Exception)]
            i += n
            if p.fut.done():
                continue
            if errs:
                p.fut.set_exception(errs[0])
            else:
                p.fut.set_result(None)


class SyncAppender:
    """Blocking appender for the CLI (replay, demo feeding): pipelined XADDs."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def append(self, items: Sequence[Append]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for stream, fields in items:
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        pipe.execute()


def _backlog_from(res: list[object], shards: int) -> dict[int, int]:
    """Per-shard backlog from ``[XINFO STREAM shard 0..n-1, HGETALL progress]`` replies."""
    progress = res[-1] if isinstance(res[-1], dict) else {}
    out = {}
    for i in range(shards):
        info = res[i]
        if not isinstance(info, dict):  # the stream does not exist yet
            out[i] = 0
            continue
        added = int(info.get("entries-added", info.get(b"entries-added", 0)))
        read = int(progress.get(str(i).encode(), progress.get(str(i), 0)))  # "t{i}" fields: clock
        out[i] = max(0, added - read)
    return out


def _backlog_commands(pipe: object, keys: Keys, shards: int) -> None:
    for i in range(shards):
        pipe.xinfo_stream(keys.events(i))  # type: ignore[attr-defined]
    pipe.hgetall(keys.buffer_progress)  # type: ignore[attr-defined]


def backlog(client: redis.Redis, keys: Keys, shards: int) -> dict[int, int]:
    """Unread entries per shard (entries ever added minus entries the dataflow read)."""
    pipe = client.pipeline(transaction=False)
    _backlog_commands(pipe, keys, shards)
    return _backlog_from(pipe.execute(raise_on_error=False), shards)


@dataclass
class BacklogMonitor:
    """Cached total backlog, refreshed at most every ``interval`` seconds."""

    client: aioredis.Redis
    keys: Keys
    shards: int
    interval: float = 1.0
    value: int = 0
    _at: float = -1e9
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def current(self) -> int:
        if time.monotonic() - self._at < self.interval:
            return self.value
        async with self._lock:
            if time.monotonic() - self._at < self.interval:
                return self.value
            pipe = self.client.pipeline(transaction=False)
            _backlog_commands(pipe, self.keys, self.shards)
            res = await pipe.execute(raise_on_error=False)
            self.value = sum(_backlog_from(res, self.shards).values())
            self._at = time.monotonic()
            return self.value
