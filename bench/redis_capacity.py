"""Redis-side capacity for profile writes: profile-script upserts per second of one redis-server.

    .venv/bin/python bench/redis_capacity.py [--users 20000] [--rounds 5] [--clients 2] [--cluster]

The dataflow's real profile sink (:class:`dataflows.sinks.RedisProfileSink`:
pipelined ``PROFILE_LUA`` upserts, the RFM customer index) writes rounds of
profile updates for ``--users`` users from ``--clients`` processes into a
private redis-server (AOF on, ``appendfsync everysec``, as in production).
Each update carries the whole rendered profile (~30 fields, as the dataflow
sends it); the first round creates the profiles, later rounds change 6 fields
(counters, times, interests JSON, cart) plus a segment move every fifth user,
so each upsert does the script's full work: HMGET of every field, HSET of the
changed ones, segment SADD/SREM and one change-feed XADD.

Printed: upserts/s as observed (clients included, so bounded by this
machine's cores) and **upserts per second of redis-server CPU** — what one
Redis shard (one core: Redis executes commands on one thread) sustains when
it is the bottleneck; the capacity figure of docs/scaling.md.
``--cluster`` runs the same against a private 3-master cluster and reports the
per-node CPU (the writes spread by user group).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataflows.sinks import RedisProfileSink  # noqa: E402
from liveprofile.store.keys import Keys  # noqa: E402
from operators.user import ProfileUpdate  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds."""
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / _TICK


def profile(uid: str, r: int) -> dict[str, str]:
    """A rendered profile (the fields the dataflow sends) for user ``uid`` at round ``r``."""
    day = 1_700_000_000_000 + r * 3_600_000
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(day / 1000))
    cat = ("shoes", "books", "garden", "toys")[(hash(uid) + r // 5) % 4]
    return {
        "user_id": uid, "email": f"{uid}@example.com", "anonymous_ids": '["a-' + uid + '"]',
        "event_count": str(10 + r), "first_seen_at": "2023-11-14T22:13:20.000Z", "last_seen_at": stamp,
        "purchase_count": "2", "revenue_total": "129.90", "first_purchase_at": "2023-11-15T10:00:00.000Z",
        "last_purchase_at": "2023-11-20T10:00:00.000Z",
        "cart": '[{"product_id":"p1","quantity":' + str(1 + r % 3) + ',"price":"19.90"}]',
        "cart_value": f"{19.9 * (1 + r % 3):.2f}", "cart_items": str(1 + r % 3), "cart_abandoned": "0",
        "email_opens": "3", "email_clicks": "1", "last_email_open_at": "2023-11-18T08:00:00.000Z",
        "interests": '{"' + cat + '":' + f"{1.5 + r / 10:.4f}" + ',"books":0.8000}', "top_category": cat,
        "interests_at": stamp, "session_count": str(3 + r // 2), "consent": '{"email":true}',
    }  # fmt: skip


def writer(url: str, cluster_groups: int, users: list[str], rounds: int, batch: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    part = RedisProfileSink(url, Keys("lp", cluster_groups)).build("bench", 0, 1)
    n = 0
    t0 = time.perf_counter()
    for r in range(rounds):
        for i in range(0, len(users), batch):
            part.write_batch([(u, ProfileUpdate(u, r + 1, profile(u, r), 0, None)) for u in users[i : i + batch]])
            n += len(users[i : i + batch])
    out.put((n, time.perf_counter() - t0))


def run(url: str, pids: list[int], cluster_groups: int, users: int, rounds: int, clients: int, batch: int) -> None:
    names = [f"user-{i}" for i in range(users)]
    cpu0 = [cpu_seconds(p) for p in pids]
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    t0 = time.perf_counter()
    procs = [mp.Process(target=writer, args=(url, cluster_groups, names[c::clients], rounds, batch, q)) for c in range(clients)]
    for p in procs:
        p.start()
    done = [q.get() for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - t0
    cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0, strict=True)]
    total = sum(n for n, _ in done)
    print(f"{total:,} profile upserts in {wall:.2f} s = {total / wall:,.0f}/s observed ({clients} client process(es), batches of {batch})")
    for i, c in enumerate(cpu):
        print(f"  redis-server #{i}: {c:.2f} s CPU = {total / len(cpu) / c:,.0f} upserts per CPU-second (its share)")
    print(f"  redis-side capacity: {total / sum(cpu):,.0f} upserts per second of one redis-server's CPU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1000, help="updates per sink batch (the dataflow's epoch batches)")
    ap.add_argument("--cluster", action="store_true", help="against a private 3-master Redis Cluster")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.cluster:
            from tests.redis_cluster import RedisCluster3

            cl = RedisCluster3(Path(tmp)).start()
            try:
                run(cl.url, [p.pid for p in cl.procs], 16, args.users, args.rounds, args.clients, args.batch)
            finally:
                cl.stop()
            return
        from tests.redis_server import RedisServer

        srv = RedisServer(Path(tmp), appendonly=True).start()
        try:
            assert srv.proc is not None
            run(srv.url, [srv.proc.pid], 0, args.users, args.rounds, args.clients, args.batch)
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
