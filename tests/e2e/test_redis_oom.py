"""The dataflow survives a Redis that refuses writes: ``OOM`` (maxmemory reached) and
``READONLY`` (the server became a replica).

Real processes against a real redis-server: the events are in the buffer, then Redis gets a
``maxmemory`` just above what it holds and the dataflow starts. Its sinks meet ``OOM``: they
wait and retry (the process stays up, ``liveprofile_dataflow_redis_writes_blocked{reason="oom"}``
is 1); the memory is raised and the server made a read-only replica at once: the sinks wait
again (``reason="readonly"``); it is made a primary again and the dataflow catches up by
itself, every profile equal to the generator's truth (nothing lost, nothing doubled).
"""

from __future__ import annotations

import time
from pathlib import Path

import redis

from liveprofile.devtools.generate import GenConfig, generate
from tests.e2e.helpers import assert_nothing_lost, post_batches, wait_caught_up
from tests.procs import base_env, dataflow_series, start_collector, start_dataflow, wait_for
from tests.redis_server import RedisServer

END_MS = int(time.time() * 1000) - 3_600_000


def _blocked(df: object, reason: str) -> float:
    got = dataflow_series([df], "liveprofile_dataflow_redis_writes_blocked") or {}  # type: ignore[list-item]
    return got.get(f'reason="{reason}"', 0.0)


def test_dataflow_waits_out_oom_and_readonly_and_loses_nothing(tmp_path: Path) -> None:
    gen = generate(GenConfig(users=60, seed=21, end_ms=END_MS, days=3, duplicate_rate=0.02, invalid_rate=0.01))
    srv = RedisServer(tmp_path / "redis").start()
    r = redis.Redis.from_url(srv.url)
    env = base_env(srv.url)
    coll, url = start_collector(env, tmp_path)
    df = None
    try:
        post_batches(url, gen.events)
        coll.stop()
        r.config_set("maxmemory", int(r.info("memory")["used_memory"]) + 30_000)
        df = start_dataflow(env, tmp_path, api=True)
        wait_for(lambda: _blocked(df, "oom") == 1, 90, 0.1, "the sinks to wait for memory")
        assert df.alive(), df.output()
        r.execute_command("REPLICAOF", "127.0.0.1", "1")  # read-only, and memory no longer the limit
        r.config_set("maxmemory", 0)
        wait_for(lambda: _blocked(df, "readonly") == 1, 60, 0.1, "the sinks to wait for a primary")
        assert _blocked(df, "oom") == 0 and df.alive(), df.output()
        r.execute_command("REPLICAOF", "NO", "ONE")
        wait_caught_up(r, timeout=120)
        assert_nothing_lost(r, gen, df.output, timeout=90)
        wait_for(lambda: _blocked(df, "readonly") == 0, 30, 0.1, "the blocked gauge to clear")
        assert df.alive() and "Redis refuses writes" in df.output()
    finally:
        if df is not None:
            df.interrupt()
        coll.stop()
        r.close()
        srv.stop()
