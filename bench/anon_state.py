"""The per-user step's cost of anonymous profiles: events/s and state per anonymous visitor.

    .venv/bin/python bench/anon_state.py [--users 3000] [--rounds 3]

The anonymous-heavy stream of ``bench/identity_dedupe.py`` (seed 8: each user's events before
their first order are anonymous-only, the first order carries both ids) goes through the identity
step and then the per-user step, one item per call in stream order, each merge export folded
into its user at once (as the buffer would bring it back). Prints the user step's events per CPU second, the
pickled state per anonymous profile still anonymous at the end (the visitors who never bought),
the pickled merge exports' mean size, and the profile totals (a checksum to compare trees by).
Run from a tree's root to measure that tree's code (``bench/compare.py``-style: copy it into
another checkout to compare, alternating).
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.identity_dedupe import stream  # noqa: E402
from operators.dedupe import DedupeConfig  # noqa: E402
from operators.events import Event  # noqa: E402
from operators.identity import anonymous_key, is_anon, route_once  # noqa: E402
from operators.user import MergeExport, MergeIn, UserConfig, UserState, step  # noqa: E402


def routed(evs: list[Event]) -> list[tuple[str, object]]:
    """The items the identity step sends on, with their user keys."""
    cfg = DedupeConfig()
    st: dict = {}
    out: list[tuple[str, object]] = []
    for ev in evs:
        k = anonymous_key(ev)
        s, items, _ = route_once(cfg, st.get(k), ev)
        st[k] = s
        out.extend(items)
    return out


def run(items: list[tuple[str, object]]) -> tuple[float, dict, list[int]]:
    cfg = UserConfig()
    states: dict = {}
    exports: list[int] = []
    t = time.process_time()  # CPU time: less sensitive to a machine shared with other runs
    queue = list(reversed(items))
    while queue:
        uid, it = queue.pop()
        st, outs, _ = step(cfg, states.get(uid), uid, [it])  # type: ignore[list-item]
        if st is None:
            states.pop(uid, None)
        else:
            states[uid] = st
        for o in outs:
            if type(o) is MergeExport:
                exports.append(len(o.state))
                queue.append((o.to_uid, MergeIn(o.merge_id, o.from_uid, o.ts, o.state)))
    return time.process_time() - t, states, exports


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    items = routed(stream(a.users))
    n_events = sum(type(it) is Event for _, it in items)
    rates = []
    for _ in range(a.rounds):
        secs, states, exports = run(items)
        rates.append(n_events / secs)
    anon = [s for uid, s in states.items() if is_anon(uid) and isinstance(s, UserState)]
    anon_b = sum(len(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL)) for s in anon) / max(len(anon), 1)
    known = [s for uid, s in states.items() if not is_anon(uid) and isinstance(s, UserState)]
    known_b = sum(len(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL)) for s in known) / max(len(known), 1)
    total = sum(s.profile.event_count for s in known)
    print(f"user step {sorted(rates)[len(rates) // 2]:10.0f} ev/s over {n_events} events ({len(items)} items), where: {Path(__file__).resolve().parent.parent}")
    print(f"anonymous state {anon_b:8.0f} B/visitor (pickled; {len(anon)} still anonymous)   known state {known_b:8.0f} B/user ({len(known)})")
    print(f"merge exports {sum(exports) / max(len(exports), 1):8.0f} B each ({len(exports)})   known users' event_count total {total}")


if __name__ == "__main__":
    main()
