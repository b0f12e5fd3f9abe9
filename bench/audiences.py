"""Cost of computed traits and audiences: 20 traits + 10 audiences against none, in one run.

    .venv/bin/python bench/audiences.py [--users 3000] [--rounds 3] [--days 30]

* **Throughput** until every profile holds its events: the real dataflow process
  (``dataflows.profiles:get_flow(stop_at_end=True)``, as ``bench/pipeline.py`` runs it) over the
  same generated stream in a fresh Redis each time, once without ``LIVEPROFILE_DEFINITIONS`` and
  once with a 20-trait / 10-audience file, **alternating** in every round (the machine's drift
  hits both alike). Prints each run, the medians and the ratio with / without (issue 14 wants
  >= 0.7), startup included and without (each variant's startup measured on an empty buffer).
* **State**: every user's :class:`operators.user.UserState` built by the real step function with
  and without the definitions; pickled bytes per user (what a snapshot stores) and the
  difference per user per trait.

``--baseline DIR``: also run both variants with another source tree's flow (a worktree of main,
set up with its own ``.venv``: ``git worktree add --detach ../base main && ./dev.sh setup``),
alternated with this tree's in every round; prints that tree's ratio too and this / baseline per
variant (the same stream, the same machine drift).

``--profile FILE``: instead, run the flow once with the definitions (``--without``: without) *in this process* under
cProfile (``bytewax.testing.run_main``, the same flow and stream), write the stats to ``FILE`` and
print the top entries (by own time and cumulative) — where the time of the 'with' runs goes.

The 20 traits are ``bench/computed_state.py``'s (every kind, windows 24h..90d and all time, with
and without ``where``); the 10 audiences read them with and/or/not/in, ``audience.x``,
``traits.x`` and profile fields.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.computed_state import TRAITS, definitions_text  # noqa: E402
from bench.pipeline import load_buffer  # noqa: E402
from liveprofile.devtools.generate import GenConfig, generate  # noqa: E402
from operators.definitions import load_definitions  # noqa: E402
from operators.events import Event, Limits, parse_event  # noqa: E402
from operators.user import UserConfig, step  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

AUDIENCES = [
    ("shoe_browsers_no_order", "computed.shoe_views_7d >= 3 and computed.orders_7d == 0"),
    ("big_spenders", "computed.spend_90d > 500"),
    ("repeat_buyers", "computed.orders_all >= 2"),
    ("browsers", "computed.views_7d >= 5 or computed.pages_24h >= 3"),
    ("window_shoppers", "audience.browsers and not audience.repeat_buyers"),
    ("shoe_fans", 'computed.top_category_30d in ["shoes", "sneakers"]'),
    ("many_categories", "computed.products_7d >= 4"),
    ("cart_holders", "cart_value > 50 and computed.orders_7d == 0"),
    ("pro_plan", 'traits.plan == "pro" or traits.plan == "enterprise"'),
    ("vip", "audience.big_spenders and (audience.repeat_buyers or computed.max_order_all > 200)"),
]
assert len(TRAITS) == 20 and len(AUDIENCES) == 10


def file_text() -> str:
    lines = [definitions_text().rstrip("\n"), "audiences:"]
    for name, when in AUDIENCES:
        lines += [f"  - name: {name}", f"    when: '{when}'"]
    return "\n".join(lines) + "\n"


def run_dataflow(url: str, shards: int, definitions: Path | None, pure: bool = False, tree: Path | None = None) -> float:
    """Wall seconds of one run over the buffer until it is drained (startup included);
    ``pure``: with the pure-Python operators (``LIVEPROFILE_PURE=1``), else as installed;
    ``tree``: another source tree's flow, run with its own ``.venv`` (``None``: this one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEPROFILE_")}
    env.update({"LIVEPROFILE_REDIS_URL": url, "LIVEPROFILE_SHARDS": str(shards), "LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z"})
    if pure:
        env["LIVEPROFILE_PURE"] = "1"
    if definitions is not None:
        env["LIVEPROFILE_DEFINITIONS"] = str(definitions)
    t0 = time.perf_counter()
    py = sys.executable if tree is None else str(tree / ".venv" / "bin" / "python")
    subprocess.run([py, "-m", "bytewax.run", "dataflows.profiles:get_flow(stop_at_end=True)"], check=True, env=env, cwd=tree or ROOT)
    return time.perf_counter() - t0


def check_loaded(url: str, definitions: Path) -> None:
    """The 'with' runs must really compute: a profile carries ``computed`` afterwards."""
    import redis

    r = redis.Redis.from_url(url)
    try:
        for key in r.scan_iter("lp:profile:*", count=1000):
            if r.hexists(key, "computed"):
                return
        msg = f"no profile carries `computed` after a run with {definitions}: is the dataflow loading definitions?"
        raise SystemExit(msg)
    finally:
        r.close()


def state_sizes(events: list[dict], defs_text: str) -> tuple[float, float, int]:
    """(pickled bytes per user without, with the definitions, users)."""
    lim = Limits(timestamp_min_ms=0)
    parsed = [e for e in (parse_event(dict(ev, receivedAt=ev["timestamp"]), lim) for ev in events) if isinstance(e, Event)]
    out = []
    for cfg in (UserConfig(), UserConfig(definitions=load_definitions(defs_text))):
        states: dict[str, object] = {}
        for ev in parsed:
            st, _, _ = step(cfg, states.get(ev.uid), ev.uid, [ev])  # type: ignore[arg-type]
            states[ev.uid] = st
        out.append(sum(len(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL)) for s in states.values()) / len(states))
    return out[0], out[1], len(states)


