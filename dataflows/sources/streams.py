"""Redis Streams input: one Bytewax partition per buffer shard.

Each partition reads its stream with a non-blocking ``XREAD COUNT n`` from the
id after its last item; that id (plus a running count of entries read) is the
partition's snapshot, so with recovery on a restart resumes exactly where the
last completed epoch left off, and state and input roll back together.

Redis being unreachable is not fatal: the partition logs, counts the error,
backs off (``next_awake``) and retries, so the dataflow reconnects by itself.

**Read-ahead** (``read_ahead``; the production flow turns it on with its overlapped sinks): after returning a page, the partition asks for
the next one from a thread of its own, so the read (waiting behind the sinks' scripts in
Redis) overlaps the dataflow's work on the page just returned. The snapshot stays the
position after the last entry *returned* (a page read ahead and not yet returned is read
again after a restart); a read ahead that comes back empty is not trusted: the partition
reads again then and there, as without read-ahead, so "nothing more" (idle back-off, the end
of a ``stop_at_end`` run, the stream clock's caught-up shard) always comes from a fresh read.

**Send-ahead** (``send_ahead``; the production flow's default, with the sinks' deferred replies
of :mod:`dataflows.sinks.deferred`): the same, without a thread, on one server: right after a
page arrives, the partition *sends* the ``XREAD`` for the next one on a connection of its own and
reads its reply at the next poll. Redis runs that read before the sink writes the page causes,
instead of after them (a read sent at the poll waited behind every pending write: ~10 % of the
worker's wall time). Same snapshot and empty-page rules as read-ahead.

Items are ``(shard, entry_id, raw_event_bytes)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import hiredis
import redis
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from dataflows import metrics
from dataflows.clock import StreamClock
from liveprofile.store.connection import (
    BLOCKED,
    RETRYABLE,
    RawPipeline,
    blocked_reason,
    connect,
    read_replies,
)

__all__ = ["RedisStreamSource", "SourceItem", "SourceOptions", "share_progress"]

logger = logging.getLogger(__name__)

SourceItem = tuple[int, bytes, bytes]
_MAX_BACKOFF = timedelta(seconds=2)


def share_progress(client: redis.Redis, key: str, label: str, read: int, clock: StreamClock) -> None:
    """Publish a partition's read count and this process's newest event time, and adopt
    the newest event time any partition has published (the shared stream clock: event-time
    timers then fire alike however the partitions are spread over processes)."""
    pipe = client.pipeline(transaction=False)
    pipe.hset(key, mapping={label: read, f"t{label}": clock.newest()})
    pipe.hgetall(key)
    _, progress = pipe.execute()
    newest = [int(v) for k, v in progress.items() if k.startswith(b"t")]
    if newest:
        clock.observe(max(newest))


class _ShardPartition(StatefulSourcePartition[SourceItem, tuple[bytes, int]]):
    def __init__(self, url: str, stream: str, shard: int, resume: tuple[bytes, int] | None, opts: SourceOptions) -> None:
        self._r = connect(url, opts.cluster, socket_timeout=5, socket_connect_timeout=2)
        # one server: XREAD replies as hiredis parses them (redis-py would rebuild every entry as a dict)
        self._raw = None if opts.cluster else RawPipeline(self._r)
        self._opts = opts
        self._progress_key = opts.progress_key
        self._published = -1
        self._published_at = 0.0
        self._need_offset = resume is None
        self._stream = stream
        self._shard = shard
        self._label = str(shard)
        self._last_id, self._read = resume if resume is not None else (b"0-0", 0)
        self._count = opts.count
        self._idle = opts.idle
        self._stop_at_end = opts.stop_at_end
        self._awake: datetime | None = None
        self._backoff = opts.idle
        self._read_counter = metrics.EVENTS_READ.labels(self._label)
        self._snapshots: list[bytes] = []  # positions of the last two snapshots
        self._trimmed_at = 0.0
        self._ahead: Future[list[tuple[bytes, list[bytes]]]] | None = None  # the next page, being read
        self._reader = ThreadPoolExecutor(1, thread_name_prefix=f"read-ahead-{shard}") if opts.read_ahead else None
        self._send_ahead = opts.send_ahead and self._raw is not None and self._reader is None
        self._sent: Any = None  # a connection whose XREAD (sent ahead) is not answered yet
        self._on_poll = opts.on_poll

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
        share_progress(self._r, self._progress_key, self._label, self._read, self._opts.clock)
        metrics.BACKLOG.labels(self._label).set(max(0, int(info["entries-added"]) - self._read))
        self._published = self._read
        self._published_at = now

    def _trim(self) -> None:
        """Drop entries the dataflow has durably processed, at most every 5 s.

        Only with recovery on: a position is durable once the epoch snapshotted
        after it is committed, which is certain when the *next* snapshot is taken,
        so the stream is trimmed (``XTRIM MINID``) up to the older of the last
        two snapshot positions, and never closer to now than ``trim_retain_ms``.
        """
        retain = self._opts.trim_retain_ms
        now = time.monotonic()
        if retain is None or len(self._snapshots) < 2 or now - self._trimmed_at < 5.0:
            return
        self._trimmed_at = now
        ms, _, seq = self._snapshots[0].partition(b"-")
        bound = min(int(ms), int(time.time() * 1000) - retain)
        minid = f"{bound}-0" if bound < int(ms) else f"{int(ms)}-{int(seq) + 1}"
        trimmed = self._r.xtrim(self._stream, minid=minid, approximate=False)
        if trimmed:
            metrics.TRIMMED.labels(self._label).inc(trimmed)

    def next_batch(self) -> list[SourceItem]:
        if self._on_poll is not None:
            self._on_poll()
        try:
            try:
                self._publish_progress()
            except BLOCKED as exc:  # Redis at maxmemory or read-only: the read count waits, reading goes on
                metrics.BLOCKED_RETRIES.labels(blocked_reason(exc)).inc()
            self._trim()  # frees memory (with recovery on)
            ahead, self._ahead = self._ahead, None
            entries = ahead.result() if ahead is not None else self._answer() if self._sent is not None else []
            if not entries:  # nothing read ahead (or it found nothing): read now
                entries = self._read_entries(self._last_id)
        except RETRYABLE as exc:
            metrics.SOURCE_ERRORS.labels(self._label).inc()
            self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
            logger.warning("shard %s: Redis unreachable (%s); retrying in %s", self._shard, exc, self._backoff)
            self._awake = datetime.now(UTC) + self._backoff
            return []
        self._backoff = self._idle
        self._opts.clock.reading(self._shard, bool(entries))
        if not entries:
            if self._stop_at_end:
                self._publish_progress(force=True)
                raise StopIteration
            self._awake = datetime.now(UTC) + self._idle
            return []
        self._awake = None
        self._last_id = entries[-1][0]
        if self._reader is not None:
            self._ahead = self._reader.submit(self._read_entries, self._last_id)
        elif self._send_ahead:
            try:
                self._send(self._last_id)
            except RETRYABLE:  # the next poll reads now (and backs off if Redis stays away)
                self._drop_sent()
        self._read += len(entries)
        self._read_counter.inc(len(entries))
        shard = self._shard
        return [(shard, eid, f[1] if len(f) == 2 and f[0] == b"e" else _field_e(f)) for eid, f in entries]

    def _read_entries(self, after: bytes) -> list[tuple[bytes, list[bytes]]]:
        """Up to ``count`` entries after the id ``after``: (id, [field, value, ...]) each.
        Runs on the worker or on the read-ahead thread, never on both at once."""
        raw = self._raw
        if raw is None:
            resp = self._r.xread({self._stream: after}, count=self._count)
            return [(eid, [x for kv in fields.items() for x in kv]) for eid, fields in resp[0][1]] if resp else []
        raw.command("XREAD", "COUNT", self._count, "STREAMS", self._stream, after)
        return _page(raw.execute()[0])

    def _send(self, after: bytes) -> None:
        """Send the ``XREAD`` of the page after ``after`` on a connection of its own (send-ahead)."""
        conn = self._r.connection_pool.get_connection()
        self._sent = conn
        conn.send_packed_command([hiredis.pack_command(("XREAD", "COUNT", self._count, "STREAMS", self._stream, after))])

    def _answer(self) -> list[tuple[bytes, list[bytes]]]:
        """The page the ``XREAD`` sent ahead read."""
        conn = self._sent
        try:
            resp = read_replies(conn, 1)[0]
        except BaseException:
            self._drop_sent()
            raise
        self._sent = None
        self._r.connection_pool.release(conn)
        return _page(resp)

    def _drop_sent(self) -> None:
        conn, self._sent = self._sent, None
        if conn is not None:
            conn.disconnect()  # its reply may still come: never hand it out again
            self._r.connection_pool.release(conn)

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> tuple[bytes, int]:
        self._snapshots = [*self._snapshots[-1:], self._last_id]
        return (self._last_id, self._read)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.shutdown(wait=True, cancel_futures=True)
        self._drop_sent()
        self._r.close()


def _page(resp: Any) -> list[tuple[bytes, list[bytes]]]:
    """The entries of one raw ``XREAD`` reply (an error reply raised)."""
    if isinstance(resp, Exception):
        raise resp
    if not resp:
        return []
    # RESP3 (redis-py's default protocol may be either) answers a map stream -> entries
    return next(iter(resp.values())) if isinstance(resp, dict) else resp[0][1]


def _field_e(fields: list[bytes]) -> bytes:
    """The ``e`` field of a stream entry's flat field list (b"" if absent)."""
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == b"e":
            return fields[i + 1]
    return b""


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """How partitions read: entries per poll, idle back-off, end-of-stream behaviour,
    where read progress goes, buffer trimming (``None``: never trim), whether
    the URL names a Redis Cluster node, the flow's stream clock (which the shared
    progress advances), and whether each partition reads its next page ahead."""

    count: int = 1000
    idle: timedelta = timedelta(milliseconds=5)
    stop_at_end: bool = False
    progress_key: str | None = None
    trim_retain_ms: int | None = None
    cluster: bool = False
    clock: StreamClock = field(default_factory=StreamClock)
    read_ahead: bool = False
    send_ahead: bool = False
    on_poll: Callable[[], None] | None = None


