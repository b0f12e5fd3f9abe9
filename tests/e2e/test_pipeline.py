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

from liveprofile.generate import GenConfig, generate, write_jsonl
from tests.e2e.helpers import K, dead_letters, post_batches, wait_caught_up, wait_truth
from tests.procs import base_env, start_collector, start_dataflow

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
    env = base_env(redis_url, LIVEPROFILE_READ_BATCH="50")
    rec = init_recovery(tmp_path / "rec")
    coll, url = start_collector(env, tmp_path)
    n = len(stream.events)
    df = start_dataflow(env, tmp_path, recovery=rec, name="df1")
    try:
        post_batches(url, stream.events[: n // 2])
        time.sleep(1.5)  # let it process (and snapshot) part of it
        post_batches(url, stream.events[n // 2 : 3 * n // 4])
        if how == "sigint":
            df.interrupt()
        else:
            df.kill9()
        post_batches(url, stream.events[3 * n // 4 :])  # the collector keeps accepting meanwhile
        df = start_dataflow(env, tmp_path, recovery=rec, name="df2")
        wait_caught_up(r)
        mism = wait_truth(r, stream.truth)
        assert not mism, (len(mism), mism[:10], df.output())
        check_dead_letters(r, stream)
        assert len(dead_letters(r)) == len(stream.invalid)  # dead letters are not duplicated by the replay
    finally:
        df.interrupt()
        coll.stop()


def test_restart_without_recovery_rebuilds_from_the_buffer(redis_url: str, r: redis.Redis, tmp_path: Path, stream) -> None:  # type: ignore[no-untyped-def]
    """Without -r the buffer is the log: a restart re-reads it and converges to the same profiles."""
    env = base_env(redis_url)
    coll, url = start_collector(env, tmp_path)
    df = start_dataflow(env, tmp_path, name="df1")
    try:
        post_batches(url, stream.events[: len(stream.events) // 2])
        time.sleep(1.0)
        df.interrupt()
        post_batches(url, stream.events[len(stream.events) // 2 :])
        df = start_dataflow(env, tmp_path, name="df2")
        wait_caught_up(r)
        mism = wait_truth(r, stream.truth)
        assert not mism, (len(mism), mism[:10])
        assert len(dead_letters(r)) == len(stream.invalid)
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
