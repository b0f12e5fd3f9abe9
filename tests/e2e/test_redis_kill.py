"""Durable buffer: SIGKILL redis-server mid-stream and restart it from its AOF.

While it is down the collector answers 503 with Retry-After (never 200 for an
event it could not append); clients that retry lose nothing; the dataflow
reconnects by itself (the same process, which logged the outage: its sinks and source
retry with back-off) and catches up; every profile equals the truth.
"""

from __future__ import annotations

import gzip
import threading
import time
from pathlib import Path

import httpx
import orjson
import redis

from liveprofile.generate import GenConfig, generate
from tests.e2e.chaos import init_recovery
from tests.e2e.helpers import dead_letters, wait_caught_up, wait_truth
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
    statuses: list[int] = []
    retry_after: set[str] = set()
    acked = 0
    killed = threading.Event()  # the second half is sent only once Redis is down
    done = threading.Event()
    failure: list[BaseException] = []

    def client() -> None:
        nonlocal acked
        try:
            with httpx.Client(base_url=url, auth=("test-key", ""), timeout=10) as c:
                for i, batch in enumerate(batches):
                    if i == len(batches) // 2:
                        assert killed.wait(120), "Redis was never killed"
                    body = gzip.compress(orjson.dumps({"batch": batch}))
                    while True:
                        try:
                            resp = c.post("/v1/batch", content=body, headers={"Content-Encoding": "gzip"})
                        except httpx.HTTPError:
                            time.sleep(0.2)  # a client's retry pause, not synchronisation
                            continue
                        statuses.append(resp.status_code)
                        if resp.status_code == 200:
                            acked += 1
                            break
                        assert resp.status_code in (429, 503), resp.text
                        retry_after.add(resp.headers.get("retry-after", ""))
                        time.sleep(0.2)  # shorter than Retry-After, to keep the test quick
            done.set()
        except BaseException as exc:  # surfaced by the main thread
            failure.append(exc)

    t = threading.Thread(target=client, daemon=True)
    try:
        wait_for(lambda: bool(dataflow_reads([df])), 60, 0.05, "the dataflow's source to start")
        t.start()
        # mid-stream: the dataflow has read acknowledged events, and half of them are unsent
        wait_for(lambda: acked > 0 and sum((dataflow_reads([df]) or {}).values()) > 0, 60, 0.02, "acknowledged events read")
        srv.kill()  # SIGKILL: whatever Redis acknowledged is in the AOF
        at_kill = acked
        killed.set()
        assert 0 < at_kill <= len(batches) // 2 < len(batches)
        # the outage is seen on both sides before Redis comes back: 503s and the source's read errors
        wait_for(lambda: 503 in statuses or bool(failure), 60, 0.05, "a 503 from the collector")
        wait_for(lambda: "Redis unreachable" in df.output(), 60, 0.05, "the dataflow to meet the outage")
        srv.start()
        t.join(180)
        assert not failure, failure
        assert done.is_set()
        assert retry_after == {"5"}
        assert df.alive(), df.output()  # it reconnected by itself: never restarted
        r = redis.Redis.from_url(srv.url)
        wait_caught_up(r, timeout=180)
        mism = wait_truth(r, gen.truth, timeout=60)
        assert not mism, (len(mism), mism[:10], df.output())
        got = {d["message_id"] for d in dead_letters(r)}
        assert {i["messageId"] for i in gen.invalid} <= got
    finally:
        killed.set()
        done.set()
        df.interrupt()
        coll.stop()
        srv.stop()
