"""The Kafka buffer (a real Kafka-protocol broker, tansu) under ``kill -9`` of the dataflow and
under a broker outage.

* kill -9 mid-stream, on observed progress (as in ``test_chaos``), restarted with recovery:
  the final state equals an uninterrupted run's over the same input, and every restart
  resumes from the offsets in its snapshot.
* broker outage (every connection dropped and refused, the log intact: see
  :mod:`tests.kafka_broker`): the collector answers 503 with Retry-After within seconds, a
  retrying client loses nothing, the dataflow survives it (the same process) and catches
  up, and every profile equals the truth.
"""

from __future__ import annotations

from pathlib import Path

import redis

from liveprofile.buffer.kafka import KafkaConfig, create_topic
from liveprofile.devtools.generate import GenConfig, generate, write_jsonl
from tests.e2e.chaos import (
    END_MS,
    FAST_GEN,
    FAST_WINDOWS,
    caught_up,
    chaos_run,
    check_resumed_from_snapshots,
    cluster,
    diff,
    init_recovery,
    replay_file,
    settled,
    state,
    stop_all,
)
from tests.e2e.helpers import OutageClient, assert_nothing_lost, wait_truth
from tests.kafka_broker import LogEnds, TansuBroker
from tests.procs import base_env, dataflow_reads, start_collector, start_dataflow, wait_for

SHARDS = 4



def kafka_env(redis_url: str, kafka: TansuBroker, topic: str) -> dict[str, str]:
    create_topic(KafkaConfig(kafka.brokers, topic, SHARDS))
    return base_env(redis_url, **FAST_WINDOWS, LIVEPROFILE_BUFFER="kafka", LIVEPROFILE_KAFKA_BROKERS=kafka.brokers, LIVEPROFILE_KAFKA_TOPIC=topic)



def test_kafka_kill_9_mid_stream_gives_the_uninterrupted_state(kafka: TansuBroker, redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    gen = generate(GenConfig(users=600, seed=41, end_ms=END_MS, **FAST_GEN, days=15, duplicate_rate=0.02, invalid_rate=0.005))
    path = tmp_path / "events.jsonl"
    write_jsonl(path, gen.events)
    # the same input in two topics: Kafka logs are immutable, and each run appends its merges
    ref_env, chaos_env = kafka_env(redis_url, kafka, "lp-ref"), kafka_env(redis_url, kafka, "lp-chaos")
    # small polls: epochs (and so snapshots) close on time even on a loaded machine, and a
    # kill can land within one poll per partition of its target
    chaos_env["LIVEPROFILE_READ_BATCH"] = "250"
    replay_file(ref_env, path)

    ref_ends = LogEnds(kafka.brokers, "lp-ref", SHARDS)
    procs = cluster(ref_env, tmp_path, 1, init_recovery(tmp_path / "rec-ref", 1), "ref", api=True)
    try:
        settled(r, unread=caught_up(procs, {}, ref_ends))
    finally:
        stop_all(procs)
    reference = state(r)
    assert not wait_truth(r, gen.truth, timeout=5)
    r.flushall()
    replay_file(chaos_env, path)  # after the flush: the replay dead-letters the invalid events in Redis

    ends = LogEnds(kafka.brokers, "lp-chaos", SHARDS)
    kills = 3
    rep = chaos_run(
        chaos_env, tmp_path, init_recovery(tmp_path / "rec", 1), [1], kills, seed=41, ends=ends,
        settle=lambda procs, start: settled(r, unread=caught_up(procs, start, ends)), read_batch=250,
    )  # fmt: skip
    print("kills (resumed from, read, snapshot, re-read):", [(k.resumed_from, k.read, k.snapshot, k.reread) for k in rep.kills])
    check_resumed_from_snapshots(rep, kills)
    got = state(r)
    d = diff(reference, got)
    assert not d, (len(d), d[:4])
    assert not wait_truth(r, gen.truth, timeout=5)


def test_kafka_broker_outage_loses_nothing(kafka_proxied: TansuBroker, redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    kafka = kafka_proxied
    gen = generate(GenConfig(users=150, seed=43, end_ms=END_MS, **FAST_GEN, days=10, duplicate_rate=0.02, invalid_rate=0.01))
    batches = [gen.events[i : i + 100] for i in range(0, len(gen.events), 100)]
    env = kafka_env(redis_url, kafka, "liveprofile-events")
    ends = LogEnds(kafka.brokers, "liveprofile-events", SHARDS)
    coll, url = start_collector(env, tmp_path)
    df = start_dataflow(env, tmp_path, recovery=init_recovery(tmp_path / "rec", 1), api=True)
    pid = df.p.pid
    client = OutageClient(url, batches, what="the broker outage")
    try:
        wait_for(lambda: bool(dataflow_reads([df])), 60, 0.05, "the dataflow's source to start")
        client.start()
        # mid-stream: the dataflow has read acknowledged events, and half of them are unsent
        wait_for(lambda: client.acked > 0 and sum((dataflow_reads([df]) or {}).values()) > 0, 60, 0.02, "acknowledged events read")
        kafka.outage()
        at_cut = client.acked
        client.gate.set()
        assert 0 < at_cut <= len(batches) // 2
        # the outage is seen on both sides before the broker comes back
        wait_for(lambda: client.statuses.count(503) >= 2 or bool(client.failure), 60, 0.05, "503s from the collector")
        wait_for(lambda: "Connection refused" in df.output(), 60, 0.1, "the dataflow's consumer to see the outage")
        kafka.restore()
        client.join(180)
        assert set(client.statuses) <= {200, 503}  # a broker outage is a 503, never a 429
        assert client.retry_after == {"5"}
        settled(r, unread=caught_up([df], {}, ends))
        assert df.alive() and df.p.pid == pid, df.output()  # it survived the outage: never restarted
        assert_nothing_lost(r, gen, df.output, timeout=30)
    finally:
        client.release()
        df.interrupt()
        coll.stop()
