"""Soak-fuzz the collector over real HTTP: the long variant of tests/collector/test_fuzz.py.

    .venv/bin/python bench/fuzz_collector.py [--seconds 600] [--round 2000] [--max-rss-growth-mb 150]

Starts a private redis-server and a collector (with pixel and webhook secrets and
IP truncation on), then runs rounds of ``--round`` Hypothesis-drawn hostile
requests (tests/collector/hostile.py: every endpoint, malformed/truncated/deep/
huge/invalid-UTF-8 JSON, gzip bombs, wrong types at every field, forged and
replayed signatures, ...) until ``--seconds`` have passed. Every answer is
checked against the contract (no 5xx, a JSON reason on every 4xx, nothing kept
on refusals, every event buffered or dead-lettered, the pixel always a GIF).
After each round it prints the count so far and the collector's RSS from
/proc/PID/status; it fails (exit 1) on a contract violation, a crash, a
Traceback in the collector's log, or RSS growth beyond the bound.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.collector import hostile  # noqa: E402
from tests.collector.hostile import Checker, Req, rss_kb  # noqa: E402
from tests.procs import base_env, start_collector  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--round", type=int, default=2000, help="requests per Hypothesis run")
    ap.add_argument("--max-rss-growth-mb", type=float, default=150.0)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lp-fuzz-"))
    srv = RedisServer(tmp / "redis").start()
    proc, url = start_collector(base_env(srv.url, **hostile.SECRET_ENV), tmp)
    checker = Checker(url, srv.url)
    rss0, _ = rss_kb(proc.p.pid)
    t0 = time.monotonic()
    status = 0
    try:
        rounds = 0
        while time.monotonic() - t0 < a.seconds:

            @settings(max_examples=a.round, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(hostile.requests)
            def run(req: Req) -> None:
                checker.check(req)

            run()
            rounds += 1
            rss, hwm = rss_kb(proc.p.pid)
            print(f"round {rounds}: {checker.sent} requests in {time.monotonic() - t0:.0f} s; "
                  f"RSS {rss // 1024} MB (start {rss0 // 1024}, peak {hwm // 1024})", flush=True)  # fmt: skip
            if not proc.alive():
                print(f"FAIL: the collector died:\n{proc.output()}")
                return 1
            if (rss - rss0) / 1024 > a.max_rss_growth_mb:
                print(f"FAIL: RSS grew by {(rss - rss0) // 1024} MB")
                status = 1
                break
        assert httpx.get(url + "/healthz", timeout=5).status_code == 200
        log = proc.log.read_text(errors="replace")
        if "Traceback" in log:
            print(f"FAIL: Traceback in the collector's log:\n{log[-5000:]}")
            status = 1
        print(checker.summary())
        print("OK" if status == 0 else "FAILED")
    except AssertionError as exc:
        print(f"FAIL: contract violation after {checker.sent} requests: {exc}")
        status = 1
    finally:
        checker.close()
        proc.stop()
        srv.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
