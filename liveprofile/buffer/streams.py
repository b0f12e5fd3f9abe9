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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import redis
import redis.asyncio as aioredis

from liveprofile.store.keys import Keys
from liveprofile.store.scripts import APPEND_LUA, BACKLOG_FULL, append_call

__all__ = ["AsyncAppender", "BacklogMonitor", "BacklogFull", "Append", "SyncAppender", "backlog"]

#: (stream key, fields) of one XADD
Append = tuple[str, dict[str, bytes | str]]


@dataclass
class _Pending:
    items: Sequence[Append]
    fut: asyncio.Future[list[int]]
    suppressed: Sequence[Sequence[str]] | None = None


@dataclass
class AsyncAppender:
    """Group-committing XADD appender over an asyncio Redis client.

    With ``keys`` on one Redis (not a cluster) each request's appends run as one
    :data:`~liveprofile.store.scripts.APPEND_LUA` call: all of them or none, and, with
    ``max_backlog``, refused (``BacklogFull``) when the buffer backlog plus the request's events
    would pass it — an exact bound, whatever the number of collector processes. The requests of
    one flush still share one round trip (one call each in one pipeline).

    Without ``keys`` or on a Redis Cluster (a request's shards are in different slots: no one
    script or transaction reaches them all) every entry is its own XADD: a failed request may
    have some of its entries appended (its retry's duplicates are dropped by ``messageId`` in
    the dataflow), and the backlog bound is the caller's (:class:`BacklogMonitor`).

    ``maxlens``: MAXLEN (approximate) of streams other than the buffer's (the dead letters).
    """

    client: aioredis.Redis
    max_group: int = 5000
    keys: Keys | None = None
    shards: int = 0
    max_backlog: int | None = None
    maxlens: Mapping[str, int] = field(default_factory=dict)
    _queue: list[_Pending] = field(default_factory=list)
    _flushing: bool = False
    flushes: int = 0
    #: the events land in the Redis the caller's other keys live in (a script could touch both)
    in_redis: bool = True
    _sha: str = ""

    @property
    def atomic(self) -> bool:
        """Whether each request's appends are all-or-nothing (one script call on one Redis)."""
        return self.keys is not None and not self.keys.cluster

    @property
    def checks_suppressed(self) -> bool:
        """Whether :meth:`append` leaves out suppressed users' items itself (atomic path only)."""
        return self.atomic

    @property
    def bounds_backlog(self) -> bool:
        """Whether this appender enforces the backlog bound itself, exactly."""
        return self.atomic and self.max_backlog is not None

    async def close(self) -> None:
        """Nothing to release: every append returned only once Redis acknowledged it."""

    async def append(self, items: Sequence[Append], suppressed: Sequence[Sequence[str]] | None = None) -> list[int]:
        """Append ``items``; returns once Redis acknowledged all, raises otherwise. ``suppressed``
        (per item, the members of ``{p}:suppressed`` it belongs to): on the atomic path an item
        with a member in the set is left out inside the same script call (see :data:`APPEND_LUA`);
        returns the indexes of the items left out."""
        if not items:
            return []
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(items, fut, suppressed))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush_loop())
        return await fut

    async def _flush_loop(self) -> None:
        try:
            while self._queue:
                group: list[_Pending] = []
                n = 0
                while self._queue and n < self.max_group:
                    p = self._queue.pop(0)
                    group.append(p)
                    n += len(p.items)
                if self.atomic:
                    await self._flush_atomic(group)
                else:
                    await self._flush(group)
        finally:
            self._flushing = False

    async def _flush(self, group: list[_Pending]) -> None:
        self.flushes += 1
        pipe = self.client.pipeline(transaction=False)
        maxlens = self.maxlens
        for p in group:
            for stream, fields in p.items:
                cap = maxlens.get(stream)
                if cap:
                    pipe.xadd(stream, fields, maxlen=cap, approximate=True)  # type: ignore[arg-type]
                else:
                    pipe.xadd(stream, fields)  # type: ignore[arg-type]
        try:
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # connection lost: nobody in this group is acknowledged
            _fail(group, exc)
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
                p.fut.set_result([])

    async def _flush_atomic(self, group: list[_Pending]) -> None:
        self.flushes += 1
        keys = self.keys
        assert keys is not None
        if not self._sha:
            try:
                self._sha = await self.client.script_load(APPEND_LUA)
            except Exception as exc:
                _fail(group, exc)
                return
        shard_streams = [keys.events(i) for i in range(self.shards)]
        calls = [
            append_call(keys.buffer_progress, shard_streams, self.max_backlog, self.maxlens, p.items,
                        (keys.suppressed, p.suppressed) if p.suppressed is not None else None)
            for p in group
        ]  # fmt: skip
        todo = list(range(len(group)))
        for _ in range(2):  # a second time only for calls the server refused as NOSCRIPT (not run)
            pipe = self.client.pipeline(transaction=False)
            for j in todo:
                ks, args = calls[j]
                pipe.evalsha(self._sha, len(ks), *ks, *args)  # type: ignore[arg-type]
            try:
                results = await pipe.execute(raise_on_error=False)
            except Exception as exc:  # connection lost: nobody in this group is acknowledged
                _fail([group[j] for j in todo], exc)
                return
            again = []
            for j, res in zip(todo, results, strict=True):
                p = group[j]
                if isinstance(res, redis.exceptions.NoScriptError):
                    again.append(j)
                elif p.fut.done():
                    continue
                elif isinstance(res, Exception):
                    p.fut.set_exception(_backlog_error(res))
                else:
                    p.fut.set_result([int(i) - 1 for i in res] if isinstance(res, list) else [])
            if not again:
                return
            todo = again
            try:
                self._sha = await self.client.script_load(APPEND_LUA)
            except Exception as exc:
                _fail([group[j] for j in todo], exc)
                return
        _fail([group[j] for j in todo], redis.exceptions.NoScriptError("the append script could not be loaded"))


class BacklogFull(Exception):
    """The append was refused whole: the buffer backlog would pass its bound."""


def _backlog_error(exc: Exception) -> Exception:
    if isinstance(exc, redis.ResponseError) and str(exc).startswith(BACKLOG_FULL):
        return BacklogFull(str(exc)[len(BACKLOG_FULL) + 1 :].split(" script:", 1)[0])
    return exc


def _fail(group: list[_Pending], exc: BaseException) -> None:
    for p in group:
        if not p.fut.done():
            p.fut.set_exception(exc)


class SyncAppender:
    """Blocking appender for the CLI (replay, demo feeding): pipelined XADDs."""

    def __init__(self, client: redis.Redis, maxlens: Mapping[str, int] | None = None) -> None:
        self.client = client
        self.maxlens = maxlens or {}

    def append(self, items: Sequence[Append]) -> None:
        """Append ``items`` (a stream in ``maxlens`` capped at its MAXLEN, approximately)."""
        pipe = self.client.pipeline(transaction=False)
        for stream, fields in items:
            cap = self.maxlens.get(stream)
            if cap:
                pipe.xadd(stream, fields, maxlen=cap, approximate=True)  # type: ignore[arg-type]
            else:
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

    def note(self, appended: int) -> None:
        """Count ``appended`` events of this process into the cached value until the next reading
        (so one process alone cannot pass the bound between two readings)."""
        self.value += appended

    async def current(self) -> int:
        """The backlog: read from Redis at most every ``interval`` seconds, plus the appends :meth:`note` counted."""
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
