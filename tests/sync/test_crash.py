"""kill -9 of the sync process mid-batch loses nothing; the next process redelivers at most what was in flight."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import redis

from liveprofile.sync.model import SyncKeys
from tests.procs import Proc, base_env
from tests.sync.fakes import FakeVendor
from tests.sync.helpers import Feed, assert_exactly_once_in_order, covered, dest, wait_until

MAX_ITEMS, CONCURRENCY = 10, 2


def start_syncer(redis_url: str, cfg: dict, tmp: Path, name: str) -> Proc:
    env = base_env(redis_url, LIVEPROFILE_SYNC_DESTINATIONS=orjson.dumps(cfg).decode(), LIVEPROFILE_SYNC_LEASE_TTL="1",
                   LIVEPROFILE_SYNC_METRICS_PORT="0", LIVEPROFILE_SYNC_CONSUMER=name)  # fmt: skip
    return Proc([sys.executable, "-m", "liveprofile.sync"], env, tmp / f"{name}.log")


def test_kill_9_mid_batch(redis_url: str, r: redis.Redis, feed: Feed, make_vendor: Callable[..., FakeVendor], tmp_path: Path) -> None:
    hook = make_vendor("webhook", max_items=MAX_ITEMS, latency=0.05)  # slow enough to always be mid-batch
    braze = make_vendor("braze", latency=0.02)
    for v in range(3):
        for i in range(150):
            feed.change(f"u{i}", {"cart_value": f"{v}.{i}"})
    cfg = {**dest("hook", hook, max_items=MAX_ITEMS, concurrency=CONCURRENCY, batch_size=200),
           **dest("braze", braze, batch_size=100)}  # fmt: skip
    first = start_syncer(redis_url, cfg, tmp_path, "first")
    try:
        wait_until(lambda: len(hook.unique) >= 40 and len(braze.applied) >= 100, what=f"first deliveries: {first.output()}")
        assert not covered(hook, feed)  # still mid-way
        first.kill9()
        group = SyncKeys("lp", "hook").group
        assert r.xpending("lp:profile-changes", group)["pending"] > 0  # a batch was in flight
        for i in range(150):  # the feed keeps moving while no syncer runs
            feed.change(f"u{i}", {"cart_value": "after"})
        second = start_syncer(redis_url, cfg, tmp_path, "second")
        try:
            wait_until(lambda: covered(hook, feed) and covered(braze, feed), timeout=60, what=f"recovery: {second.output()}")
        finally:
            second.stop()
    finally:
        first.kill9()
    assert hook.violations == [] and braze.violations == []
    # nothing lost; per-user order; one delivery per (user, version) as the webhook receiver sees it
    assert_exactly_once_in_order(hook, feed)
    # what reached the vendor twice is bounded by what was in flight at the kill (and carried the same key)
    assert hook.duplicates <= MAX_ITEMS * CONCURRENCY
    # Braze has no idempotency key: only the requests in flight at the kill may be applied twice, in place
    resent: list[int] = []
    assert_exactly_once_in_order(braze, feed, resent=resent)
    assert sum(resent) <= 4 * 75
    assert r.xpending("lp:profile-changes", SyncKeys("lp", "hook").group)["pending"] == 0
