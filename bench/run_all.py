"""The performance suite: every benchmark, one after the other, one report.

    .venv/bin/python bench/run_all.py [--quick]
    .venv/bin/python bench/run_all.py --issue15 [--quick]     # issue 15's done-when figures

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

``--issue15`` runs only what issue 15's "done when" asks for, in one run, and ends with those
lines, the commit (``git rev-parse --short HEAD``, ``+dirty`` when the tree has changes) and the
machine's load before and after:

* ``pipeline.py --users 5000 --sessions-mean 3.4`` (~215k buffered events, the issue's scale):
  the live flow as deployed vs the bare page consumer and the naive page-reading consumer, and
  ``-w 2`` and 2 processes against 1 worker, rotated over 2 rounds;
* ``parse.py`` (parse + validate µs/event) when the tree has it, else a note;
* ``memory.py --users 12000``: state bytes per user (heap, pickled, RSS slope);
* ``freshness.py --rates 1000,5000,10000 --seconds 30``, each rate drained before it is read.

``--issue15 --quick`` is the same at smoke-test sizes (not figures to quote).
"""

from __future__ import annotations

import argparse
import os
import re
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


ISSUE15 = [
    ("pipeline.py", ["--users", "5000", "--sessions-mean", "3.4", "--rounds", "2"]),
    ("parse.py", ["--users", "1000"]),
    ("memory.py", ["--users", "12000"]),
    ("freshness.py", ["--rates", "1000,5000,10000", "--seconds", "30"]),
]
ISSUE15_QUICK = [
    ("pipeline.py", ["--users", "120", "--rounds", "1"]),
    ("parse.py", ["--users", "100", "--rounds", "2"]),
    ("memory.py", ["--users", "400"]),
    ("freshness.py", ["--rates", "1000", "--seconds", "3", "--drain-timeout", "30"]),
]

#: issue 15's done-when lines: (label, script, regex with one group over its output)
DONE_WHEN = [
    ("live flow, 1 worker (ev/s)", "pipeline.py", r"^live flow, 1 worker\s+(\d+) ev/s"),
    ("bare page consumer (ev/s)", "pipeline.py", r"^bare page consumer\s+(\d+) ev/s"),
    ("naive page-reading consumer (ev/s)", "pipeline.py", r"^naive consumer \(pages of 500\)\s+(\d+) ev/s"),
    ("pipeline / bare (goal >= 0.25)", "pipeline.py", r"^ratio pipeline / bare\s+([\d.]+)"),
    ("pipeline / naive (goal >= 10)", "pipeline.py", r"^ratio pipeline / naive\s+([\d.]+)"),
    ("flow CPU, Redis CPU, Redis commands per event (1 worker)", "pipeline.py", r"^live flow, 1 worker.*\((?:startup [\d.]+ s not counted; )?(flow CPU .*)\)$"),
    ("-w 2 / 1 worker", "pipeline.py", r"^ratio -w 2 / 1 worker\s+([\d.]+)"),
    ("2 processes / 1 worker", "pipeline.py", r"^ratio 2 processes / 1 worker\s+([\d.]+)"),
    ("parse + validate, good entries (µs/event, new parse)", "parse.py", r"^\s+new \(parse_event\)\s+(best\s+[\d.]+ µs/event.*)$"),
    ("parse new/old (good entries)", "parse.py", r"^\s+(ratio new/old: .*)$"),
    ("parse new == old on every entry", "parse.py", r"^new == old on every entry: (.*)$"),
    ("parse + validate, SDK-shaped entries (with sentAt)", "parse.py", r"^\s+new \(parse_event, SDK-shaped\)\s+(best\s+[\d.]+ µs/event.*)$"),
    ("state heap (B/user)", "memory.py", r"^state objects \(heap\)\s+(\d+) B/user"),
    ("state pickled (B/user)", "memory.py", r"^snapshot \(pickled\)\s+(\d+) B/user"),
    ("dataflow RSS slope (B/identity)", "memory.py", r"^dataflow peak RSS.*:\s+(\d+) B/id"),
    ("idle user's packed state, heap (B/user)", "memory.py", r"^idle user, packed \(heap\)\s+(\d+ B/user.*)$"),
    ("resumed dataflow RSS slope, packed idle (B/identity)", "memory.py", r"^resumed, packed idle: RSS.*:\s+(\d+ B/id.*)$"),
    ("freshness at 1k ev/s (offered achieved p50 p99 refused backlog drain)", "freshness.py", r"^\s+(1000\s.*)$"),
    ("freshness at 5k ev/s", "freshness.py", r"^\s+(5000\s.*)$"),
    ("freshness at 10k ev/s", "freshness.py", r"^\s+(10000\s.*)$"),
]


def load() -> str:
    """The machine's load average, 1/5/15 min."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def commit() -> str:
    """``git rev-parse --short HEAD`` of this tree, ``+dirty`` when it has uncommitted changes."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
    return (head or "unknown") + ("+dirty" if dirty else "")


def done_when(outputs: dict[str, str]) -> list[str]:
    """Issue 15's done-when lines from the scripts' ``outputs`` (script -> stdout)."""
    lines = []
    for label, script, rx in DONE_WHEN:
        if script not in outputs:
            lines.append(f"{label:58} (not run: {script} is not in this tree)")
            continue
        m = re.search(rx, outputs[script], re.M)
        got = (m.group(1) if m.groups() else m.group(0)).strip() if m else f"(not found in {script}'s output)"
        lines.append(f"{label:58} {got}")
    return lines


def run_one(script: str, argv: list[str], tail: int) -> tuple[str, bool]:
    """Run bench/``script`` as its own process, print its last ``tail`` lines; (stdout, ok)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script), *argv], cwd=ROOT, capture_output=True, text=True, check=False)
    print(f"\n== {script} {' '.join(argv)}  ({time.perf_counter() - t0:.0f} s, load after {load()})", flush=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    print("\n".join(lines[-tail:]) if lines else "(no output)", flush=True)
    if out.returncode != 0:
        print(f"FAILED ({out.returncode}): {out.stderr[-1500:]}", flush=True)
    return out.stdout, out.returncode == 0


def issue15(quick: bool) -> int:
    """Issue 15's figures in one run, then its done-when lines; 1 if a script failed."""
    rev, load0 = commit(), load()
    print(f"issue 15 run of {rev}{' (--quick: smoke sizes, not figures to quote)' if quick else ''}; load at start {load0}", flush=True)
    outputs: dict[str, str] = {}
    failed = 0
    for script, argv in ISSUE15_QUICK if quick else ISSUE15:
        if not (ROOT / "bench" / script).exists():
            print(f"\n== {script}: not in this tree (another helper writes it); skipped", flush=True)
            continue
        out, ok = run_one(script, argv, 40)
        outputs[script] = out
        failed += not ok
    print(f"\n== issue 15, done when  (commit {rev}; load at start {load0}, at end {load()}; 2 cores shared)")
    print("\n".join(done_when(outputs)))
    return 1 if failed else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not figures to quote)")
    ap.add_argument("--issue15", action="store_true", help="only issue 15's done-when figures, then those lines")
    args = ap.parse_args()
    if args.issue15:
        return issue15(args.quick)
    failed = 0
    for script, argv in QUICK if args.quick else FULL:
        _, ok = run_one(script, argv, 14)
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
