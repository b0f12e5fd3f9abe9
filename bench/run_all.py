"""The performance suite: every benchmark, one after the other, one report.

    .venv/bin/python bench/run_all.py [--quick]

Runs, each as its own process (so none disturbs another's measurement):

=====================  =========================================================
``pipeline.py``        dataflow vs naive consumer and vs the bare Python ceiling
``intelligence.py``    full pipeline vs the core path
``freshness.py``       receipt -> profile p50/p99 at 1k / 5k / 10k events/s offered
``collector.py``       collector requests/s and events/s vs the buffer's ceiling
``api.py``             profile-read latency at 1,000 req/s over 100k profiles
``sync.py``            ESP sync throughput vs one request per change
``memory.py``          dataflow state per user
``computed_state.py``  computed-trait state bytes per user per trait, observe cost
``evaluate.py``        detection and interest quality (not speed)
``abuse.py``           abuse detection (crawlers, card testing, identity bombs)
=====================  =========================================================

Each prints ratios against a baseline measured in the same run; machines here
are noisy, so compare ratios, not absolute figures, across runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FULL = [
    ("pipeline.py", ["--users", "5000"]),
    ("intelligence.py", ["--users", "5000", "--repeat", "2"]),
    ("freshness.py", ["--rates", "1000,5000,10000", "--seconds", "20"]),
    ("collector.py", ["--seconds", "10"]),
    ("api.py", ["--profiles", "100000", "--rate", "1000", "--duration", "20", "--framework", "plain"]),
    ("sync.py", ["--changes", "50000"]),
    ("memory.py", ["--users", "12000"]),
    ("computed_state.py", ["--users", "3000"]),
    ("evaluate.py", ["--users", "2000", "--bots", "40"]),
    ("abuse.py", ["--users", "400", "--per-kind", "25"]),
]
QUICK = [
    ("pipeline.py", ["--users", "1000", "--naive-sample", "5000"]),
    ("intelligence.py", ["--users", "1000", "--repeat", "1"]),
    ("freshness.py", ["--rates", "1000,3000", "--seconds", "8"]),
    ("collector.py", ["--seconds", "4"]),
    ("api.py", ["--profiles", "20000", "--rate", "500", "--duration", "5", "--framework", "plain"]),
    ("sync.py", ["--changes", "10000", "--naive-sample", "1000"]),
    ("memory.py", ["--users", "3000"]),
    ("computed_state.py", ["--users", "500"]),
    ("evaluate.py", ["--users", "600", "--bots", "12"]),
    ("abuse.py", ["--users", "200", "--per-kind", "15", "--days", "7", "--seeds", "11"]),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not figures to quote)")
    args = ap.parse_args()
    failed = 0
    for script, argv in QUICK if args.quick else FULL:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, str(ROOT / "bench" / script), *argv], cwd=ROOT, capture_output=True, text=True, check=False)
        print(f"\n== {script} {' '.join(argv)}  ({time.perf_counter() - t0:.0f} s)")
        lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
        print("\n".join(lines[-14:]) if lines else "(no output)")
        if out.returncode != 0:
            failed += 1
            print(f"FAILED ({out.returncode}): {out.stderr[-1500:]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
