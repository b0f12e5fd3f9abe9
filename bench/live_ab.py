"""The deployed flow of two source trees, alternately, on the same saved buffer, in one run.

    .venv/bin/python bench/live_ab.py --base /work/wt/base [--users 5000] [--rounds 3]

``--base`` is another worktree (e.g. ``git worktree add --detach ../base main``); both trees'
flows run with this interpreter (``python -m bytewax.run dataflows.profiles:flow -r DIR -s 2
-b 10``, 1 worker, as deployed), each on a fresh copy of one generated buffer, in the order
base, this, this, base, base, ... (alternating, so drift in the machine's load hits both alike),
timed as :func:`bench.pipeline.run_live` times them (first profile write -> the write
completing the last user, from the change feed's ids).

Per run and as medians it prints events/s, the flow's CPU seconds (all its threads) per wall
second, and where the worker thread's wall time went, from its ``schedstat`` over the timed span: **on CPU** (running), **runqueue** (runnable but
waiting for a core: other processes' load, not the flow's doing) and **blocked** (the rest:
waiting on sockets, fsync, sleeps). Then the ratio this / base of the medians, and the load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pipeline import ROOT, Live, load, prepare, run_live  # noqa: E402


def describe(lv: Live) -> str:
    """One run's figures on one line."""
    wall = max(lv.poll_wall_s, 1e-9)
    blocked = wall - lv.on_cpu_s - lv.runqueue_s
    return (f"{lv.rate:7.0f} ev/s in {lv.seconds:5.1f} s; CPU/wall {lv.flow_cpu_s / wall:.2f}; on CPU {lv.on_cpu_s / wall:5.1%}, "
            f"runqueue {lv.runqueue_s / wall:5.1%}, blocked {blocked / wall:5.1%}; {lv.flow_cpu_s / lv.events * 1e6:.1f} µs flow CPU/event; "
            f"over-counted {lv.over}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="the baseline source tree (a worktree)")
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--sessions-mean", type=float, default=3.4)
    ap.add_argument("--days", type=float, default=30,
                    help="event-time span of the stream (e.g. 0.01 with --users 50000 --sessions-mean 1: each user's events spread over many epochs, as live traffic is)")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="runs of each tree")
    args = ap.parse_args()
    trees = {"base": args.base.resolve(), "this": ROOT}
    runs: dict[str, list[Live]] = {"base": [], "this": []}
    print(f"base {trees['base']}  this {ROOT}  (load {load()})", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-live-ab-") as d:
        srv, gen, n, rdb = prepare(args.users, args.shards, args.days, Path(d), args.sessions_mean)
        srv.stop()
        expected = {u: int(t["event_count"]) for u, t in gen.truth.items()}
        order = [name for i in range(args.rounds) for name in (("base", "this") if i % 2 == 0 else ("this", "base"))]
        for i, name in enumerate(order):
            lv = run_live(rdb, "1w", expected, n, args.shards, Path(d) / f"{name}-{i}", tree=trees[name])
            runs[name].append(lv)
            print(f"run {i + 1:2}: {name:4} {describe(lv)}  (load {load()})", flush=True)
    print(f"\n{n} events, {len(expected)} users; medians of {args.rounds} runs each (load {load()})")
    med = {}
    for name, lvs in runs.items():
        med[name] = statistics.median(lv.rate for lv in lvs)
        on = statistics.median(lv.on_cpu_s / lv.poll_wall_s for lv in lvs)
        rq = statistics.median(lv.runqueue_s / lv.poll_wall_s for lv in lvs)
        bl = statistics.median(1 - (lv.on_cpu_s + lv.runqueue_s) / lv.poll_wall_s for lv in lvs)
        util = statistics.median(lv.flow_cpu_s / lv.poll_wall_s for lv in lvs)
        cpu = statistics.median(lv.flow_cpu_s / lv.events * 1e6 for lv in lvs)
        print(f"{name:4} {med[name]:7.0f} ev/s  CPU/wall {util:.2f}  on CPU {on:5.1%}  runqueue {rq:5.1%}  blocked {bl:5.1%}  "
              f"{cpu:.1f} µs flow CPU/event")  # fmt: skip
    print(f"ratio this / base  {med['this'] / med['base']:.3f}")


if __name__ == "__main__":
    main()
