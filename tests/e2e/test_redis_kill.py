"""Durable buffer: SIGKILL redis-server mid-stream and restart it from its AOF.

While it is down the collector answers 503 with Retry-After (never 200 for an
event it could not append); clients that retry lose nothing; the dataflow
reconnects by itself and catches up; every profile equals the truth.
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
from tests.procs import base_env, start_collector, start_dataflow
from tests.redis_server import RedisServer


def test_redis_sigkill_loses_no_acknowledged_event(tmp_path: Path) -> None:
    gen = generate(GenConfig(users=250, seed=13, end_ms=int(time.time() * 1000) - 3_600_000, days=10, duplicate_rate=0.02, invalid_rate=0.01))
    srv = RedisServer(tmp_path / "redis", appendonly=True).start()
    env = base_env(srv.url)
    coll, url = start_collector(env, tmp_path)
    df = start_dataflow(env, tmp_path, recovery=init_recovery(tmp_path / "rec", 1))
    statuses: list[int] = []
    retry_after: set[str] = set()
    done = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=url, auth=("test-key", ""), timeout=10) as c:
            for i in range(0, len(gen.events), 100):
                body = gzip.compress(orjson.dumps({"batch": gen.events[i : i + 100]}))
                while True:
                    try:
                        resp = c.post("/v1/batch", content=body, headers={"Content-Encoding": "gzip"})
                    except httpx.HTTPError:
                        time.sleep(0.2)
                        continue
                    statuses.append(resp.status_code)
                    if resp.status_code == 200:
                        break
                    assert resp.status_code in (429, 503), resp.text
                    retry_after.add(resp.headers.get("retry-after", ""))
                    time.sleep(0.2)
                time.sleep(0.01)
        done.set()

    t = threading.Thread(target=client)
    try:
        t.start()
        time.sleep(1.5)
        srv.kill()  # SIGKILL: whatever Redis acknowledged is in the AOF
        time.sleep(2.0)
        srv.start()
        t.join(180)
        assert done.is_set()
        assert 503 in statuses and retry_after == {"5"}
        r = redis.Redis.from_url(srv.url)
        wait_caught_up(r, timeout=180)
        mism = wait_truth(r, gen.truth, timeout=60)
        assert not mism, (len(mism), mism[:10], df.output())
        got = {d["message_id"] for d in dead_letters(r)}
        assert {i["messageId"] for i in gen.invalid} <= got
    finally:
        done.set()
        df.interrupt()
        coll.stop()
        srv.stop()
