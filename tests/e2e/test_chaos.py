"""Crash consistency: kill -9 the dataflow repeatedly, mid-stream, on observed progress; the
final Redis state must equal an uninterrupted run's — with one process, with two (-i/-a), and
after rescaling 2 -> 1 — and every restart must resume from its snapshot, not from the start."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import redis

from bench.pipeline import load_buffer
from liveprofile.devtools.generate import GenConfig, generate
from tests.e2e.chaos import (
    END_MS,
    FAST_WINDOWS,
    K,
    base_env,
    chaos_run,
    check_resumed_from_snapshots,
    cluster,
    diff,
    entries_added,
    init_recovery,
    settled,
    state,
    stop_all,
)

#: A fixed clock: the data does not depend on when the test runs. Nothing here needs wall
#: time: the dataflow's timers run on the stream clock (newest event time, then wall time
#: elapsed since it: cart/session windows close ~2 s after the input ends), and
#: LIVEPROFILE_TIMESTAMP_MIN (FAST_WINDOWS) admits old events.


#: the killed runs pack users idle for a second of wall time (LIVEPROFILE_STATE_IDLE): users are
#: packed and unpacked all along the stream, and every resumed key starts packed; the reference
#: never packs, so the comparison also shows packing changes nothing
IDLE = "1s"


@pytest.fixture(scope="module")
def events() -> list[dict]:
    # ~63k events: five kills still land mid-stream (each in its own sixth of the input, with a
    # committed snapshot past its start), and the three runs stay within the suite's budget
    gen = generate(GenConfig(users=1100, seed=31, end_ms=END_MS, days=20, duplicate_rate=0.02, invalid_rate=0.005))
    assert len(gen.events) >= 60_000, len(gen.events)
    return gen.events


def load(url: str, events: list[dict], shards: int = 4, chunk: int = 2000) -> None:
    """Buffer ``events`` (as the replay CLI does) with, after every ``chunk`` of them, one entry
    per shard that only the dataflow rejects (a track call without ``event``, XADDed raw): the
    dataflow's dead-letter sink is then written all along the stream, so replays after kills
    re-emit dead letters it must not write twice."""
    r = redis.Redis.from_url(url)
    for n, i in enumerate(range(0, len(events), chunk)):
        load_buffer(url, events[i : i + chunk], shards)
        for s in range(shards):
            bad = {"type": "track", "messageId": f"raw-bad-{n}-{s}", "userId": "x", "timestamp": "2024-05-01T00:00:00Z"}
            r.xadd(K.events(s), {"e": orjson.dumps(bad)})
    r.close()


@pytest.fixture(scope="module")
def reference(events: list[dict], tmp_path_factory: pytest.TempPathFactory, redis_server) -> dict:  # type: ignore[no-untyped-def]
    """The uninterrupted single-process run."""
    tmp = tmp_path_factory.mktemp("reference")
    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    load(redis_server.url, events)
    procs = cluster(base_env(redis_server.url, **FAST_WINDOWS, LIVEPROFILE_STATE_IDLE="off"), tmp, 1, init_recovery(tmp / "rec", 1), "ref")
    try:
        settled(r)
    finally:
        stop_all(procs)
    return state(r)


@pytest.mark.parametrize(
    ("processes", "parts", "kills"),
    [([1], 1, 5), ([2], 2, 4), ([2, 2, 2, 1], 2, 3)],
    ids=["one-process", "two-processes", "rescale-2-to-1"],
)
def test_kill_9_repeatedly_gives_the_uninterrupted_state(
    events: list[dict], reference: dict, redis_url: str, r: redis.Redis, tmp_path: Path, processes: list[int], parts: int, kills: int
) -> None:
    load(redis_url, events)
    rep = chaos_run(
        base_env(redis_url, **FAST_WINDOWS, LIVEPROFILE_STATE_IDLE=IDLE), tmp_path, init_recovery(tmp_path / "rec", parts), processes, kills,
        seed=len(processes) * 7 + kills, ends=lambda: entries_added(r), settle=lambda _procs, _start: settled(r),
    )  # fmt: skip
    print("kills (resumed from, read, snapshot, re-read):", [(k.resumed_from, k.read, k.snapshot, k.reread) for k in rep.kills])
    check_resumed_from_snapshots(rep, kills)
    got = state(r)
    d = diff(reference, got)
    detail = [(part, k, {f: (a.get(f), b.get(f)) for f in set(a) | set(b) if a.get(f) != b.get(f)} if isinstance(a, dict) and isinstance(b, dict) else (a, b))
              for part, k, a, b in d[:6]]  # fmt: skip
    assert not d, (len(d), detail)
    assert len(got["profiles"]) > 1000
    dataflow_dead = [d for d in got["dead_letters"]["all"] if d[0] == "dataflow"]
    assert len(dataflow_dead) >= 100, "the dataflow's own dead letters are compared too"
