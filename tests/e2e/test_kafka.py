"""The Kafka option against a real Kafka-protocol broker (tansu): the same input gives the
same profiles as the Redis Streams path, with recovery, and merges travel through Kafka."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from liveprofile.buffer.kafka import KafkaConfig, create_topic
from liveprofile.devtools.generate import GenConfig, generate, write_jsonl
from tests.api.conftest import ApiServer
from tests.e2e.chaos import (
    END_MS,
    FAST_GEN,
    FAST_WINDOWS,
    caught_up,
    cluster,
    diff,
    init_recovery,
    replay_file,
    settled,
    state,
    stop_all,
)
from tests.e2e.helpers import post_batches, wait_truth
from tests.kafka_broker import LogEnds, TansuBroker
from tests.procs import base_env, start_collector


def run_until_settled(env: dict[str, str], tmp: Path, name: str, r: redis.Redis, kafka: TansuBroker | None = None) -> dict:
    """Run the dataflow until it has read the whole buffer and Redis is quiet. With Kafka,
    "read the whole buffer" is the dataflow's own read count against the topic's log ends
    (the Redis Streams backlog says nothing about Kafka)."""
    procs = cluster(env, tmp, 1, init_recovery(tmp / f"rec-{name}", 1), name, api=True)
    try:
        if kafka is None:
            settled(r)
        else:
            settled(r, unread=caught_up(procs, {}, LogEnds(kafka.brokers, env.get("LIVEPROFILE_KAFKA_TOPIC", "liveprofile-events"), 4)))
    finally:
        stop_all(procs)
    return state(r)


def test_kafka_buffer_gives_the_same_profiles_as_redis_streams(kafka: TansuBroker, redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    gen = generate(GenConfig(users=200, seed=17, end_ms=END_MS, **FAST_GEN, days=10, duplicate_rate=0.03, invalid_rate=0.01))
    # anonymous visitors identified later: their merges must travel through the buffer too
    t0 = END_MS - 3_600_000
    iso = lambda ms: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"  # noqa: E731
    extra = [{"type": "page", "anonymousId": f"anon-{i}", "messageId": f"ap-{i}", "timestamp": iso(t0 + i), "name": "Home"} for i in range(20)]
    extra += [{"type": "identify", "anonymousId": f"anon-{i}", "userId": f"known-{i}", "messageId": f"ai-{i}", "timestamp": iso(t0 + 100 + i),
               "traits": {"email": f"k{i}@example.com"}} for i in range(20)]  # fmt: skip
    path = tmp_path / "events.jsonl"
    write_jsonl(path, gen.events + extra)

    env_redis = base_env(redis_url, **FAST_WINDOWS)
    replay_file(env_redis, path)
    via_redis = run_until_settled(env_redis, tmp_path, "redis", r)
    assert not wait_truth(r, gen.truth, timeout=5)
    r.flushall()

    cfg = KafkaConfig(kafka.brokers, "liveprofile-events", 4)
    create_topic(cfg)
    env_kafka = base_env(redis_url, **FAST_WINDOWS, LIVEPROFILE_BUFFER="kafka", LIVEPROFILE_KAFKA_BROKERS=kafka.brokers)
    replay_file(env_kafka, path)
    assert r.keys("lp:events:*") == []  # nothing went to Redis Streams
    via_kafka = run_until_settled(env_kafka, tmp_path, "kafka", r, kafka)
    assert not wait_truth(r, gen.truth, timeout=5)
    assert r.hget("lp:profile:known-3", "anonymous_ids") == b'["anon-3"]'
    assert r.hget("lp:profile:known-3", "event_count") == b"2"
    # whichever arrived first across partitions, no live anonymous profile remains
    assert r.hget("lp:profile-anon:anon-3", "event_count") is None and not r.exists("lp:profile:anon-3")
    diffs = diff(via_redis, via_kafka)  # profiles, segments, folded change feed, dead letters
    detail = [(p, k, {f: (a.get(f), b.get(f)) for f in set(a) | set(b) if a.get(f) != b.get(f)}) for p, k, a, b in diffs if isinstance(a, dict) and isinstance(b, dict)]
    assert not diffs, (len(diffs), detail[:4], diffs[:2])


def test_collector_appends_to_kafka(kafka: TansuBroker, redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    """The collector acknowledges only what Kafka acknowledged; dead letters stay in Redis."""
    gen = generate(GenConfig(users=60, seed=23, end_ms=END_MS, **FAST_GEN, days=5, invalid_rate=0.02))
    cfg = KafkaConfig(kafka.brokers, "liveprofile-events", 4)
    create_topic(cfg)
    env = base_env(redis_url, **FAST_WINDOWS, LIVEPROFILE_BUFFER="kafka", LIVEPROFILE_KAFKA_BROKERS=kafka.brokers)
    coll, url = start_collector(env, tmp_path)
    try:
        post_batches(url, gen.events)
    finally:
        coll.stop()
    assert r.keys("lp:events:*") == []
    assert r.xlen("lp:dead-letter") == len(gen.invalid)
    run_until_settled(env, tmp_path, "kafka-collector", r, kafka)
    assert not wait_truth(r, gen.truth, timeout=10)


def test_api_exposures_reach_the_dataflow_through_kafka(kafka: TansuBroker, redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    """With ``LIVEPROFILE_BUFFER=kafka`` the API's ``Experiment Viewed`` events go to Kafka, where
    the dataflow reads (they used to go to Redis Streams, which nothing reads then)."""
    create_topic(KafkaConfig(kafka.brokers, "liveprofile-events", 4))
    r.hset("lp:profile:u1", mapping={"user_id": "u1", "purchase_count": "1", "revenue_total": "10.00"})
    api = ApiServer(redis_url, LIVEPROFILE_BUFFER="kafka", LIVEPROFILE_KAFKA_BROKERS=kafka.brokers)
    try:
        got = api.get("/v1/content/u1/recommendations", params={"format": "json"})
        assert got.status_code == 200 and set(got.json()["experiments"]) == {"subject", "hero"}
    finally:
        api.stop()
    assert r.keys("lp:events:*") == []  # nothing went to Redis Streams
    env = base_env(redis_url, **FAST_WINDOWS, LIVEPROFILE_BUFFER="kafka", LIVEPROFILE_KAFKA_BROKERS=kafka.brokers)
    run_until_settled(env, tmp_path, "exposures", r, kafka)
    assert r.hget("lp:profile:u1", "event_count") == b"2"  # one Experiment Viewed per experiment, read from Kafka
