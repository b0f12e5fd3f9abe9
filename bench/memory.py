"""Memory per user of the dataflow's state.

    .venv/bin/python bench/memory.py [--users 20000]

Two views, on a generated stream (about 60 events per user):

* **state objects**: every user's :class:`operators.user.UserState` built by the
  real step function, measured with ``tracemalloc`` (Python heap bytes per user),
  and the pickled snapshot size per user (what recovery stores);
* **packed (idle) states**: the same states as the dataflow keeps a user idle for
  ``LIVEPROFILE_STATE_IDLE`` (:class:`dataflows.logic.UserLogic` holding only the compressed
  snapshot bytes), heap bytes per user with the logic object, next to the resident form
  (the logic object holding the state objects);
* **process RSS**: the dataflow run over the stream as a real process (recovery
  off): peak resident memory of a run over the whole stream against a run over
  a quarter of the users, divided by the difference in users (the slope, so
  per-run transients — batches in flight, models, buffers — cancel out); then the
  same two streams' runs with recovery on, each resumed by a second run (no new
  events: every user is idle), with packing off and on side by side: the resumed
  process's peak RSS slope is what holding every known user costs after a restart.
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import load_buffer  # noqa: E402
from dataflows.clock import StreamClock  # noqa: E402
from dataflows.logic import UserLogic  # noqa: E402
from liveprofile.devtools.generate import GenConfig, generate  # noqa: E402
from operators import snapshot  # noqa: E402
from operators.events import Event, Limits, parse_event  # noqa: E402
from operators.user import UserConfig, UserState, step  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def state_bytes(events: list[dict]) -> tuple[float, float, list[UserState]]:
    """(heap bytes per user, pickled bytes per user, the states)."""
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
    return used / n, pickled / n, list(states.values())  # type: ignore[arg-type]


def packed_bytes(states: list[UserState]) -> tuple[float, float]:
    """(heap bytes per user of resumed :class:`UserLogic` objects holding packed states, the same
    holding resident states): each built from the state's snapshot as Bytewax builds resumed keys."""
    cfg = UserConfig()
    clock = StreamClock()
    raws = [snapshot.dump(s) for s in states]
    out = []
    for idle in (3600.0, None):
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        logics = [UserLogic(cfg, clock, raw, idle_s=idle) for raw in raws]
        gc.collect()
        out.append((tracemalloc.get_traced_memory()[0] - base) / len(logics))
        tracemalloc.stop()
        assert all((lg.state is None) == (idle is not None) for lg in logics)
        del logics
    return out[0], out[1]


def rss_run(url: str, rec: Path | None = None, idle: str = "1h") -> int:
    """Peak RSS (KB) of a dataflow run over the buffer at ``url`` (``rec``: with that recovery
    directory; ``idle``: ``LIVEPROFILE_STATE_IDLE``)."""
    env = {**os.environ, "LIVEPROFILE_REDIS_URL": url, "LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z", "LIVEPROFILE_STATE_IDLE": idle}
    cmd = [sys.executable, "-m", "bytewax.run", "dataflows.profiles:get_flow(stop_at_end=True)"]
    if rec is not None:
        cmd += ["-r", str(rec), "-s", "5", "-b", "0"]
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return int(out.stderr.strip().splitlines()[-1])


def resumed_rss(url: str, tmp: Path) -> dict[str, int]:
    """Peak RSS (KB) of a resumed run (no new events) with packing off and on, after one run with
    recovery over the buffer at ``url``; each variant resumes its own copy of that recovery store."""
    rec = tmp / "rec"
    rec.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec), "1"], check=True, capture_output=True)
    rss_run(url, rec)
    out = {}
    for idle in ("off", "1h"):
        copy = tmp / f"rec-{idle}"
        shutil.copytree(rec, copy)
        out[idle] = rss_run(url, copy, idle)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20000)
    args = ap.parse_args()
    gen = generate(GenConfig(users=args.users, seed=8, end_ms=int(time.time() * 1000) - 60_000, days=30))
    heap, pickled, states = state_bytes(gen.events)
    n = len(states)
    print(f"users                        {n}  ({len(gen.events) / n:.0f} events each)")
    print(f"state objects (heap)         {heap:8.0f} B/user")
    print(f"snapshot (pickled)           {pickled:8.0f} B/user")
    packed, resident = packed_bytes(states)
    print(f"idle user, packed (heap)     {packed:8.0f} B/user  (resident: {resident:.0f} B/user with its logic object; "
          f"{packed / resident:.2f}x)")  # fmt: skip
    del states
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
            (Path(d) / "s").mkdir()
            (Path(d) / "l").mkdir()
            s0, s1 = resumed_rss(part.url, Path(d) / "s"), resumed_rss(full.url, Path(d) / "l")
            slope = {k: (s1[k] - s0[k]) * 1024 / (n_full - n_small) for k in s0}
            print(f"resumed, packing off: RSS    {s0['off']} KB ({n_small} ids), {s1['off']} KB ({n_full} ids): {slope['off']:8.0f} B/id")
            print(f"resumed, packed idle: RSS    {s0['1h']} KB ({n_small} ids), {s1['1h']} KB ({n_full} ids): {slope['1h']:8.0f} B/id"
                  f"  ({slope['1h'] / slope['off']:.2f}x)")  # fmt: skip
        finally:
            part.stop()
            full.stop()

if __name__ == "__main__":
    main()
