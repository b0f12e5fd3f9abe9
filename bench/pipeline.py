"""Dataflow throughput against a naive per-event consumer, measured in the same run.

    .venv/bin/python bench/pipeline.py [--users 20000] [--events-per-user ~] [--naive-sample 20000]

1. Generates a realistic stream and loads it into the Redis buffer (a private
   redis-server on a free port).
2. **Naive consumer** (the baseline): reads entries one by one, ``json.loads``,
   ``SET NX`` per messageId for dedupe, ``HINCRBY``/``HINCRBYFLOAT`` per event,
   no pipelining — what a hand-written consumer typically does. Measured on a
   sample of ``--naive-sample`` entries (it is slow), in its own Redis DB.
3. **liveprofile dataflow**: ``python -m bytewax.run
   "dataflows.profiles:get_flow(stop_at_end=True)"`` over the whole stream, one
   worker; events/s from process start to exit (startup included, so it is a
   lower bound).

Prints both rates and their ratio. Absolute numbers vary with the machine;
the ratio is what to compare across runs.
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

from liveprofile.generate import GenConfig, generate  # noqa: E402
from liveprofile.keys import Keys  # noqa: E402
from liveprofile.replay import replay_lines  # noqa: E402
from liveprofile.settings import Settings  # noqa: E402
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--days", type=float, default=30)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--naive-sample", type=int, default=20000)
    ap.add_argument("--recovery", action="store_true", help="also time the dataflow with recovery on (-s 5)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as d:
        srv = RedisServer(Path(d)).start()
        try:
            gen = generate(GenConfig(users=args.users, seed=1, end_ms=int(time.time() * 1000) - 60_000, days=args.days, duplicate_rate=0.02))
            n = load_buffer(srv.url, gen.events, args.shards)
            keys = Keys("lp")
            dst = srv.url.rsplit("/", 1)[0] + "/1"
            nn, nt = naive_consumer(srv.url, dst, keys, args.shards, args.naive_sample)
            naive_rate = nn / nt
            dt = run_dataflow(srv.url, args.shards, recovery=False)
            df_rate = n / dt
            print(f"events in buffer          {n}")
            print(f"naive consumer            {naive_rate:10.0f} ev/s  ({nn} events in {nt:.2f}s)")
            print(f"liveprofile dataflow      {df_rate:10.0f} ev/s  ({n} events in {dt:.2f}s, startup included)")
            print(f"ratio dataflow / naive    {df_rate / naive_rate:10.1f}x")
            if args.recovery:
                redis.Redis.from_url(srv.url).flushdb()
                load_buffer(srv.url, gen.events, args.shards)
                rt = run_dataflow(srv.url, args.shards, recovery=True)
                print(f"dataflow with recovery    {n / rt:10.0f} ev/s  ratio vs naive {n / rt / naive_rate:.1f}x")
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
