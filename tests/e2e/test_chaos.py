"""Crash consistency: kill -9 the dataflow repeatedly; the final Redis state must equal
an uninterrupted run's — with one process, with two (-i/-a), and after rescaling 2 -> 1."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from bench.pipeline import load_buffer
from liveprofile.generate import GenConfig, generate
from tests.e2e.chaos import (
    FAST_WINDOWS,
    base_env,
    chaos_run,
    cluster,
    init_recovery,
    settled,
    state,
    stop_all,
)

END_MS = int(time.time() * 1000) - 3 * 3_600_000


@pytest.fixture(scope="module")
def events() -> list[dict]:
    gen = generate(GenConfig(users=1800, seed=31, end_ms=END_MS, days=20, duplicate_rate=0.02, invalid_rate=0.005))
    assert len(gen.events) >= 100_000, len(gen.events)
    return gen.events


@pytest.fixture(scope="module")
def reference(events: list[dict], tmp_path_factory: pytest.TempPathFactory, redis_server) -> dict:  # type: ignore[no-untyped-def]
    """The uninterrupted single-process run."""
    tmp = tmp_path_factory.mktemp("reference")
    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    load_buffer(redis_server.url, events, 4)
    procs = cluster(base_env(redis_server.url, **FAST_WINDOWS), tmp, 1, init_recovery(tmp / "rec", 1), "ref")
    try:
        settled(r)
    finally:
        stop_all(procs)
    return state(r)


def diff(a: dict, b: dict) -> list:
    out = []
    for part in ("profiles", "segments", "feed"):
        for k in sorted(set(a[part]) | set(b[part])):
            if a[part].get(k) != b[part].get(k):
                out.append((part, k, a[part].get(k), b[part].get(k)))
    return out


@pytest.mark.parametrize(
    ("processes", "parts", "kills"),
    [([1], 1, 5), ([2], 2, 5), ([2, 2, 2, 1], 2, 3)],
    ids=["one-process", "two-processes", "rescale-2-to-1"],
)
def test_kill_9_repeatedly_gives_the_uninterrupted_state(
    events: list[dict], reference: dict, redis_url: str, r: redis.Redis, tmp_path: Path, processes: list[int], parts: int, kills: int
) -> None:
    load_buffer(redis_url, events, 4)
    done = chaos_run(redis_url, tmp_path, init_recovery(tmp_path / "rec", parts), processes, kills, seed=len(processes) * 7 + kills)
    assert done == kills
    got = state(r)
    d = diff(reference, got)
    detail = [(part, k, {f: (a.get(f), b.get(f)) for f in set(a) | set(b) if a.get(f) != b.get(f)} if isinstance(a, dict) and isinstance(b, dict) else (a, b))
              for part, k, a, b in d[:6]]  # fmt: skip
    assert not d, (len(d), detail)
    assert len(got["profiles"]) > 1000