def profile_flow(url: str, shards: int, definitions: Path | None, out: str) -> None:
    """One run of the flow in this process under cProfile (``definitions`` ``None``: the 'without'
    variant); the stats go to ``out``."""
    import cProfile
    import pstats

    for k in [k for k in os.environ if k.startswith("LIVEPROFILE_")]:
        del os.environ[k]
    os.environ.update({"LIVEPROFILE_REDIS_URL": url, "LIVEPROFILE_SHARDS": str(shards), "LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z"})
    if definitions is not None:
        os.environ["LIVEPROFILE_DEFINITIONS"] = str(definitions)
    from bytewax.testing import run_main

    from dataflows.profiles import get_flow

    flow = get_flow(stop_at_end=True)
    prof = cProfile.Profile()
    prof.enable()
    run_main(flow)
    prof.disable()
    prof.dump_stats(out)
    if definitions is not None:
        check_loaded(url, definitions)
    stats = pstats.Stats(out)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--days", type=float, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--profile", metavar="FILE", default="", help="cProfile one 'with' run in-process instead; stats to FILE")
    ap.add_argument("--without", action="store_true", help="with --profile: profile the 'without' variant")
    ap.add_argument("--baseline", metavar="DIR", type=Path, default=None,
                    help="also run both variants with this source tree (its own .venv), alternated with this tree's")
    ap.add_argument("--pure-too", action="store_true",
                    help="also run both variants with the pure-Python operators (LIVEPROFILE_PURE=1), alternated with the installed (compiled) ones")
    args = ap.parse_args()
    import operators

    print(f"operators: {operators.mode()}", flush=True)
    gen = generate(GenConfig(users=args.users, seed=1, end_ms=int(time.time() * 1000) - 60_000, days=args.days, duplicate_rate=0.02))
    text = file_text()
    load_definitions(text)
    modes = [""] + ([" pure"] if args.pure_too else []) + ([" base"] if args.baseline is not None else [])
    names = [f"{v}{sfx}" for sfx in modes for v in ("without", "with")]
    base = args.baseline.resolve() if args.baseline is not None else None
    if base is not None:
        print(f"baseline tree: {base}", flush=True)
    runs: dict[str, list[float]] = {k: [] for k in names}
    startup: dict[str, float] = {}
    loads: list[str] = []
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "definitions.yaml"
        path.write_text(text)
        if args.profile:
            srv = RedisServer(Path(d) / "profile").start()
            try:
                load_buffer(srv.url, gen.events, args.shards)
                profile_flow(srv.url, args.shards, None if args.without else path, args.profile)
            finally:
                srv.stop()
            return
        empty = RedisServer(Path(d) / "empty").start()
        try:
            for name in names:
                startup[name] = run_dataflow(empty.url, args.shards, path if name.split()[0] == "with" else None, name.endswith(" pure"),
                                             base if name.endswith(" base") else None)  # fmt: skip
        finally:
            empty.stop()
        n = 0
        for rnd in range(args.rounds):
            order = names if rnd % 2 == 0 else names[::-1]  # alternating: the machine's drift hits all alike
            for name in order:
                defs = path if name.split()[0] == "with" else None
                srv = RedisServer(Path(d) / f"r{rnd}-{name.replace(' ', '-')}").start()
                try:
                    n = load_buffer(srv.url, gen.events, args.shards)
                    dt = run_dataflow(srv.url, args.shards, defs, name.endswith(" pure"), base if name.endswith(" base") else None)
                    if defs is not None:
                        check_loaded(srv.url, defs)
                finally:
                    srv.stop()
                runs[name].append(dt)
                load = " ".join(f"{x:.2f}" for x in os.getloadavg())
                loads.append(load)
                print(f"round {rnd} {name:13s} {n / dt:9.0f} ev/s  ({dt:.1f}s, {n} events)  load {load}", flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    rate = {k: n / v for k, v in med.items()}
    steady = {k: n / max(v - startup[k], 1e-3) for k, v in med.items()}
    print(f"events in buffer                 {n}")
    labels = {"": "installed" if len(modes) > 1 else "", " pure": "pure", " base": "baseline"}
    for sfx, label in [(m, labels[m]) for m in modes]:
        tag = f" ({label})" if label else ""
        w, wo = "with" + sfx, "without" + sfx
        print(f"without definitions{tag:14s}{rate[wo]:10.0f} ev/s  ({steady[wo]:.0f} ev/s without startup {startup[wo]:.1f}s)")
        print(f"20 traits + 10 audiences{tag:9s}{rate[w]:10.0f} ev/s  ({steady[w]:.0f} ev/s without startup {startup[w]:.1f}s)")
        print(f"ratio with / without{tag:13s}{rate[w] / rate[wo]:10.2f}   ({steady[w] / steady[wo]:.2f} without startup; issue 14 wants >= 0.7)")
    if args.pure_too:
        for v in ("without", "with"):
            print(f"installed / pure, {v:15s}{rate[v] / rate[v + ' pure']:10.2f}   ({steady[v] / steady[v + ' pure']:.2f} without startup)")
    if base is not None:
        for v in ("without", "with"):
            print(f"this / baseline, {v:16s}{rate[v] / rate[v + ' base']:10.2f}   ({steady[v] / steady[v + ' base']:.2f} without startup)")
    print(f"load (1, 5, 15 min) per run      {'; '.join(loads)}")
    without, with_, users = state_sizes(gen.events, text)
    print(f"state (pickled UserState)        {without:10.0f} B/user without, {with_:.0f} B/user with ({users} users)")
    print(f"state per user per trait         {(with_ - without) / len(TRAITS):10.1f} B")


if __name__ == "__main__":
    main()
