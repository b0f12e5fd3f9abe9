"""Helpers for end-to-end tests: feed a generated stream, compare profiles to truth."""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Sequence

import httpx
import orjson
import redis

from liveprofile.buffer import backlog
from liveprofile.keys import Keys
from tests.procs import wait_for

K = Keys("lp")


def post_batches(url: str, events: Sequence[dict], batch: int = 200, key: str = "test-key") -> None:
    """POST events to /v1/batch with gzip, retrying 429/503 as a client should."""
    with httpx.Client(base_url=url, auth=(key, ""), timeout=30) as c:
        for i in range(0, len(events), batch):
            body = gzip.compress(orjson.dumps({"batch": list(events[i : i + batch])}))
            for _ in range(200):
                resp = c.post("/v1/batch", content=body, headers={"Content-Encoding": "gzip"})
                if resp.status_code not in (429, 503):
                    break
                import time

                time.sleep(0.2)
            assert resp.status_code == 200, resp.text


def profile_mismatches(r: redis.Redis, truth: dict[str, dict[str, str]], keys: Keys = K) -> list[tuple[str, str, str | None, str]]:
    """(user, field, got, expected) for every truth field that differs."""
    pipe = r.pipeline(transaction=False)
    users = list(truth)
    for u in users:
        pipe.hgetall(keys.profile(u))
    out = []
    for u, prof in zip(users, pipe.execute(), strict=True):
        got = {k.decode(): v.decode() for k, v in prof.items()}
        for f, v in truth[u].items():
            if got.get(f) != v:
                out.append((u, f, got.get(f), v))
    return out


def wait_caught_up(r: redis.Redis, shards: int = 4, timeout: float = 120, keys: Keys = K) -> None:
    wait_for(lambda: sum(backlog(r, keys, shards).values()) == 0, timeout, 0.2, "dataflow to catch up")


def wait_truth(r: redis.Redis, truth: dict[str, dict[str, str]], timeout: float = 60, keys: Keys = K) -> list:
    """Wait until every profile equals the truth; returns the remaining mismatches (empty on success)."""
    mism: list = []

    def ok() -> bool:
        nonlocal mism
        mism = profile_mismatches(r, truth, keys)
        return not mism

    with contextlib.suppress(TimeoutError):
        wait_for(ok, timeout, 0.5, "profiles to match the truth")
    return mism


def dead_letters(r: redis.Redis, keys: Keys = K) -> list[dict[str, str]]:
    return [{k.decode(): v.decode(errors="replace") for k, v in f.items()} for _, f in r.xrange(keys.dead_letter)]