class RedisStreamSource(FixedPartitionedSource[SourceItem, tuple[bytes, int]]):
    """Read ``streams`` (one per shard, in shard order) as partitions.

    ``stop_at_end=True`` ends a partition when its stream has nothing more to
    read (benchmarks, backfills); otherwise the source polls forever, waiting
    ``idle`` between empty polls. ``trim_retain_ms`` (only with Bytewax recovery
    on) trims what has been durably processed, keeping at least that much.
    ``cluster``: ``url`` is a Redis Cluster node; every command here touches one
    stream (or the progress hash), so each goes to the node owning it.
    ``read_ahead``: read each next page while the dataflow works on the last, from a thread;
    ``send_ahead``: send each next page's read at once and take its reply at the next poll (one
    server; module doc). ``on_poll``: called at the start of every poll (errors propagate).
    """

    def __init__(
        self,
        url: str,
        streams: list[str],
        count: int = 1000,
        idle: timedelta = timedelta(milliseconds=5),
        stop_at_end: bool = False,
        progress_key: str | None = None,
        trim_retain_ms: int | None = None,
        cluster: bool = False,
        clock: StreamClock | None = None,
        read_ahead: bool = False,
        send_ahead: bool = False,
        on_poll: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self.streams = list(streams)
        self.opts = SourceOptions(count, idle, stop_at_end, progress_key, trim_retain_ms, cluster, clock or StreamClock(), read_ahead, send_ahead, on_poll)

    def list_parts(self) -> list[str]:
        return list(self.streams)

    def build_part(self, step_id: str, for_part: str, resume_state: tuple[bytes, int] | None) -> _ShardPartition:
        return _ShardPartition(self.url, for_part, self.streams.index(for_part), resume_state, self.opts)
