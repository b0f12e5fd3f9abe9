"""Kafka input (``LIVEPROFILE_BUFFER=kafka``): the topic's partitions are the shards.

Wraps Bytewax's own ``KafkaSource`` (partitions assigned, offsets kept in the
recovery snapshots, not in Kafka: guide §8) and turns each message into the
same ``(shard, position, raw event)`` item the Redis Streams source yields, so
everything downstream is shared. A partition also publishes its read offset
and the stream clock to Redis once a second, like the Redis source.
Consumer errors are counted and skipped, never fatal.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

import redis
from bytewax.connectors.kafka import KafkaError, KafkaSource
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING

from dataflows import metrics
from dataflows.clock import StreamClock
from dataflows.sources.streams import SourceItem, share_progress
from liveprofile.store.connection import connect

__all__ = ["KafkaBufferSource"]

logger = logging.getLogger(__name__)


class _KafkaShard(StatefulSourcePartition[SourceItem, int | None]):
    def __init__(self, inner: StatefulSourcePartition, shard: int, url: str, progress_key: str | None, cluster: bool, clock: StreamClock) -> None:
        self._clock = clock
        self._inner = inner
        self._shard = shard
        self._label = str(shard)
        self._r = connect(url, cluster, socket_timeout=5) if progress_key else None
        self._progress_key = progress_key
        self._published_at = 0.0
        self._read = 0
        self._counter = metrics.EVENTS_READ.labels(self._label)

    def next_batch(self) -> list[SourceItem]:
        batch = self._inner.next_batch()
        out: list[SourceItem] = []
        shard = self._shard
        for m in batch:
            if isinstance(m, KafkaError):
                metrics.SOURCE_ERRORS.labels(self._label).inc()
                logger.warning("partition %s: %s", shard, m.err)
                continue
            out.append((shard, f"{m.offset}-0".encode(), m.value or b""))
            self._read = (m.offset or 0) + 1
        if out:
            self._counter.inc(len(out))
        self._clock.reading(shard, bool(out))
        now = time.monotonic()
        if self._r is not None and self._progress_key and now - self._published_at >= 1.0:
            self._published_at = now
            try:
                share_progress(self._r, self._progress_key, self._label, self._read, self._clock)
            except redis.RedisError as exc:
                logger.warning("partition %s: progress not published (%s)", shard, exc)
        return out

    def next_awake(self) -> datetime | None:
        return self._inner.next_awake()

    def snapshot(self) -> int | None:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()
        if self._r is not None:
            self._r.close()


class KafkaBufferSource(FixedPartitionedSource[SourceItem, int | None]):
    """Read the events topic; ``stop_at_end`` ends at the current end of each partition."""

    def __init__(self, brokers: str, topic: str, redis_url: str, progress_key: str | None,
                 batch_size: int = 1000, stop_at_end: bool = False, cluster: bool = False,
                 clock: StreamClock | None = None) -> None:  # fmt: skip
        self._clock = clock or StreamClock()
        self._inner = KafkaSource(
            brokers.split(","), [topic], tail=not stop_at_end, starting_offset=OFFSET_BEGINNING,
            batch_size=batch_size, raise_on_errors=False,
        )  # fmt: skip
        self._url = redis_url
        self._progress_key = progress_key
        self._cluster = cluster

    def list_parts(self) -> list[str]:
        return self._inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _KafkaShard:
        inner = self._inner.build_part(step_id, for_part, resume_state)
        shard = int(for_part.split("-", 1)[0])
        return _KafkaShard(inner, shard, self._url, self._progress_key, self._cluster, self._clock)
