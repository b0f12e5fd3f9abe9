"""Two versions side by side in one run: a base revision against the working tree.

    .venv/bin/python bench/compare.py BASE_REV [--head REV] [--rounds 3] [--users 5000]

Checks out ``BASE_REV`` (and ``--head``, default: the working tree as it is) in temporary git
worktrees and runs the same benchmarks from each tree,
alternating base and head in every round (so the machine's drift hits both alike), then prints
each figure's median per version and the ratio head / base. Each run is its own process started
from its tree's root, so it imports that tree's code (checked: the run prints the path of the
``dataflows`` package it loaded).

Figures: the dataflow's throughput until every profile holds its events (``pipeline.py``, startup
included and without), its state per user (``memory.py``: heap and pickled bytes), and freshness
through the collector with the flow running as deployed (``freshness.py``: p50/p99 at 1k and
3k events/s offered), and the cost of computed traits and audiences (``audiences.py``, one
with/without pair per round: the ratio, startup included and without).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: (name, script, args, [(figure, regex with one number group, higher is better)])
BENCHES = [
    ("pipeline", "pipeline.py", ["--stop-at-end", "--naive-sample", "2000"], [
        ("dataflow ev/s", r"liveprofile dataflow\s+([\d.]+) ev/s", True),
        ("dataflow ev/s without startup", r"ev/s  \(startup [\d.]+s included; ([\d.]+) ev/s without\)", True),
    ]),
    ("memory", "memory.py", [], [
        ("state heap B/user", r"state objects \(heap\)\s+([\d.]+) B/user", False),
        ("snapshot B/user", r"snapshot \(pickled\)\s+([\d.]+) B/user", False),
    ]),
    ("audiences", "audiences.py", ["--rounds", "1"], [
        ("20 traits + 10 audiences / none", r"ratio with / without\s+([\d.]+)", True),
        ("  the same without startup", r"ratio with / without\s+[\d.]+\s+\(([\d.]+) without startup", True),
    ]),
    ("freshness", "freshness.py", ["--rates", "1000,3000", "--seconds", "8"], [
        ("p50 ms at 1k/s", r"^\s*1000\s+\d+\s+([\d.]+)\s", False),
        ("p99 ms at 1k/s", r"^\s*1000\s+\d+\s+[\d.]+\s+([\d.]+)\s", False),
        ("p50 ms at 3k/s", r"^\s*3000\s+\d+\s+([\d.]+)\s", False),
        ("p99 ms at 3k/s", r"^\s*3000\s+\d+\s+[\d.]+\s+([\d.]+)\s", False),
    ]),
]


def run(tree: Path, script: str, args: list[str]) -> str:
    out = subprocess.run([sys.executable, str(tree / "bench" / script), *args], cwd=tree, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{tree.name} {script} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out.stdout


def loaded_from(tree: Path) -> str:
    out = subprocess.run([sys.executable, "-c", "import dataflows, operators; print(dataflows.__path__[0])"], cwd=tree,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", help="the base revision (e.g. HEAD~1 or a commit id)")
    ap.add_argument("--head", default="", help="a revision to measure instead of the working tree")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--users", type=int, default=5000, help="users of the pipeline stream (memory uses 2x)")
    ap.add_argument("--only", default="", help="comma-separated bench names (pipeline,memory,audiences,freshness)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-base-") as d:
        base = Path(d) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), a.base], check=True)
        head = ROOT
        if a.head:
            head = Path(d) / "head"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(head), a.head], check=True)
        try:
            trees = {"base": base, "head": head}
            for name, tree in trees.items():
                where = loaded_from(tree)
                assert Path(where).resolve().is_relative_to(tree.resolve()), (name, where)
                print(f"{name}: {a.base if name == 'base' else (a.head or 'working tree')} ({where})", flush=True)
            benches = [b for b in BENCHES if not a.only or b[0] in a.only.split(",")]
            got: dict[tuple[str, str], list[float]] = {}
            for rnd in range(a.rounds):
                for name, script, args, figures in benches:
                    sized = [*args, "--users", str(a.users if name in ("pipeline", "audiences") else 2 * a.users)] if name != "freshness" else args
                    for ver in (("base", "head") if rnd % 2 == 0 else ("head", "base")):
                        text = run(trees[ver], script, sized)
                        for fig, rx, _ in figures:
                            m = re.search(rx, text, re.M)
                            if m is None:
                                raise RuntimeError(f"{ver} {script}: no {fig!r} in its output:\n{text}")
                            got.setdefault((fig, ver), []).append(float(m.group(1)))
                    print(f"round {rnd + 1}: {name} done", flush=True)
            print(f"\n{'figure':34} {'base':>10} {'head':>10} {'head/base':>10}   (medians of {a.rounds} alternating rounds)")
            for _, _, _, figures in benches:
                for fig, _, higher in figures:
                    b, h = statistics.median(got[(fig, "base")]), statistics.median(got[(fig, "head")])
                    better = "better" if (h > b) == higher else "worse"
                    prec = 3 if abs(b) < 10 else 1  # ratios need their decimals
                    print(f"{fig:34} {b:10.{prec}f} {h:10.{prec}f} {h / b:10.3f}   ({'higher' if higher else 'lower'} is better: head {better})")
        finally:
            for tree in {base, head} - {ROOT}:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
