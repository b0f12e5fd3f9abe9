"""Dataflow throughput against a naive per-event consumer, measured in the same run.

    .venv/bin/python bench/pipeline.py [--users 20000] [--events-per-user ~] [--naive-sample 20000]

1. Generates a realistic stream and loads it into the Redis buffer (a private
   redis-server on a free port).
2. **Naive consumer** (the baseline): reads entries one by one, ``json.loads``,
   ``SET NX`` per messageId for dedupe, ``HINCRBY``/``HINCRBYFLOAT`` per event,
   no pipelining — what a hand-written consumer typically does. Measured on a
   sample of ``--naive-sample`` entries (it is slow), in its own Redis DB.
3. **Bare Python ceiling**: XREAD pages + orjson + per-page coalesced,
   pipelined HSET — what any consumer costs before it validates or computes
   anything.
4. **liveprofile dataflow**: ``python -m bytewax.run
   "dataflows.profiles:get_flow(stop_at_end=True)"`` over the whole stream, one
   worker, full intelligence; events/s from process start to exit (startup
   included: a lower bound), and with the startup measured on an empty buffer
   subtracted.

Prints the rates and the ratios. Absolute numbers vary with the machine; the
ratios are what to compare across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from liveprofile.admin.history import replay_lines  # noqa: E402
from liveprofile.devtools.generate import GenConfig, generate  # noqa: E402
from liveprofile.settings import Settings  # noqa: E402
from liveprofile.store.keys import Keys  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def load_buffer(url: str, events: list[dict], shards: int) -> int:
    import orjson

    s = Settings.from_env({"LIVEPROFILE_REDIS_URL": url, "LIVEPROFILE_SHARDS": str(shards), "LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z"})
    client = redis.Redis.from_url(url)
    stats = replay_lines(s, client, ((i, orjson.dumps(e)) for i, e in enumerate(events)), source="bench", batch=2000)
    client.close()
    return stats["accepted"]


def naive_consumer(src_url: str, dst_url: str, keys: Keys, shards: int, limit: int) -> tuple[int, float]:
    """Per-event consumer: json.loads, SET NX dedupe, HINCRBY per event, no pipelining."""
    src = redis.Redis.from_url(src_url)
    dst = redis.Redis.from_url(dst_url)
    n = 0
    t0 = time.perf_counter()
    for shard in range(shards):
        last = "0-0"
        while n < limit:
            resp = src.xread({keys.events(shard): last}, count=1)
            if not resp:
                break
            eid, fields = resp[0][1][0]
            last = eid
            ev = json.loads(fields[b"e"])
            n += 1
            if not dst.set(f"seen:{ev.get('messageId')}", 1, nx=True, ex=86400):
                continue
            uid = ev.get("userId") or ev.get("anonymousId")
            key = f"naive:profile:{uid}"
            dst.hincrby(key, "event_count", 1)
            dst.hset(key, "last_seen_at", ev.get("timestamp") or ev["receivedAt"])
            if ev.get("event") == "Order Completed":
                props = ev.get("properties") or {}
                dst.hincrby(key, "purchase_count", 1)
                dst.hincrbyfloat(key, "revenue_total", float(props.get("revenue") or props.get("total") or 0))
        if n >= limit:
            break
    return n, time.perf_counter() - t0


def ceiling_consumer(url: str, keys: Keys, shards: int) -> tuple[int, float]:
    """The bare Python ceiling: XREAD pages of 1,000 + orjson + per-page coalesced,
    pipelined HSET of a few counters per user — no validation, no logic."""
    import orjson

    r = redis.Redis.from_url(url)
    n = 0
    t0 = time.perf_counter()
    for shard in range(shards):
        last = "0-0"
        while True:
            resp = r.xread({keys.events(shard): last}, count=1000)
            if not resp:
                break
            entries = resp[0][1]
            last = entries[-1][0]
            latest: dict[str, dict[str, object]] = {}
            for _, f in entries:
                ev = orjson.loads(f[b"e"])
                uid = ev.get("userId") or ev.get("anonymousId")
                p = latest.setdefault(uid, {"event_count": 0})
                p["event_count"] = int(p["event_count"]) + 1  # type: ignore[call-overload]
                p["last_seen_at"] = ev.get("timestamp") or ev["receivedAt"]
            pipe = r.pipeline(transaction=False)
            for uid, fields in latest.items():
                pipe.hset(f"ceiling:profile:{uid}", mapping=fields)  # type: ignore[arg-type]
            pipe.execute()
            n += len(entries)
    return n, time.perf_counter() - t0


def run_dataflow(url: str, shards: int, recovery: bool, **env_extra: str) -> float:
    """Run the dataflow over the buffer until it is drained; wall seconds, startup included."""
    env = {**os.environ, "LIVEPROFILE_REDIS_URL": url, "LIVEPROFILE_SHARDS": str(shards),
           "LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z", **env_extra}  # fmt: skip
    args = [sys.executable, "-m", "bytewax.run", "dataflows.profiles:get_flow(stop_at_end=True)"]
    tmp = None
    if recovery:
        tmp = tempfile.mkdtemp(prefix="bench-rec-")
        subprocess.run([sys.executable, "-m", "bytewax.recovery", tmp, "1"], check=True)
        args += ["-r", tmp, "-s", "5", "-b", "0"]
    t0 = time.perf_counter()
    subprocess.run(args, check=True, env=env, cwd=ROOT)
    return time.perf_counter() - t0


def measure(users: int, shards: int = 4, naive_sample: int = 20000, days: float = 30) -> dict[str, float]:
    """All rates (events/s) measured in one run over one generated stream."""
    with tempfile.TemporaryDirectory() as d:
        srv = RedisServer(Path(d)).start()
        empty = RedisServer(Path(d) / "empty").start()
        try:
            startup = run_dataflow(empty.url, shards, False)
            gen = generate(GenConfig(users=users, seed=1, end_ms=int(time.time() * 1000) - 60_000, days=days, duplicate_rate=0.02))
            n = load_buffer(srv.url, gen.events, shards)
            keys = Keys("lp")
            dst = srv.url.rsplit("/", 1)[0] + "/1"
            nn, nt = naive_consumer(srv.url, dst, keys, shards, naive_sample)
            cn, ct = ceiling_consumer(srv.url, keys, shards)
            dt = run_dataflow(srv.url, shards, False)
            return {
                "events": n, "naive": nn / nt, "ceiling": cn / ct, "dataflow": n / dt,
                "dataflow_steady": n / max(dt - startup, 1e-3), "startup_s": startup,
            }  # fmt: skip
        finally:
            srv.stop()
            empty.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--days", type=float, default=30)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--naive-sample", type=int, default=20000)
    args = ap.parse_args()
    m = measure(args.users, args.shards, args.naive_sample, args.days)
    print(f"events in buffer                 {m['events']:.0f}")
    print(f"naive consumer                   {m['naive']:10.0f} ev/s")
    print(f"bare Python ceiling              {m['ceiling']:10.0f} ev/s")
    print(f"liveprofile dataflow             {m['dataflow']:10.0f} ev/s  (startup {m['startup_s']:.1f}s included; {m['dataflow_steady']:.0f} ev/s without)")
    print(f"ratio dataflow / naive           {m['dataflow'] / m['naive']:10.1f}x  ({m['dataflow_steady'] / m['naive']:.1f}x without startup)")
    print(f"ratio dataflow / ceiling         {m['dataflow'] / m['ceiling']:10.2f}   ({m['dataflow_steady'] / m['ceiling']:.2f} without startup)")


if __name__ == "__main__":
    main()
