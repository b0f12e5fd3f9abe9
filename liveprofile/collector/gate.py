"""The collector's way into the buffer, shared by every endpoint that appends events.

Contract: :meth:`BufferGate.prepare` runs :func:`liveprofile.buffer.ingest.prepare` with this
deployment's keys, shards, limits and IP truncation; :meth:`BufferGate.append` appends one
request's prepared appends and turns a failure into the 503 (with ``Retry-After``,
:data:`RETRY_AFTER` seconds) that names the condition (:func:`refusal`):

* ``backlog_full`` — the buffer backlog would pass ``LIVEPROFILE_MAX_BACKLOG``;
* ``buffer_out_of_memory`` — Redis is at ``maxmemory`` (``OOM``);
* ``buffer_read_only`` — the Redis the collector writes to is a read-only replica (``READONLY``);
* ``buffer_unavailable`` — the buffer cannot be reached (connection refused, timeout, Kafka down).

:meth:`BufferGate.without_suppressed` drops the events (and dead letters) of forgotten users before
the append: the client still gets its 2xx, nothing of such an event is kept, and it is counted in
``liveprofile_collector_events_suppressed_total``. On one Redis that check is inside the atomic
append itself (:data:`~liveprofile.store.scripts.APPEND_LUA`: no extra round trip, still group
committed, and no ``forget`` can slip between check and write); with a Redis Cluster or Kafka it
is one pipelined ``SMISMEMBER`` per request before the append.

On one Redis (Redis Streams buffer) a request's appends are one script call: all of them or none,
and the backlog bound is checked in the same call, so it is exact (no collector process can pass
it). With a Redis Cluster or Kafka the bound is :meth:`BufferGate.check_backlog`'s cached reading
(refreshed every second, plus this process's own appends since) and a failed request may have
part of its events appended (see ``docs/operating.md``). Nothing is acknowledged that the buffer
did not acknowledge: the endpoints answer 200 only after :meth:`BufferGate.append` returned.

The connections (``redis``, ``appender``, ``backlog``) are opened by the app's startup
(:meth:`liveprofile.collector.app.CollectorApp.startup`) with :meth:`BufferGate.open`.

May import: :mod:`liveprofile.settings`, :mod:`liveprofile.store`, :mod:`liveprofile.buffer`,
:mod:`liveprofile.asgi`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio as aioredis

from liveprofile.asgi import HTTPError
from liveprofile.buffer.ingest import (
    SERVER,
    Prepared,
    drop_appends,
    drop_suppressed,
    prepare,
    suppression_lists,
    suppression_members,
)
from liveprofile.buffer.streams import BacklogFull, BacklogMonitor
from liveprofile.buffer.writers import Appender
from liveprofile.settings import Settings
from liveprofile.store import debugtap
from liveprofile.store.keys import Keys

logger = logging.getLogger("liveprofile.collector.ingest")

__all__ = ["BufferGate", "RETRY_AFTER", "unavailable", "refusal", "BUFFER_CODES"]

#: ``Retry-After`` of the 503 answers, in seconds
RETRY_AFTER = b"5"


#: debugger taps being written at once (see :meth:`BufferGate.tap`)
TAP_IN_FLIGHT = 256

#: the codes of the 503 refusals (see the module doc)
BUFFER_CODES = ("backlog_full", "buffer_out_of_memory", "buffer_read_only", "buffer_unavailable")


def unavailable(message: str = "the buffer is unreachable; retry later") -> HTTPError:
    """The 503 ``buffer_unavailable`` refusal (with ``Retry-After``)."""
    return HTTPError(503, "buffer_unavailable", message, [(b"retry-after", RETRY_AFTER)])


def refusal(exc: BaseException) -> HTTPError:
    """The 503 of a failed append or backlog reading, naming its condition (see the module doc).

    >>> refusal(redis.exceptions.OutOfMemoryError("command not allowed")).code
    'buffer_out_of_memory'
    >>> refusal(redis.exceptions.ReadOnlyError("replica")).code, refusal(ConnectionRefusedError()).code
    ('buffer_read_only', 'buffer_unavailable')
    """
    retry = [(b"retry-after", RETRY_AFTER)]
    if isinstance(exc, BacklogFull):
        return HTTPError(503, "backlog_full", f"the buffer backlog is at its bound; retry later ({exc})", retry)
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return HTTPError(503, "buffer_out_of_memory", "the buffer's Redis is out of memory (maxmemory reached); nothing of the request was kept; retry later", retry)
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return HTTPError(503, "buffer_read_only", "the buffer's Redis is a read-only replica (failover in progress?); nothing of the request was kept; retry later", retry)
    return unavailable(f"the buffer is unreachable ({type(exc).__name__}); retry later")


class BufferGate:
    """Prepare, bound and append events for the collector's endpoints."""

    def __init__(self, settings: Settings, keys: Keys, *, truncate_ip: bool) -> None:
        self.settings = settings
        self.keys = keys
        self.truncate_ip = truncate_ip
        self.redis: aioredis.Redis | None = None
        self.appender: Appender | None = None
        self.backlog: BacklogMonitor | None = None
        self._taps: set[asyncio.Task[None]] = set()
        #: debugger taps left out while :data:`TAP_IN_FLIGHT` were being written
        self.taps_skipped = 0

    def open(self, redis: aioredis.Redis, appender: Appender, backlog: BacklogMonitor) -> None:
        """Use these connections (made at startup)."""
        self.redis, self.appender, self.backlog = redis, appender, backlog

    async def close(self) -> None:
        """Close the appender, then the Redis client."""
        if self.appender is not None:
            await self.appender.close()
        if self.redis is not None:
            await self.redis.aclose()

    async def check_backlog(self, *, cached: bool = False) -> None:
        """503 while the backlog is over its bound or cannot be read (see the module doc); nothing
        to check here when the appender bounds the backlog itself (exactly, in :meth:`append`),
        unless ``cached`` (a caller that appends another way: the webhooks' replay guard)."""
        assert self.backlog is not None and self.appender is not None
        if self.appender.bounds_backlog and not cached:
            return
        try:
            if await self.backlog.current() > self.settings.max_backlog:
                raise HTTPError(503, "backlog_full", "the buffer backlog is over its bound; retry later", [(b"retry-after", RETRY_AFTER)])
        except HTTPError:
            raise
        except Exception as exc:
            raise refusal(exc) from None

    async def without_suppressed(self, prep: Prepared, *, force: bool = False) -> Prepared:
        """``prep`` without the events and dead letters of suppressed (forgotten) users: one
        ``SMISMEMBER`` per suppressed-set key the request's ids fall in (one on a single Redis),
        pipelined. An event counts as suppressed when its ``userId`` or its ``anonymousId`` is
        (:func:`~liveprofile.buffer.ingest.suppression_members`); the caller answers 2xx as if it
        had been kept (SDKs must not retry it) and nothing of it is written."""
        if not force and self.appender is not None and self.appender.checks_suppressed:
            return prep  # the atomic append checks (and stays group-committed: no round trip here)
        members = suppression_members(prep, self.keys)
        if not members or self.redis is None:
            return prep
        try:
            pipe = self.redis.pipeline(transaction=False)
            for key, ms in members.items():
                pipe.smismember(key, ms)
            found = await pipe.execute()
        except Exception as exc:
            raise refusal(exc) from None
        hits = {m for ms, flags in zip(members.values(), found, strict=True) for m, f in zip(ms, flags, strict=True) if f}
        return drop_suppressed(prep, self.keys, hits)

    async def append(self, prep: Prepared) -> Prepared:
        """Append one request's prepared appends; a failure raises its 503 (:func:`refusal`).
        Returns what was appended (``prep`` without what the atomic append left out as suppressed)."""
        assert self.appender is not None
        try:
            skipped = await self.appender.append(prep.appends, suppression_lists(prep))
        except Exception as exc:
            if not isinstance(exc, BacklogFull):
                logger.warning("collector: append failed (%s: %.200s): answering 503", type(exc).__name__, exc)
            raise refusal(exc) from None
        prep = drop_appends(prep, self.keys, set(skipped or ()))
        if self.backlog is not None:
            self.backlog.note(prep.accepted)
        return prep

    async def tap(self, prep: Prepared, *, received_at: str, source: str, key: bytes, trust: str) -> None:
        """With ``LIVEPROFILE_DEBUGGER=on``: the source debugger's entry of what :meth:`append`
        appended (:mod:`liveprofile.store.debugtap`), written in the background — the answer does
        not wait for it. Never raises: the events are acknowledged already; a failed tap is logged,
        and while :data:`TAP_IN_FLIGHT` taps are still being written a request's tap is left out
        (counted in :attr:`taps_skipped`): the debugger is a view, never back pressure."""
        s = self.settings
        if not s.debugger or self.redis is None or not prep.appends:
            return
        if len(self._taps) >= TAP_IN_FLIGHT:
            self.taps_skipped += 1
            return
        shown = prep.appends[: debugtap.MAX_PER_REQUEST]
        batch = debugtap.entries(shown, self.keys.dead_letter, received_at=received_at, source=source,
                                 key=debugtap.key_label(key), trust=trust, show_values=s.debugger_show_values)  # fmt: skip
        task = asyncio.get_running_loop().create_task(
            debugtap.tap(self.redis, self.keys.debug_events, batch, len(prep.appends) - len(shown), s.debugger_maxlen))
        self._taps.add(task)
        task.add_done_callback(self._tapped)

    def _tapped(self, task: asyncio.Task[None]) -> None:
        self._taps.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            logger.warning("collector: the debugger tap failed (%s: %.200s); the events are kept", type(exc).__name__, exc)

    def prepare(self, events: list[Any], *, received_at: str, source: str, force_type: str | None = None,
                defaults: Mapping[str, Any] | None = None, trust: str = SERVER) -> Prepared:  # fmt: skip
        """The appends of ``events`` (valid ones to their shards, the rest to the dead letters)."""
        s = self.settings
        return prepare(
            events, keys=self.keys, shards=s.shards, limits=s.limits, received_at=received_at, source=source,
            force_type=force_type, defaults=defaults, mask_ip=self.truncate_ip, trust=trust,
        )  # fmt: skip
