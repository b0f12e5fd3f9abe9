"""The one place ``LIVEPROFILE_BUFFER`` picks how entries are written (Redis Streams or Kafka).

* :func:`appender_for` — the services' asyncio :class:`Appender` (collector, API): prepared
  appends in, acknowledged together (events to the buffer, dead letters to Redis);
* :func:`raw_writer` / :func:`writer_for` — the tools' synchronous writer of ``(shard, raw)``
  entries (history import, identity merges out of the dataflow, privacy controls, dead-letter
  re-drive), returning once the buffer acknowledged them;
* :func:`appends_writer` — the tools' synchronous writer of prepared appends.

The dataflow's side, which buffer it reads, is :func:`dataflows.build.buffer_source`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import redis
import redis.asyncio as aioredis

from liveprofile.buffer.streams import Append, AsyncAppender
from liveprofile.settings import Settings
from liveprofile.store.connection import connect
from liveprofile.store.keys import Keys

__all__ = ["Appender", "RawWriter", "appender_for", "raw_writer", "writer_for", "appends_writer", "dead_letter_caps"]

RawWriter = Callable[[Sequence[tuple[int, bytes]]], None]


class Appender(Protocol):
    """What the services append through."""

    #: whether the events land in the same Redis as the caller's keys (Redis Streams on one server)
    in_redis: bool
    #: whether :meth:`append` enforces ``LIVEPROFILE_MAX_BACKLOG`` itself, exactly
    bounds_backlog: bool
    #: whether :meth:`append` leaves out suppressed users' items itself (in the atomic append)
    checks_suppressed: bool

    async def append(self, items: Sequence[Append], suppressed: Sequence[Sequence[str]] | None = None) -> list[int]:
        """Append ``items``; returns once every one was acknowledged, raises otherwise.
        ``suppressed``: per item, the suppressed-set members it belongs to; where the append is
        atomic (one Redis) an item with a member in the set is left out in the same call.
        Returns the indexes of the items left out."""

    async def close(self) -> None:
        """Flush and release what the appender holds."""


def appender_for(settings: Settings, client: aioredis.Redis, *, bound_backlog: bool = False) -> Appender:
    """The services' appender for the buffer of ``settings``; dead letters go to ``client``
    (capped at ``LIVEPROFILE_DEAD_LETTER_MAXLEN``).

    Redis Streams on one server: each call's appends are all or nothing, and with
    ``bound_backlog`` refused whole (:class:`~liveprofile.buffer.streams.BacklogFull`) when they
    would take the backlog past ``LIVEPROFILE_MAX_BACKLOG`` (exact). A Redis Cluster or Kafka:
    neither (see :class:`~liveprofile.buffer.streams.AsyncAppender` and ``docs/operating.md``)."""
    keys = Keys.of(settings)
    redis_appender = AsyncAppender(
        client, keys=keys, shards=settings.shards, max_backlog=settings.max_backlog if bound_backlog else None,
        maxlens=dead_letter_caps(settings, keys),
    )  # fmt: skip
    if settings.buffer != "kafka":
        return redis_appender
    from liveprofile.buffer.kafka import KafkaAppender, KafkaConfig

    return KafkaAppender(KafkaConfig(settings.kafka_brokers, settings.kafka_topic, settings.shards), keys, redis_appender)


def dead_letter_caps(settings: Settings, keys: Keys) -> dict[str, int]:
    """MAXLEN of the streams the services write next to the buffer: the dead letters."""
    return {keys.dead_letter: settings.dead_letter_maxlen, keys.dead_letter_redriven: settings.dead_letter_maxlen}


def raw_writer(settings: Settings, client: redis.Redis | None = None) -> RawWriter:
    """Append ``(shard, raw)`` entries to the buffer of ``settings``."""
    if settings.buffer == "kafka":
        from liveprofile.buffer.kafka import KafkaConfig, KafkaSyncAppender

        return KafkaSyncAppender(KafkaConfig(settings.kafka_brokers, settings.kafka_topic, settings.shards)).append_raw
    keys = Keys.of(settings)
    r = client or connect(settings.redis_url, settings.redis_cluster)

    def write(entries: Sequence[tuple[int, bytes]]) -> None:
        pipe = r.pipeline(transaction=False)
        for shard, raw in entries:
            pipe.xadd(keys.events(shard), {"e": raw})
        pipe.execute()

    return write


def writer_for(settings: Settings, client: redis.Redis | None = None) -> RawWriter:
    """The tools' writer of ``(shard, raw)`` entries (:func:`raw_writer`)."""
    return raw_writer(settings, client)


def appends_writer(settings: Settings, client: redis.Redis) -> Callable[[Sequence[Append]], None]:
    """Write prepared appends: events to the buffer, everything else (dead letters) to Redis."""
    if settings.buffer != "kafka":
        from liveprofile.buffer.streams import SyncAppender

        return SyncAppender(client, dead_letter_caps(settings, Keys.of(settings))).append
    from liveprofile.buffer.kafka import split_appends

    to_buffer = raw_writer(settings, client)
    keys = Keys.of(settings)

    def write(items: Sequence[Append]) -> None:
        kafka, rest = split_appends(items, keys)
        if kafka:
            to_buffer(kafka)
        if rest:
            from liveprofile.buffer.streams import SyncAppender

            SyncAppender(client, dead_letter_caps(settings, keys)).append(rest)

    return write
