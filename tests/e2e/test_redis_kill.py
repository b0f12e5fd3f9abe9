"""Durable buffer: SIGKILL redis-server mid-stream and restart it from its AOF.

While it is down the collector answers 503 with Retry-After (never 200 for an
event it could not append); clients that retry lose nothing; the dataflow
reconnects by itself (the same process, which logged the outage: its sinks and source
retry with back-off) and catches up; every profile equals the truth.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis

from liveprofile.devtools.generate import GenConfig, generate
from tests.e2e.chaos import init_recovery
from tests.e2e.helpers import (
    OutageClient,
    assert_nothing_lost,
    wait_caught_up,
)
from tests.procs import (
    base_env,
    dataflow_reads,
    start_collector,
    start_dataflow,
    wait_for,
)
from tests.redis_server import RedisServer

#: Wall-relative on purpose: the events go through the collector, whose default plausibility
#: bounds are relative to receipt time (LIVEPROFILE_MAX_EVENT_AGE, LIVEPROFILE_MAX_FUTURE_SKEW).
END_MS = int(time.time() * 1000) - 3_600_000
BATCH = 100


def test_redis_sigkill_loses_no_acknowledged_event(tmp_path: Path) -> None:
    gen = generate(GenConfig(users=250, seed=13, end_ms=END_MS, days=10, duplicate_rate=0.02, invalid_rate=0.01))
    batches = [gen.events[i : i + BATCH] for i in range(0, len(gen.events), BATCH)]
    srv = RedisServer(tmp_path / "redis", appendonly=True).start()
    env = base_env(srv.url)
    coll, url = start_collector(env, tmp_path)
    df = start_dataflow(env, tmp_path, recovery=init_recovery(tmp_path / "rec", 1), api=True)
    client = OutageClient(url, batches, what="the Redis outage", timeout=10, retry_connection_errors=True)
    try:
        wait_for(lambda: bool(dataflow_reads([df])), 60, 0.05, "the dataflow's source to start")
        client.start()
        # mid-stream: the dataflow has read acknowledged events, and half of them are unsent
        wait_for(lambda: client.acked > 0 and sum((dataflow_reads([df]) or {}).values()) > 0, 60, 0.02, "acknowledged events read")
        srv.kill()  # SIGKILL: whatever Redis acknowledged is in the AOF
        at_kill = client.acked
        client.gate.set()
        assert 0 < at_kill <= len(batches) // 2 < len(batches)
        # the outage is seen on both sides before Redis comes back: 503s and the source's read errors
        wait_for(lambda: 503 in client.statuses or bool(client.failure), 60, 0.05, "a 503 from the collector")
        wait_for(lambda: "Redis unreachable" in df.output(), 60, 0.05, "the dataflow to meet the outage")
        srv.start()
        client.join(180)
        assert client.retry_after == {"5"}
        assert df.alive(), df.output()  # it reconnected by itself: never restarted
        r = redis.Redis.from_url(srv.url)
        wait_caught_up(r, timeout=180)
        assert_nothing_lost(r, gen, df.output, timeout=60)
    finally:
        client.release()
        df.interrupt()
        coll.stop()
        srv.stop()
