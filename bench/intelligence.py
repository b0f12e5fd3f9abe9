"""Throughput cost of the behavioural intelligence, as a ratio against the core path.

    .venv/bin/python bench/intelligence.py [--users 5000] [--repeat 2]

Loads one generated stream into a private Redis, then alternates runs of the
dataflow with ``LIVEPROFILE_INTELLIGENCE=off`` (core path: parse, validate,
dedupe, counters, cart, email, profile writes) and ``on`` (plus identity,
sessions, interest, cart abandonment, RFM population and rescoring,
HalfSpaceTrees and propensity models), each over the whole stream from a
clean profile state. Startup (imports, Bytewax spin-up) is measured with an
empty buffer for each mode and subtracted, so the figures are processing
throughput. Prints events/s of both and the ratio (goal: >= 0.5).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import load_buffer, run_dataflow  # noqa: E402
from liveprofile.devtools.generate import GenConfig, generate  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def clear_outputs(client: redis.Redis) -> None:
    """Delete everything but the buffer streams (a fresh profile state, same input)."""
    keep = {k for k in client.scan_iter("lp:events:*")}
    for k in client.scan_iter("*"):
        if k not in keep:
            client.delete(k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        srv = RedisServer(Path(d)).start()
        try:
            empty = RedisServer(Path(d) / "empty").start()
            startup = {m: run_dataflow(empty.url, args.shards, False, LIVEPROFILE_INTELLIGENCE=m) for m in ("off", "on")}
            empty.stop()
            gen = generate(GenConfig(users=args.users, seed=3, end_ms=int(time.time() * 1000) - 60_000, days=30, duplicate_rate=0.02, bots=max(1, args.users // 200)))
            n = load_buffer(srv.url, gen.events, args.shards)
            client = redis.Redis.from_url(srv.url)
            rates: dict[str, list[float]] = {"off": [], "on": []}
            for _ in range(args.repeat):
                for mode in ("off", "on"):
                    clear_outputs(client)
                    t = run_dataflow(srv.url, args.shards, False, LIVEPROFILE_INTELLIGENCE=mode)
                    rates[mode].append(n / max(t - startup[mode], 1e-3))
            core, full = statistics.median(rates["off"]), statistics.median(rates["on"])
            print(f"events                      {n}")
            print(f"startup (s)                 core {startup['off']:.2f}  full {startup['on']:.2f}")
            print(f"core path                   {core:10.0f} ev/s  runs {[round(x) for x in rates['off']]}")
            print(f"with intelligence           {full:10.0f} ev/s  runs {[round(x) for x in rates['on']]}")
            print(f"ratio full / core           {full / core:10.2f}")
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
