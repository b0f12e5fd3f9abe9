"""``bench/run_all.py --issue15 --quick`` runs end to end and prints issue 15's done-when lines.

A smoke test of the benchmark harness (real redis-server, real dataflow processes, real
collector over loopback): it checks that every figure is produced and that the live flow's
profiles reached the generator's counts without over-counting; it asserts no timing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_issue15_quick_prints_every_done_when_figure() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "run_all.py"), "--issue15", "--quick"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "WARNING: users over-counted" not in out.stdout
    head, _, done = out.stdout.partition("== issue 15, done when")
    assert done, out.stdout[-3000:]
    assert re.search(r"commit [0-9a-f]{4,}", done)
    for label, number in [
        ("live flow, 1 worker (ev/s)", r"\d+"),
        ("bare page consumer (ev/s)", r"\d+"),
        ("naive page-reading consumer (ev/s)", r"\d+"),
        ("pipeline / bare (goal >= 0.25)", r"[\d.]+"),
        ("pipeline / naive (goal >= 10)", r"[\d.]+"),
        ("-w 2 / 1 worker", r"[\d.]+"),
        ("2 processes / 1 worker", r"[\d.]+"),
        ("state pickled (B/user)", r"\d+"),
        ("freshness at 1k ev/s", r"1000\s+\d+\s+[\d.]+\s+[\d.]+"),
    ]:
        assert re.search(rf"^{re.escape(label)}.*?\s{number}", done, re.M), (label, done)
    # the live flow was timed on the change feed (the per-variant lines of every round)
    assert len(re.findall(r"^round 1: (1w|w2|2p) ", head, re.M)) == 3, head
