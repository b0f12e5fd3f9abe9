"""Overlapped sinks (:mod:`dataflows.sinks.overlap`): writes in order, and an epoch is committed
only after its writes succeeded, so a write that failed is written after the restart."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
import redis
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main

from dataflows.build import output
from dataflows.sinks import RedisProfileSink
from dataflows.sinks.deferred import Channel
from dataflows.sinks.overlap import Lane, OverlappedSink
from dataflows.sources.streams import RedisStreamSource
from liveprofile.store.keys import Keys
from operators.user import ProfileUpdate

K = Keys("lp")
USERS = [f"u{i}" for i in range(10)]


def test_lane_runs_in_order_and_stops_at_a_failure() -> None:
    lane = Lane(depth=2)
    done: list[int] = []
    for i in range(5):
        lane.submit(lambda i=i: done.append(i))
    lane.drain()
    assert done == [0, 1, 2, 3, 4]

    def fail() -> None:
        raise ValueError("refused")

    lane.submit(fail)
    with pytest.raises(ValueError, match="refused"):
        lane.drain()
    with pytest.raises(ValueError, match="refused"):  # and it stays failed: the next submit raises too
        lane.submit(lambda: done.append(99))
    assert 99 not in done


def _causes(exc: BaseException | None) -> list[BaseException]:
    out = []
    while exc is not None:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _buffer_flow(redis_url: str, kind: str) -> Dataflow:
    """The buffer source (pages of one entry, each next one read ahead: from a thread, or sent
    ahead) into the overlapped sink (threaded lane, or deferred replies)."""
    flow = Dataflow("overlap_buffer")
    threads = kind == "threads"
    src = RedisStreamSource(redis_url, [K.events(0)], count=1, stop_at_end=True, read_ahead=threads, send_ahead=not threads)
    lane = Lane() if threads else Channel(redis_url)
    s = op.input("inp", flow, src)

    def update(item: tuple[int, bytes, bytes]) -> tuple[str, ProfileUpdate]:
        u = item[2].decode()
        return (u, ProfileUpdate(u, 1, {"user_id": u, "event_count": "1"}, 0, None))

    output("profile_out", op.map("update", s, update), OverlappedSink(RedisProfileSink(redis_url, K, retry_for=0.1), lane))
    return flow


@pytest.mark.parametrize("kind", ["threads", "replies"])
def test_the_source_reading_ahead_commits_its_position_only_after_the_writes(kind: str, redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    """An epoch with a failed write is not committed (tests/dataflows/test_deferred.py) with
    the Redis buffer source, which reads its next page while the sinks write: the position
    committed with an epoch is never past a write that failed, and every entry is read once the
    key is fixed (an empty page read ahead is read again). Fails if the snapshot does not wait
    for the writes (u5 is never written)."""
    for u in USERS:
        r.xadd(K.events(0), {"e": u})
    init_db_dir(tmp_path, 1)
    rc = RecoveryConfig(str(tmp_path))
    r.set(K.profile("u5"), "not a hash")
    with pytest.raises(Exception) as raised:  # noqa: PT011 - Bytewax wraps the sink's error
        run_main(_buffer_flow(redis_url, kind), epoch_interval=timedelta(0), recovery_config=rc)
    assert any(isinstance(e, redis.ResponseError) for e in _causes(raised.value))
    r.delete(K.profile("u5"))
    run_main(_buffer_flow(redis_url, kind), epoch_interval=timedelta(0), recovery_config=rc)
    assert {u: r.hget(K.profile(u), "event_count") for u in USERS} == dict.fromkeys(USERS, b"1")
