"""The per-user step's CPU cost and the state's pickling cost, of two trees side by side.

    .venv/bin/python bench/state_cost.py [--users 2000] [--rounds 4] [--base DIR]

One run measures the tree it is started from (``--tree``, default: this file's): the per-user step
over ``bench/memory.py``'s generated stream (known users, ~60 events each; CPU seconds, one event
per call in stream order) and over ``bench/anon_state.py``'s anonymous-heavy one (its visitors
keep the :class:`~operators.user.MergeLog`); then every final state pickled (what a snapshot
stores) and unpickled (what a resume or a merge reads): µs per state and bytes per state.

With ``--base DIR`` (another checkout, e.g. ``git archive BASE | tar -x -C DIR``) it runs this
script once per tree per round as separate processes (each imports only its tree's code),
alternating the order by round, and prints the medians and the ratio head / base.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

FIGURES = ("known step us/ev", "anon step us/ev", "known pickle us", "known unpickle us", "anon pickle us", "anon unpickle us",
           "known B/state", "anon B/state")  # fmt: skip


def _pickling(states: list) -> tuple[float, float, float]:
    """(µs to pickle one state, µs to unpickle one, bytes per state): the best of 3 passes."""
    best_d = best_l = float("inf")
    raws: list[bytes] = []
    for _ in range(3):
        t = time.process_time()
        raws = [pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL) for s in states]
        best_d = min(best_d, time.process_time() - t)
        t = time.process_time()
        for r in raws:
            pickle.loads(r)
        best_l = min(best_l, time.process_time() - t)
    n = max(len(states), 1)
    return best_d / n * 1e6, best_l / n * 1e6, sum(map(len, raws)) / n


def measure(users: int) -> dict[str, float]:
    """This tree's figures (the tree is already first on ``sys.path``)."""
    from bench.anon_state import routed, run
    from bench.identity_dedupe import stream
    from liveprofile.devtools.generate import GenConfig, generate
    from operators.events import Event, Limits, parse_event
    from operators.identity import is_anon
    from operators.user import UserConfig, UserState, step

    gen = generate(GenConfig(users=users, seed=8, end_ms=1_764_000_000_000, days=30))
    lim = Limits(timestamp_min_ms=0)
    parsed = [e for e in (parse_event(dict(ev, receivedAt=ev["timestamp"]), lim) for ev in gen.events) if isinstance(e, Event)]
    cfg = UserConfig()
    states: dict = {}
    t = time.process_time()
    for ev in parsed:
        states[ev.uid], _, _ = step(cfg, states.get(ev.uid), ev.uid, [ev])
    known_step = (time.process_time() - t) / len(parsed) * 1e6
    known = [s for s in states.values() if isinstance(s, UserState)]
    items = routed(stream(users))
    secs, st, _ = run(items)
    anon_step = secs / sum(type(it) is Event for _, it in items) * 1e6
    anon = [s for uid, s in st.items() if is_anon(uid) and isinstance(s, UserState)]
    kd, kl, kb = _pickling(known)
    ad, al, ab = _pickling(anon)
    return dict(zip(FIGURES, (known_step, anon_step, kd, kl, ad, al, kb, ab), strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--tree", default=str(HERE))
    ap.add_argument("--base", default="")
    a = ap.parse_args()
    if not a.base:
        sys.path.insert(0, a.tree)
        import operators

        assert Path(operators.__file__).resolve().is_relative_to(Path(a.tree).resolve()), operators.__file__
        for k, v in measure(a.users).items():
            print(f"{k:20s} {v:10.2f}")
        return
    trees = {"base": Path(a.base).resolve(), "head": HERE}
    got: dict[tuple[str, str], list[float]] = {}
    for rnd in range(a.rounds):
        for ver in ("base", "head") if rnd % 2 == 0 else ("head", "base"):
            out = subprocess.run([sys.executable, __file__, "--users", str(a.users), "--tree", str(trees[ver])], cwd=trees[ver],
                                 capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": ""}).stdout  # fmt: skip
            for fig in FIGURES:
                m = re.search(rf"^{re.escape(fig)}\s+([\d.]+)$", out, re.M)
                assert m is not None, (fig, out)
                got.setdefault((fig, ver), []).append(float(m.group(1)))
        print(f"round {rnd + 1} done ({os.getloadavg()[0]:.2f} load)", flush=True)
    print(f"\n{'figure':20s} {'base':>10s} {'head':>10s} {'head/base':>10s}   (medians of {a.rounds} alternating rounds, {a.users} users)")
    for fig in FIGURES:
        b, h = statistics.median(got[(fig, "base")]), statistics.median(got[(fig, "head")])
        print(f"{fig:20s} {b:10.2f} {h:10.2f} {h / b:10.3f}")


if __name__ == "__main__":
    main()
