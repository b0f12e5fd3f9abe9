"""End to end: collector + `python -m bytewax.run dataflows.profiles:flow` + real Redis.

A generated stream with duplicates and invalid events goes through /v1/batch
with gzip; every profile must equal the generator's truth exactly, every
invalid event must be dead-lettered with its reason, and stopping/killing the
dataflow mid-stream (with recovery) must neither lose nor double-count.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from liveprofile.devtools.generate import GenConfig, generate, write_jsonl
from tests.e2e.chaos import entries_added, snapshot_positions
from tests.e2e.helpers import K, dead_letters, post_batches, wait_caught_up, wait_truth
from tests.procs import base_env, dataflow_reads, start_collector, start_dataflow, wait_for

#: Wall-relative on purpose: these events go through the collector with its default
#: plausibility bounds, which are relative to receipt time (LIVEPROFILE_MAX_EVENT_AGE 400 d,
#: LIVEPROFILE_MAX_FUTURE_SKEW 1 h); the years-old-history test is about exactly that bound.
#: The generated stream itself (its seed, and its times relative to NOW_MS) is fixed.
NOW_MS = int(time.time() * 1000) - 120_000


def init_recovery(path: Path, parts: int = 1) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(path), str(parts)], check=True)
    return path


@pytest.fixture(scope="module")
def stream():  # type: ignore[no-untyped-def]
    return generate(GenConfig(users=300, seed=11, end_ms=NOW_MS, days=10, duplicate_rate=0.03, invalid_rate=0.02, bots=3))


def check_dead_letters(r: redis.Redis, gen) -> None:  # type: ignore[no-untyped-def]
    got = {d["message_id"]: d["reason"] for d in dead_letters(r) if d["message_id"]}
    missing = [(i["messageId"], i["reason"], got.get(i["messageId"])) for i in gen.invalid if got.get(i["messageId"]) != i["reason"]]
    assert not missing, missing[:10]
    assert all(d["message"] and d["raw"] for d in dead_letters(r))


def test_full_pipeline_matches_truth(redis_url: str, r: redis.Redis, tmp_path: Path, stream) -> None:  # type: ignore[no-untyped-def]
    env = base_env(redis_url)
    coll, url = start_collector(env, tmp_path)
    df = start_dataflow(env, tmp_path, recovery=init_recovery(tmp_path / "rec"))
    try:
        post_batches(url, stream.events)
        wait_caught_up(r)
        mism = wait_truth(r, stream.truth)
        assert not mism, (len(mism), mism[:10], df.output())
        check_dead_letters(r, stream)
        # no duplicate was counted: event_count equals truth already; the change feed never repeats a version
        seen = set()
        for _, f in r.xrange(K.changes):
            key = (f[b"user_id"], f[b"version"])
            assert key not in seen
            seen.add(key)
    finally:
        df.interrupt()
        coll.stop()


@pytest.mark.parametrize("how", ["sigint", "kill9"])
def test_stop_and_restart_neither_loses_nor_double_counts(redis_url: str, r: redis.Redis, tmp_path: Path, stream, how: str) -> None:  # type: ignore[no-untyped-def]
    """The stop lands mid-stream (the dataflow has read part of the input and committed a
    snapshot; the last quarter is sent only after the stop), and the restart resumes from
    that snapshot: it reads exactly the entries after it, not the whole buffer again."""
    env = base_env(redis_url, LIVEPROFILE_READ_BATCH="50")
    rec = init_recovery(tmp_path / "rec")
    coll, url = start_collector(env, tmp_path)
    n = len(stream.events)
    df = start_dataflow(env, tmp_path, recovery=rec, name="df1", api=True)
    try:
        post_batches(url, stream.events[: n // 2])
        # synchronise on progress: it read some of it and a snapshot past the start exists
        wait_for(lambda: sum((dataflow_reads([df]) or {}).values()) > 0 and sum(snapshot_positions(rec).values()) > 0,
                 60, 0.05, "a read and a snapshot")  # fmt: skip
        post_batches(url, stream.events[n // 2 : 3 * n // 4])
        if how == "sigint":
            df.interrupt()
        else:
            df.kill9()
        resume = snapshot_positions(rec)
        assert 0 < sum(resume.values()) <= sum(entries_added(r).values()), resume
        post_batches(url, stream.events[3 * n // 4 :])  # the collector keeps accepting meanwhile
        df = start_dataflow(env, tmp_path, recovery=rec, name="df2", api=True)
        wait_caught_up(r)
        mism = wait_truth(r, stream.truth)
        assert not mism, (len(mism), mism[:10], df.output())
        check_dead_letters(r, stream)
        assert len(dead_letters(r)) == len(stream.invalid)  # dead letters are not duplicated by the replay
        # the restart read each shard from its snapshot on, exactly
        after = lambda: {s: e - resume.get(s, 0) for s, e in entries_added(r).items()}  # noqa: E731
        wait_for(lambda: dataflow_reads([df]) == after(), 10, 0.1, "reads from the snapshot on")
    finally:
        df.interrupt()
        coll.stop()


def test_restart_without_recovery_rebuilds_from_the_buffer(redis_url: str, r: redis.Redis, tmp_path: Path, stream) -> None:  # type: ignore[no-untyped-def]
    """Without -r the buffer is the log: a restart re-reads it and converges to the same profiles."""
    env = base_env(redis_url)
    coll, url = start_collector(env, tmp_path)
    df = start_dataflow(env, tmp_path, name="df1", api=True)
    try:
        post_batches(url, stream.events[: len(stream.events) // 2])
        wait_for(lambda: sum((dataflow_reads([df]) or {}).values()) > 0, 60, 0.05, "the first dataflow to read")
        df.interrupt()
        post_batches(url, stream.events[len(stream.events) // 2 :])
        df = start_dataflow(env, tmp_path, name="df2", api=True)
        wait_caught_up(r)
        mism = wait_truth(r, stream.truth)
        assert not mism, (len(mism), mism[:10])
        assert len(dead_letters(r)) == len(stream.invalid)
        # no snapshot to resume from: the restart read the whole buffer again
        wait_for(lambda: dataflow_reads([df]) == entries_added(r), 10, 0.1, "the whole buffer re-read")
    finally:
        df.interrupt()
        coll.stop()


def test_years_old_history_imports_once_timestamp_min_is_set_back(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    old_end = NOW_MS - 4 * 365 * 86_400_000
    gen = generate(GenConfig(users=80, seed=5, end_ms=old_end, days=3 * 365))
    path = tmp_path / "history.jsonl"
    write_jsonl(path, gen.events)
    # with the default bound, years-old events are refused (dead-lettered, not lost)
    env_default = base_env(redis_url)
    out = subprocess.run([sys.executable, "-m", "liveprofile.cli", "replay", str(path), "--quiet"], env=env_default, capture_output=True, text=True, check=False)
    assert out.returncode == 1 or '"accepted":0' in out.stdout, out
    assert {d["reason"] for d in dead_letters(r)} == {"timestamp_too_old"}
    r.flushall()
    env = base_env(redis_url, LIVEPROFILE_TIMESTAMP_MIN="2000-01-01T00:00:00Z")
    out = subprocess.run([sys.executable, "-m", "liveprofile.cli", "replay", str(path), "--quiet"], env=env, capture_output=True, text=True, check=True)
    assert f'"accepted":{len(gen.events)}' in out.stdout
    df = start_dataflow(env, tmp_path, flow="dataflows.profiles:get_flow(stop_at_end=True)")
    assert df.wait(120) == 0, df.output()
    mism = wait_truth(r, gen.truth, timeout=10)
    assert not mism, mism[:10]
    assert dead_letters(r) == []
