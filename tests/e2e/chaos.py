"""Helpers for crash-consistency tests: run the dataflow to a settled state, compare states."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import orjson
import redis

from liveprofile.buffer import backlog
from liveprofile.keys import Keys
from tests.procs import Proc, base_env, start_dataflow, wait_for
from tests.redis_server import free_port

K = Keys("lp")
#: Write metadata and online-model outputs: not comparable across runs (see README, Recovery).
VOLATILE = {"version", "updated_at", "seq", "anomaly_score", "suspect", "purchase_propensity"}
#: Short event-time windows so every cart/session deadline has passed soon after the input ends.
FAST_WINDOWS = {"LIVEPROFILE_CART_ABANDON_WINDOW": "2s", "LIVEPROFILE_SESSION_GAP": "2s", "LIVEPROFILE_TIMER_RECHECK": "1s", "LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z"}


def init_recovery(path: Path, parts: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(path), str(parts)], check=True)
    return path


def state(r: redis.Redis) -> dict[str, object]:
    """Profiles (minus volatile fields), segment sets (minus suspect) and the folded change feed.

    Anonymous ids that merged into a user are left out: whether they had a profile of their
    own before the merge depends on which of their events reached the dataflow first across
    shards; the merged user's profile is the same either way (and is compared)."""
    profiles = {}
    merged: set[str] = set()
    for key in r.scan_iter(K.profile("*")):
        p = {k.decode(): v.decode() for k, v in r.hgetall(key).items()}
        if "merged_into" in p:
            merged.add(key.decode().removeprefix(K.profile("")))
            continue
        profiles[key.decode()] = {k: v for k, v in p.items() if k not in VOLATILE}
    segments = {k.decode(): sorted(m.decode() for m in r.smembers(k)) for k in r.scan_iter(K.segment("*")) if not k.endswith(b":suspect")}
    feed: dict[str, dict[str, str]] = {}
    seen: set[tuple[bytes, bytes]] = set()
    for _, f in r.xrange(K.changes):
        key = (f[b"user_id"], f[b"version"])
        assert key not in seen, f"change feed repeats {key}"
        seen.add(key)
        if f[b"user_id"].decode() in merged:
            continue
        d = feed.setdefault(f[b"user_id"].decode(), {})
        d.update({k: v for k, v in orjson.loads(f[b"changed"]).items() if k not in VOLATILE})
    return {"profiles": profiles, "segments": segments, "feed": feed}


def settled(r: redis.Redis, shards: int = 4, quiet: float = 5.0, timeout: float = 240.0) -> None:
    """Wait until the buffer is read and nothing changes in Redis for ``quiet`` seconds."""
    wait_for(lambda: sum(backlog(r, K, shards).values()) == 0, timeout, 0.2, "dataflow to catch up")
    # the RFM refresher has made a full pass over the customers that changed nothing
    wait_for(lambda: not r.exists(K.rfm_edges) or r.hget(K.rfm_refresh, "converged") == b"1", timeout, 0.5, "RFM refresh to converge")
    deadline = time.monotonic() + timeout
    last = r.xlen(K.changes)
    stable_since = time.monotonic()
    while time.monotonic() - stable_since < quiet:
        if time.monotonic() > deadline:
            raise TimeoutError("the change feed never settled")
        time.sleep(0.5)
        n = r.xlen(K.changes)
        if n != last:
            last, stable_since = n, time.monotonic()


def cluster(env: dict[str, str], tmp: Path, n: int, rec: Path, name: str) -> list[Proc]:
    """``n`` dataflow processes forming one Bytewax cluster over loopback (``-i/-a``)."""
    if n == 1:
        return [start_dataflow(env, tmp, recovery=rec, name=name)]
    addrs = ";".join(f"127.0.0.1:{free_port()}" for _ in range(n))
    return [start_dataflow(env, tmp, recovery=rec, name=f"{name}-{i}", extra=["-i", str(i), "-a", addrs]) for i in range(n)]


def kill_all(procs: list[Proc]) -> None:
    for p in procs:
        p.kill9()


def stop_all(procs: list[Proc]) -> None:
    for p in procs:
        p.interrupt(20)


def chaos_run(redis_url: str, tmp: Path, rec: Path, processes: list[int], kills: int, seed: int) -> int:
    """Run with random ``kill -9``s, restarting each time; ``processes[i]`` is the process
    count of the i-th incarnation (e.g. ``[2, 2, 1]`` rescales). Returns kills done."""
    env = base_env(redis_url, **FAST_WINDOWS)
    rnd = random.Random(seed)
    r = redis.Redis.from_url(redis_url)
    done = 0
    for i in range(kills + 1):
        n = processes[min(i, len(processes) - 1)]
        procs = cluster(env, tmp, n, rec, f"chaos{i}")
        if i == kills:
            settled(r)
            stop_all(procs)
            return done
        time.sleep(rnd.uniform(1.5, 4.0))
        kill_all(procs)
        done += 1
    return done


__all__ = ["state", "settled", "cluster", "chaos_run", "init_recovery", "FAST_WINDOWS", "kill_all", "stop_all", "base_env"]
