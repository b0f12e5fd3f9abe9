"""Redis Streams input: one Bytewax partition per buffer shard.

Each partition reads its stream with a non-blocking ``XREAD COUNT n`` from the
id after its last item; that id (plus a running count of entries read) is the
partition's snapshot, so with recovery on a restart resumes exactly where the
last completed epoch left off, and state and input roll back together.

Redis being unreachable is not fatal: the partition logs, counts the error,
backs off (``next_awake``) and retries, so the dataflow reconnects by itself.

Items are ``(shard, entry_id, raw_event_bytes)``.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import redis
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from dataflows import metrics

__all__ = ["RedisStreamSource", "SourceItem"]

logger = logging.getLogger(__name__)

SourceItem = tuple[int, bytes, bytes]
_MAX_BACKOFF = timedelta(seconds=2)


class _ShardPartition(StatefulSourcePartition[SourceItem, tuple[bytes, int]]):
    def __init__(
        self,
        url: str,
        stream: str,
        shard: int,
        resume: tuple[bytes, int] | None,
        count: int,
        idle: timedelta,
        stop_at_end: bool,
        progress_key: str | None,
    ) -> None:
        self._r = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self._progress_key = progress_key
        self._published = -1
        self._published_at = 0.0
        self._need_offset = resume is None
        self._stream = stream
        self._shard = shard
        self._label = str(shard)
        self._last_id, self._read = resume if resume is not None else (b"0-0", 0)
        self._count = count
        self._idle = idle
        self._stop_at_end = stop_at_end
        self._awake: datetime | None = None
        self._backoff = idle
        self._read_counter = metrics.EVENTS_READ.labels(self._label)

    def _publish_progress(self, force: bool = False) -> None:
        """Publish the read count (for backlog) at most once a second, or now if ``force``."""
        now = time.monotonic()
        if self._progress_key is None:
            return
        if not force and now - self._published_at < 1.0:
            return
        try:
            info = self._r.xinfo_stream(self._stream)
        except redis.ResponseError:  # no such stream yet: nothing added, nothing trimmed
            info = {"entries-added": 0, "length": 0}
        if self._need_offset:
            # Starting from the beginning: entries trimmed before we started count as read.
            self._read += int(info["entries-added"]) - int(info["length"])
            self._need_offset = False
        self._r.hset(self._progress_key, self._label, self._read)
        metrics.BACKLOG.labels(self._label).set(max(0, int(info["entries-added"]) - self._read))
        self._published = self._read
        self._published_at = now

    def next_batch(self) -> list[SourceItem]:
        try:
            self._publish_progress()
            resp = self._r.xread({self._stream: self._last_id}, count=self._count)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            metrics.SOURCE_ERRORS.labels(self._label).inc()
            self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
            logger.warning("shard %s: Redis unreachable (%s); retrying in %s", self._shard, exc, self._backoff)
            self._awake = datetime.now(UTC) + self._backoff
            return []
        self._backoff = self._idle
        if not resp:
            if self._stop_at_end:
                self._publish_progress(force=True)
                raise StopIteration
            self._awake = datetime.now(UTC) + self._idle
            return []
        self._awake = None
        entries = resp[0][1]
        self._last_id = entries[-1][0]
        self._read += len(entries)
        self._read_counter.inc(len(entries))
        shard = self._shard
        return [(shard, eid, fields.get(b"e", b"")) for eid, fields in entries]

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> tuple[bytes, int]:
        return (self._last_id, self._read)

    def close(self) -> None:
        self._r.close()


class RedisStreamSource(FixedPartitionedSource[SourceItem, tuple[bytes, int]]):
    """Read ``streams`` (one per shard, in shard order) as partitions.

    ``stop_at_end=True`` ends a partition when its stream has nothing more to
    read (benchmarks, backfills); otherwise the source polls forever, waiting
    ``idle`` between empty polls.
    """

    def __init__(
        self,
        url: str,
        streams: list[str],
        count: int = 1000,
        idle: timedelta = timedelta(milliseconds=20),
        stop_at_end: bool = False,
        progress_key: str | None = None,
    ) -> None:
        self.url = url
        self.progress_key = progress_key
        self.streams = list(streams)
        self.count = count
        self.idle = idle
        self.stop_at_end = stop_at_end

    def list_parts(self) -> list[str]:
        return list(self.streams)

    def build_part(
        self, step_id: str, for_part: str, resume_state: tuple[bytes, int] | None
    ) -> _ShardPartition:
        shard = self.streams.index(for_part)
        return _ShardPartition(
            self.url, for_part, shard, resume_state, self.count, self.idle, self.stop_at_end,
            self.progress_key,
        )
