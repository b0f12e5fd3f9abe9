"""Computed traits and audiences across a ``kill -9`` of the dataflow (real collector, Redis
Streams buffer and dataflow processes, Bytewax recovery ``-r``), against the independent brute
force of :mod:`tests.audiences_bruteforce`.

The generated stream is posted through the collector in three parts: the first (events up to
the second sample time) is processed and snapshotted (the profiles equal the brute force there,
and the committed snapshot covers every buffer entry); the second is posted and the dataflow is
killed with SIGKILL as soon as it has started reading it — so the restart resumes from a
snapshot older than what the killed process read and wrote, and replays it; the third is
posted while the dataflow is down. After the restart the profiles and audience sets must equal
the brute force at the newest event time, and the change feed must hold exactly one entry per
transition: per user and audience, entered/exited alternate starting with entered and end at
the final membership (a replayed update writing a second ``entered`` fails it), and no
``(user, version)`` repeats.

The replay may route an anonymous event to the user directly while the killed run's merge
export, still in the buffer, carries it as well (or the other way round): the merge counts each
event once (operators/user.py's MergeLog; step by step in tests/operators/test_merge_replay.py).
Before it, about 1 run of 4 counted one user's anonymous history twice.
"""

from __future__ import annotations

from pathlib import Path

import redis

from tests.audiences_bruteforce import PREFIX, RICH, SAMPLES, load
from tests.e2e.chaos import FAST_WINDOWS, entries_added, init_recovery, snapshot_positions
from tests.e2e.helpers import post_batches
from tests.e2e.test_audiences import STREAM, T_END, agree, check_feed, newest
from tests.procs import base_env, dataflow_reads, start_collector, start_dataflow, wait_for


def test_kill_9_mid_stream_recovers_to_the_brute_force_without_duplicate_transitions(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    defs = load(RICH)
    path = tmp_path / "definitions.yaml"
    path.write_text(RICH)
    env = base_env(redis_url, LIVEPROFILE_DEFINITIONS=str(path), **FAST_WINDOWS)
    rec = init_recovery(tmp_path / "rec", 1)
    cut1, cut2 = SAMPLES[1], SAMPLES[2]
    parts = [[e for e in STREAM.events if lo < STREAM.ts(e) <= hi] for lo, hi in ((-1, cut1), (cut1, cut2), (cut2, T_END))]
    assert all(parts) and sum(map(len, parts)) == len(STREAM.events)
    coll, url = start_collector(env, tmp_path)
    df = start_dataflow(env, tmp_path, recovery=rec, api=True, name="dataflow-1")
    try:
        post_batches(url, parts[0])
        agree(r, defs, newest(cut1))
        # the committed snapshot covers every entry so far (events and the merges written back)
        wait_for(lambda: sum(snapshot_positions(rec).values()) == sum(entries_added(r).values()), 60, 0.2, "a snapshot of part 1")
        before = dataflow_reads([df])
        assert before is not None
        post_batches(url, parts[1])

        def reading_part_2() -> bool:
            now = dataflow_reads([df])
            return now is not None and sum(now.values()) > sum(before.values())

        wait_for(reading_part_2, 60, 0.02, "the dataflow to read part 2")
        reads = dataflow_reads([df])
        df.kill9()
        assert reads is not None
        resumed = sum(snapshot_positions(rec).values())
        print(f"killed after reading {sum(reads.values())} entries; the restart resumes from {resumed}", flush=True)
        assert resumed < sum(entries_added(r).values()), "the kill landed mid-stream"
        post_batches(url, parts[2])  # while the dataflow is down: the buffer holds it
        df = start_dataflow(env, tmp_path, recovery=rec, api=True, name="dataflow-2")
        agree(r, defs, T_END)
        check_feed(r, defs, STREAM, T_END, event_times=False)
        seen: set[tuple[bytes, bytes]] = set()
        for _, f in r.xrange(f"{PREFIX}:profile-changes"):
            key = (f.get(b"anonymous", b"0") + f[b"user_id"], f[b"version"])
            assert key not in seen, f"the change feed repeats {key}"
            seen.add(key)
    finally:
        df.interrupt()
        coll.stop()
