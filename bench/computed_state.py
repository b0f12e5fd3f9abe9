"""Computed-trait state cost: pickled bytes per user per trait, and observe time per event.

    .venv/bin/python bench/computed_state.py [--users 3000]

On a generated stream (30 days, the real parser), every user's
:class:`operators.computed.ComputedState` under a 20-trait definitions file (every kind, windows
from 24h to 90d and all time, with and without ``where``) is built with ``observe``; it prints the
pickled size per user and per user per trait (what a snapshot stores), and the time ``observe``
takes per event against ``parse_event``'s per event in the same run (the baseline).
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from liveprofile.devtools.generate import GenConfig, generate  # noqa: E402
from operators.computed import ComputedState  # noqa: E402
from operators.definitions import load_definitions  # noqa: E402
from operators.events import Event, Limits, parse_event  # noqa: E402

TRAITS = [
    ("views_24h", "count", "Product Viewed", None, None, "24h"),
    ("views_7d", "count", "Product Viewed", None, None, "7d"),
    ("shoe_views_7d", "count", "Product Viewed", 'properties.category == "shoes"', None, "7d"),
    ("views_all", "count", "Product Viewed", None, None, "all"),
    ("orders_7d", "count", "Order Completed", None, None, "7d"),
    ("orders_all", "count", "Order Completed", None, None, "all"),
    ("spend_90d", "sum", "Order Completed", None, "properties.revenue", "90d"),
    ("spend_all", "sum", "Order Completed", None, "properties.revenue", "all"),
    ("avg_order_30d", "avg", "Order Completed", None, "properties.revenue", "30d"),
    ("min_price_7d", "min", "Product Viewed", None, "properties.price", "7d"),
    ("max_order_all", "max", "Order Completed", None, "properties.revenue", "all"),
    ("top_category_30d", "most_frequent", "Product Viewed", None, "properties.category", "30d"),
    ("top_category_all", "most_frequent", "Product Viewed", None, "properties.category", "all"),
    ("first_category", "first", "Product Viewed", None, "properties.category", "all"),
    ("last_product_7d", "last", "Product Viewed", None, "properties.product_id", "7d"),
    ("categories_30d", "unique_list", "Product Viewed", None, "properties.category", "30d"),
    ("categories_all", "unique_list", "Product Viewed", None, "properties.category", "all"),
    ("products_7d", "unique_count", "Product Viewed", None, "properties.product_id", "7d"),
    ("carts_48h", "count", "Product Added", None, None, "48h"),
    ("pages_24h", "count", "page", None, None, "24h"),
]


def definitions_text() -> str:
    lines = ["version: 1", "computed_traits:"]
    for name, kind, event, where, value, window in TRAITS:
        lines += [f"  - name: {name}", f"    kind: {kind}", f"    event: {event}", f"    window: {window}"]
        if where:
            lines.append(f"    where: '{where}'")
        if value:
            lines.append(f"    value: {value}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=3000)
    args = ap.parse_args()
    end = 1_790_000_000_000
    gen = generate(GenConfig(users=args.users, seed=14, end_ms=end, days=30))
    lim = Limits(timestamp_min_ms=0)
    t0 = time.perf_counter()
    parsed = [e for e in (parse_event(dict(ev, receivedAt=ev["timestamp"]), lim) for ev in gen.events) if isinstance(e, Event)]
    parse_s = time.perf_counter() - t0
    defs = load_definitions(definitions_text(), "bench")
    states: dict[str, ComputedState] = {}
    t0 = time.perf_counter()
    for ev in parsed:
        s = states.get(ev.uid)
        if s is None:
            s = states[ev.uid] = ComputedState()
        s.observe(defs, ev)
    observe_s = time.perf_counter() - t0
    n, k = len(states), len(defs.computed_traits)
    pickled = sum(len(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL)) for s in states.values())
    empty = len(pickle.dumps(ComputedState(), protocol=pickle.HIGHEST_PROTOCOL))
    print(f"users                       {n}  ({len(parsed) / n:.0f} events each), {k} computed traits")
    print(f"snapshot (pickled)          {pickled / n:8.0f} B/user   ({empty} B for an empty state)")
    print(f"per user per trait          {pickled / n / k:8.1f} B")
    print(f"observe                     {observe_s / len(parsed) * 1e6:8.2f} us/event (all {k} traits)")
    print(f"parse_event (baseline)      {parse_s / len(parsed) * 1e6:8.2f} us/event")
    print(f"observe / parse             {observe_s / parse_s:8.2f}")


if __name__ == "__main__":
    main()
