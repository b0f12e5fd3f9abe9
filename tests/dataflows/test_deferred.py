"""Deferred replies (:mod:`dataflows.sinks.deferred`): batches sent at once and answered later,
in order, written again after a failure, and an epoch committed only after its replies."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
import redis
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, run_main

from dataflows.build import output
from dataflows.outputs import EdgesOut, ModelOut
from dataflows.sinks import RedisPatchSink, RedisProfileSink, RfmEdgesSink
from dataflows.sinks.deferred import Channel
from dataflows.sinks.overlap import Lane, OverlappedSink
from liveprofile.store.keys import Keys
from operators.user import ProfileUpdate
from tests.dataflows.test_overlap import _causes

K = Keys("lp")
USERS = [f"u{i}" for i in range(10)]


def _update(u: str, seq: int, count: int) -> tuple[str, ProfileUpdate]:
    return (u, ProfileUpdate(u, seq, {"user_id": u, "event_count": str(count)}, 0, None))


def _patch(u: str, score: str) -> ModelOut:
    return ModelOut(u, {"propensity": score}, False, 0.0, {})


def _counts(r: redis.Redis) -> dict[str, bytes | None]:
    return {u: r.hget(K.profile(u), "event_count") for u in USERS}


def test_batches_are_sent_at_once_and_answered_later(redis_url: str, r: redis.Redis) -> None:
    """Redis runs a batch before its replies are read (the worker does not wait for them), in
    the order the batches were submitted across sinks (a profile upsert, then a patch of the same
    user), and the pending batches never exceed ``depth``."""
    ch = Channel(redis_url, depth=3)
    prof = RedisProfileSink(redis_url, K, retry_for=0.1).build("p", 0, 1)
    patch = RedisPatchSink(redis_url, K, retry_for=0.1).build("m", 0, 1)
    ch.write(prof, [_update("u0", 1, 0)])  # a writer's first batch loads its script: synchronous
    ch.write(patch, [_patch("u0", "0.0")])
    assert len(ch) == 0
    for i, u in enumerate(USERS[1:], start=1):
        ch.write(prof, [_update(u, 1, i)])
        ch.write(patch, [_patch(u, f"0.{i}")])
        assert len(ch) <= 3
    assert len(ch) >= 1  # the newest batch at least: a write reads only replies that came before it
    for _ in range(200):  # Redis ran the pending ones already: nobody read their replies
        if r.hget(K.profile(USERS[-1]), "propensity") == b"0.9":
            break
        time.sleep(0.01)
    assert r.hget(K.profile(USERS[-1]), "event_count") == b"9"
    assert r.hget(K.profile(USERS[-1]), "propensity") == b"0.9"
    ch.drain()
    assert len(ch) == 0
    assert _counts(r) == {u: str(i).encode() for i, u in enumerate(USERS)}
    assert {u: r.hget(K.profile(u), "propensity") for u in USERS} == {u: f"0.{i}".encode() for i, u in enumerate(USERS)}


def test_a_sink_that_cannot_defer_writes_after_the_pending_replies(redis_url: str, r: redis.Redis) -> None:
    """The RFM edges sink (no ``prepare``) writes only once every pending batch is answered."""
    ch = Channel(redis_url, depth=8)
    prof = RedisProfileSink(redis_url, K, retry_for=0.1).build("p", 0, 1)
    edges = RfmEdgesSink(redis_url, K, retry_for=0.1).build("e", 0, 1)
    ch.write(prof, [_update("u0", 1, 1)])
    ch.write(prof, [_update("u1", 1, 1)])
    assert len(ch) == 1
    ch.write(edges, [EdgesOut(None)])
    assert len(ch) == 0


def test_a_lost_connection_writes_the_pending_batches_again(redis_url: str, r: redis.Redis) -> None:
    """The channel's connection is killed with batches pending: their replies are lost, so they
    are written again, in order, and every profile holds its newest values."""
    ch = Channel(redis_url, depth=100)
    prof = RedisProfileSink(redis_url, K, retry_for=2).build("p", 0, 1)
    ch.write(prof, [_update("u0", 1, 1)])
    r.execute_command("CLIENT", "PAUSE", 5000, "WRITE")  # Redis holds the writes: none has run
    try:
        for i, u in enumerate(USERS):
            ch.write(prof, [_update(u, 2, 10 + i)])
        assert len(ch) == len(USERS)
        r.client_kill_filter(_type="normal", skipme=True)  # ...and drops them with their connection
    finally:
        r.execute_command("CLIENT", "UNPAUSE")
    ch.write(prof, [_update("u0", 3, 99)])  # sent on a dead connection, or finds it dead when read
    ch.drain()
    assert _counts(r) == {u: str(99 if u == "u0" else 10 + i).encode() for i, u in enumerate(USERS)}


def test_an_error_reply_rewrites_that_batch_and_the_later_ones_then_raises(redis_url: str, r: redis.Redis) -> None:
    """u5's upsert fails (its key holds a string: WRONGTYPE): the batches before it are written,
    the error is raised on the worker, and the channel refuses to write any more."""
    ch = Channel(redis_url, depth=100)
    prof = RedisProfileSink(redis_url, K, retry_for=0.1).build("p", 0, 1)
    r.set(K.profile("u5"), "not a hash")
    ch.write(prof, [_update("u0", 1, 1)])
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):  # at a later write or at the drain
        for u in USERS[1:]:
            ch.write(prof, [_update(u, 1, 1)])
        ch.drain()
    assert all(r.hget(K.profile(u), "event_count") == b"1" for u in USERS[:5])
    with pytest.raises(RuntimeError, match="earlier sink write failed"):
        ch.write(prof, [_update("u0", 2, 2)])
    ch.drain(once=True)  # what a closing partition does while the flow unwinds: no second error


def _flow(redis_url: str, lane: Lane | Channel) -> Dataflow:
    updates = [_update(u, 1, 1) for u in USERS]
    flow = Dataflow("deferred")
    s = op.input("inp", flow, TestingSource(updates, batch_size=1))
    output("profile_out", s, OverlappedSink(RedisProfileSink(redis_url, K, retry_for=0.1), lane))
    return flow


@pytest.mark.parametrize("kind", ["replies", "threads"])
def test_an_epoch_with_a_failed_write_is_not_committed(kind: str, redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    """u5's write fails while later items are already sent: the run stops, and after the restart
    (the key fixed) u5's profile is written. Fails if the epoch's snapshot does not wait for the
    pending replies (u5's epoch would be committed and u5 never replayed)."""
    init_db_dir(tmp_path, 1)
    rc = RecoveryConfig(str(tmp_path))
    r.set(K.profile("u5"), "not a hash")

    def lane() -> Lane | Channel:
        return Channel(redis_url) if kind == "replies" else Lane()

    with pytest.raises(Exception) as raised:  # noqa: PT011 - Bytewax wraps the sink's error
        run_main(_flow(redis_url, lane()), epoch_interval=timedelta(0), recovery_config=rc)
    assert any(isinstance(e, redis.ResponseError) for e in _causes(raised.value))  # the WRONGTYPE reply
    assert all(r.hget(K.profile(u), "event_count") == b"1" for u in USERS[:5])
    r.delete(K.profile("u5"))
    run_main(_flow(redis_url, lane()), epoch_interval=timedelta(0), recovery_config=rc)
    assert _counts(r) == dict.fromkeys(USERS, b"1")


def test_collect_reads_what_has_arrived_without_waiting(redis_url: str, r: redis.Redis) -> None:
    """``collect`` (called at every source poll) accounts for the batches whose replies are in
    and leaves the rest pending; nothing is read before Redis answered."""
    ch = Channel(redis_url, depth=100)
    prof = RedisProfileSink(redis_url, K, retry_for=0.1).build("p", 0, 1)
    ch.write(prof, [_update("u0", 1, 1)])
    for u in USERS[1:]:
        ch.write(prof, [_update(u, 1, 1)])
    for _ in range(400):  # the replies arrive while nobody waits for them
        ch.collect()
        if not len(ch):
            break
        time.sleep(0.005)
    assert len(ch) == 0
    r.execute_command("CLIENT", "PAUSE", 300, "WRITE")  # Redis holds the next write unanswered
    ch.write(prof, [_update("u0", 2, 2)])
    ch.collect()
    assert len(ch) == 1
    ch.drain()
    assert r.hget(K.profile("u0"), "event_count") == b"2"
