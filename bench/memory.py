"""Memory per user of the dataflow's state.

    .venv/bin/python bench/memory.py [--users 20000]

Two views, on a generated stream (about 60 events per user):

* **state objects**: every user's :class:`operators.user.UserState` built by the
  real step function, measured with ``tracemalloc`` (Python heap bytes per user),
  and the pickled snapshot size per user (what recovery stores);
* **process RSS**: the dataflow run over the stream as a real process (recovery
  off): peak resident memory of a run over the whole stream against a run over
  a quarter of the users, divided by the difference in users (the slope, so
  per-run transients — batches in flight, models, buffers — cancel out).
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import load_buffer  # noqa: E402
from liveprofile.devtools.generate import GenConfig, generate  # noqa: E402
from operators.events import Event, Limits, parse_event  # noqa: E402
from operators.user import UserConfig, step  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def state_bytes(events: list[dict]) -> tuple[float, float, int]:
    """(heap bytes per user, pickled bytes per user, users)."""
    lim = Limits(timestamp_min_ms=0)
    cfg = UserConfig()
    parsed = [e for e in (parse_event(dict(ev, receivedAt=ev["timestamp"]), lim) for ev in events) if isinstance(e, Event)]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    states: dict[str, object] = {}
    for ev in parsed:
        st, _, _ = step(cfg, states.get(ev.uid), ev.uid, [ev])  # type: ignore[arg-type]
        states[ev.uid] = st
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    n = len(states)
    pickled = sum(len(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL)) for s in states.values())
    return used / n, pickled / n, n


def rss_run(url: str) -> int:
    """Peak RSS (KB) of a dataflow run over the buffer at ``url``."""
    env = {**os.environ, "LIVEPROFILE_REDIS_URL": url, "LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z"}
    out = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "bytewax.run", "dataflows.profiles:get_flow(stop_at_end=True)"],
                         env=env, cwd=ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    return int(out.stderr.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20000)
    args = ap.parse_args()
    gen = generate(GenConfig(users=args.users, seed=8, end_ms=int(time.time() * 1000) - 60_000, days=30))
    heap, pickled, n = state_bytes(gen.events)
    print(f"users                        {n}  ({len(gen.events) / n:.0f} events each)")
    print(f"state objects (heap)         {heap:8.0f} B/user")
    print(f"snapshot (pickled)           {pickled:8.0f} B/user")
    small = generate(GenConfig(users=args.users // 4, seed=9, end_ms=int(time.time() * 1000) - 60_000, days=30))
    with tempfile.TemporaryDirectory() as d:
        part = RedisServer(Path(d) / "p").start()
        full = RedisServer(Path(d) / "f").start()
        try:
            load_buffer(part.url, small.events, 4)
            load_buffer(full.url, gen.events, 4)
            n_small = len({e.get("userId") or e.get("anonymousId") for e in small.events})
            n_full = len({e.get("userId") or e.get("anonymousId") for e in gen.events})
            r0, r1 = rss_run(part.url), rss_run(full.url)
            print(f"dataflow peak RSS            {r0} KB ({n_small} ids), {r1} KB ({n_full} ids): "
                  f"{(r1 - r0) * 1024 / (n_full - n_small):8.0f} B/id")  # fmt: skip
        finally:
            part.stop()
            full.stop()

if __name__ == "__main__":
    main()
