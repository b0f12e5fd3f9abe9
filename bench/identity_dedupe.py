"""The identity stage's cost of routing each anonymous-only event once (the exactly-once fix).

    .venv/bin/python bench/identity_dedupe.py [--users 5000]

The generated stream (seed 8) has no anonymous traffic, so the pipeline benchmark does not pass
through the identity stage. Here each user's events before their first order are made
anonymous-only (``anonymousId`` ``a-<user>``), the first order carries both ids, and the events
go through the identity step alone: the link-only :func:`operators.identity.route` (the layout
before, nothing kept while unlinked) against :func:`operators.identity.route_once` (the link plus
the routed messageIds), alternating, in one process. Prints events/s and the pickled state per
user of each, and the ratio.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from liveprofile.devtools.generate import GenConfig, generate  # noqa: E402
from operators.dedupe import DedupeConfig  # noqa: E402
from operators.events import Event, Limits, parse_event  # noqa: E402
from operators.identity import anonymous_key, route, route_once  # noqa: E402


def stream(users: int) -> list[Event]:
    """The anonymous-heavy variant of the generated stream: events that reach the identity step."""
    gen = generate(GenConfig(users=users, seed=8, end_ms=1_764_000_000_000, days=30))
    lim = Limits(timestamp_min_ms=0)
    bought: set[str] = set()
    out: list[Event] = []
    for raw0 in sorted(gen.events, key=lambda e: e["timestamp"]):
        raw = dict(raw0, receivedAt=raw0["timestamp"])
        u = raw["userId"]
        if u not in bought:
            raw["anonymousId"] = "a-" + u
            if raw.get("event") == "Order Completed":
                bought.add(u)
            else:
                del raw["userId"]
        ev = parse_event(raw, lim)
        if isinstance(ev, Event) and anonymous_key(ev) is not None:
            out.append(ev)
    return out


def link_only(evs: list[Event]) -> dict:
    st: dict = {}
    for ev in evs:
        k = anonymous_key(ev)
        linked, _ = route(st.get(k), ev)
        if linked is not None:
            st[k] = linked
    return st


def once(evs: list[Event]) -> dict:
    cfg = DedupeConfig()
    st: dict = {}
    for ev in evs:
        k = anonymous_key(ev)
        s, _, _ = route_once(cfg, st.get(k), ev)
        if s is None:
            st.pop(k, None)
        else:
            st[k] = s
    return st


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    evs = stream(a.users)
    print(f"events through the identity step {len(evs)}, anonymous-only {sum(e.user_id is None for e in evs)}, users {a.users}")
    rates: dict[str, list[float]] = {"link only": [], "route once": []}
    size: dict[str, float] = {}
    for _ in range(a.rounds):
        for name, f in (("link only", link_only), ("route once", once)):
            t = time.perf_counter()
            st = f(evs)
            rates[name].append(len(evs) / (time.perf_counter() - t))
            size[name] = sum(len(pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL)) for v in st.values()) / a.users
    med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    for name in rates:
        print(f"{name:11} {med[name]:10.0f} ev/s  identity state {size[name]:6.0f} B/user (pickled)")
    print(f"route once / link only: {med['route once'] / med['link only']:.3f} of the throughput, +{size['route once'] - size['link only']:.0f} B/user")


if __name__ == "__main__":
    main()
