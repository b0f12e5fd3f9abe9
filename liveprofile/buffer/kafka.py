"""The Kafka option of the buffer (``LIVEPROFILE_BUFFER=kafka``).

One topic (``LIVEPROFILE_KAFKA_TOPIC``) with ``LIVEPROFILE_SHARDS`` partitions
takes the place of the Redis Streams ``{p}:events:{i}``: an event goes to
partition ``CRC-32(userId, else anonymousId) mod N`` — the same function as
the Redis shards, so per-user order holds and the two paths are
interchangeable. The message value is the same event JSON; the key is the
routing identity. Everything else (profiles, dead letters, change feed) stays
in Redis.

Producers are idempotent with ``acks=all``: an append is acknowledged only
when every in-sync replica has it. :class:`KafkaAppender` is the collector's
(asyncio; a request is answered after the delivery reports of all its events);
:class:`KafkaSyncAppender` serves the CLI (replay, merges, privacy controls).

Erasure note: Kafka logs are immutable; ``liveprofile forget`` cannot delete a
user's buffered events from the topic (size its retention accordingly); the
dataflow ignores them once the user is forgotten.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from liveprofile.buffer.streams import Append
from liveprofile.store.keys import Keys

__all__ = ["KafkaConfig", "KafkaAppender", "KafkaSyncAppender", "create_topic", "split_appends"]


class KafkaConfig:
    """Brokers, topic and partition count, plus producer options."""

    def __init__(self, brokers: str, topic: str, partitions: int) -> None:
        if not brokers:
            msg = "LIVEPROFILE_KAFKA_BROKERS is empty: the Kafka buffer needs at least one broker"
            raise ValueError(msg)
        self.brokers = brokers
        self.topic = topic
        self.partitions = partitions

    def producer_config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.brokers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.max.bytes": 1_000_000,
        }


def _shard_of_stream(stream: str) -> int | None:
    _, _, tail = stream.rpartition(":events:")
    return int(tail) if tail.isdigit() else None


def split_appends(items: Sequence[Append], keys: Keys) -> tuple[list[tuple[int, bytes]], list[Append]]:
    """Buffer entries (partition, event bytes) for Kafka, and the rest (dead letters) for Redis.

    >>> k = Keys("lp")
    >>> split_appends([("lp:events:2", {"e": b"x"}), ("lp:dead-letter", {"reason": "r"})], k)
    ([(2, b'x')], [('lp:dead-letter', {'reason': 'r'})])
    """
    kafka: list[tuple[int, bytes]] = []
    rest: list[Append] = []
    prefix = keys.events(0)[:-1]
    for stream, fields in items:
        shard = _shard_of_stream(stream) if stream.startswith(prefix) else None
        if shard is None:
            rest.append((stream, fields))
        else:
            raw = fields["e"]
            kafka.append((shard, raw if isinstance(raw, bytes) else raw.encode()))
    return kafka, rest


def create_topic(cfg: KafkaConfig, timeout: float = 30.0) -> None:
    """Create the topic with ``cfg.partitions`` partitions (no error if it exists)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": cfg.brokers})
    futures = admin.create_topics([NewTopic(cfg.topic, num_partitions=cfg.partitions, replication_factor=1)])
    for f in futures.values():
        try:
            f.result(timeout)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
                raise


class KafkaSyncAppender:
    """Blocking producer: ``append`` returns once every message is acknowledged."""

    def __init__(self, cfg: KafkaConfig) -> None:
        from confluent_kafka import Producer

        self.cfg = cfg
        self._p = Producer(cfg.producer_config())

    def append_raw(self, entries: Sequence[tuple[int, bytes]], timeout: float = 30.0) -> None:
        errors: list[object] = []

        def done(err: object, _msg: object) -> None:
            if err is not None:
                errors.append(err)

        for part, raw in entries:
            self._p.produce(self.cfg.topic, value=raw, partition=part, on_delivery=done)
            self._p.poll(0)
        left = self._p.flush(timeout)
        if left or errors:
            msg = f"Kafka did not acknowledge {left} message(s); errors: {errors[:3]}"
            raise RuntimeError(msg)


class KafkaAppender:
    """Collector appender: events to Kafka, dead letters to Redis; acknowledged together.

    A request waits up to ``ack_timeout`` s for its acknowledgements, but only
    ``down_timeout`` s while the producer reports every broker down (until a delivery
    succeeds again): during a broker outage the collector answers 503 within seconds
    instead of holding every request for the full timeout. Messages of a request that
    timed out may still be delivered later; the client's retry is then a duplicate the
    dataflow drops by ``messageId``."""

    ack_timeout = 30.0
    down_timeout = 2.0
    in_redis = False
    #: the backlog bound is the collector's cached check (:class:`~liveprofile.buffer.streams.BacklogMonitor`)
    bounds_backlog = False

    #: the suppressed set is not checked in the append (the collector's pre-check is all there is)
    checks_suppressed = False

    def __init__(self, cfg: KafkaConfig, keys: Keys, redis_appender: Any) -> None:
        from confluent_kafka import Producer

        self.cfg = cfg
        self.keys = keys
        self._redis = redis_appender
        self._brokers_down = False
        self._p = Producer({**cfg.producer_config(), "error_cb": self._on_error})
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: asyncio.Task[None] | None = None

    def _on_error(self, err: Any) -> None:
        """librdkafka's global errors (called from ``poll``): note an all-brokers-down state."""
        from confluent_kafka import KafkaError

        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._brokers_down = True

    async def _poll(self) -> None:
        while True:
            await asyncio.to_thread(self._p.poll, 0.05)

    async def append(self, items: Sequence[Append], suppressed: Sequence[Sequence[str]] | None = None) -> list[int]:
        """Append ``items`` (``suppressed`` is not checked here: the collector's pre-check is
        Kafka's only suppression check, see :meth:`~liveprofile.collector.gate.BufferGate.without_suppressed`)."""
        kafka, rest = split_appends(items, self.keys)
        loop = asyncio.get_running_loop()
        if self._poller is None:
            self._poller = loop.create_task(self._poll())
        futs: list[asyncio.Future[None]] = []
        for part, raw in kafka:
            fut: asyncio.Future[None] = loop.create_future()

            def done(err: object, _msg: object, fut: asyncio.Future[None] = fut) -> None:
                if err is None:
                    self._brokers_down = False
                    loop.call_soon_threadsafe(_resolve, fut, None)
                else:
                    loop.call_soon_threadsafe(_resolve, fut, RuntimeError(f"Kafka delivery failed: {err}"))

            self._p.produce(self.cfg.topic, value=raw, partition=part, on_delivery=done)
            futs.append(fut)
        if rest:
            await self._redis.append(rest)
        if futs:
            await asyncio.wait_for(asyncio.gather(*futs), timeout=self.down_timeout if self._brokers_down else self.ack_timeout)
        return []

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        await asyncio.to_thread(self._p.flush, 10)


def _resolve(fut: asyncio.Future[None], err: BaseException | None) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(err)
