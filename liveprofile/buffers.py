"""Writing raw entries into the configured buffer (Redis Streams or Kafka).

Used by the tools that put entries into the buffer outside the collector:
JSONL replay, identity merges coming out of the dataflow, privacy controls,
dead-letter re-drive. ``raw_writer(settings)`` returns a function that appends
``(shard, event JSON)`` pairs and returns once the buffer acknowledged them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import redis

from liveprofile.buffer import Append
from liveprofile.keys import Keys
from liveprofile.redisconn import connect
from liveprofile.settings import Settings

__all__ = ["RawWriter", "raw_writer", "appends_writer"]

RawWriter = Callable[[Sequence[tuple[int, bytes]]], None]


def raw_writer(settings: Settings, client: redis.Redis | None = None) -> RawWriter:
    """Append ``(shard, raw)`` entries to the buffer of ``settings``."""
    if settings.buffer == "kafka":
        from liveprofile.kafka_buffer import KafkaConfig, KafkaSyncAppender

        return KafkaSyncAppender(KafkaConfig(settings.kafka_brokers, settings.kafka_topic, settings.shards)).append_raw
    keys = Keys.of(settings)
    r = client or connect(settings.redis_url, settings.redis_cluster)

    def write(entries: Sequence[tuple[int, bytes]]) -> None:
        pipe = r.pipeline(transaction=False)
        for shard, raw in entries:
            pipe.xadd(keys.events(shard), {"e": raw})
        pipe.execute()

    return write


def appends_writer(settings: Settings, client: redis.Redis) -> Callable[[Sequence[Append]], None]:
    """Write prepared appends: events to the buffer, everything else (dead letters) to Redis."""
    if settings.buffer != "kafka":
        from liveprofile.buffer import SyncAppender

        return SyncAppender(client).append
    from liveprofile.kafka_buffer import split_appends

    to_buffer = raw_writer(settings, client)
    keys = Keys.of(settings)

    def write(items: Sequence[Append]) -> None:
        kafka, rest = split_appends(items, keys)
        if kafka:
            to_buffer(kafka)
        if rest:
            pipe = client.pipeline(transaction=False)
            for stream, fields in rest:
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            pipe.execute()

    return write
