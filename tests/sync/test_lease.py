"""Two live ``liveprofile sync`` processes for one destination: one delivers, the other waits; when
the holder is killed (-9) mid-request, the other takes the lease over and finishes the work.

The processes serve the same destination (same name: same lease, consumer group and watermark)
but reach the fake at different URL paths (``/a``, ``/b``), so the fake knows who sent what. It
records every request arriving while a request of the *other* process is still being handled
(an overlap: both delivering at once)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import redis

from liveprofile.sync.model import SyncKeys
from tests.procs import Proc
from tests.sync.fakes import FakeVendor
from tests.sync.helpers import (
    Feed,
    assert_exactly_once_in_order,
    covered,
    dest,
    start_syncer,
    times_applied,
    unacknowledged,
    wait_until,
)

MAX_ITEMS, CONCURRENCY, LEASE_TTL = 10, 2, 2.0


def test_lease_exclusion_and_takeover_after_kill_9(redis_url: str, r: redis.Redis, feed: Feed,
                                                    make_vendor: Callable[..., FakeVendor], tmp_path: Path) -> None:  # fmt: skip
    """Never both delivering: no overlapping requests, and every request before the kill came from
    the lease holder, every one after from the other process. After the kill the standby holds the
    lease, claims the dead holder's pending batch, re-sends exactly what was in flight (same keys)
    and delivers the rest: nothing lost, per-user order, exactly once at the receiver."""
    hook = make_vendor("webhook", max_items=MAX_ITEMS, latency=0.02)
    base = dest("hook", hook, max_items=MAX_ITEMS, concurrency=CONCURRENCY, batch_size=100, timeout=30)["hook"]
    procs: dict[str, Proc] = {}
    for name in ("a", "b"):
        procs[name] = start_syncer(redis_url, {"hook": {**base, "url": f"{hook.url}/{name}"}}, tmp_path, name, LEASE_TTL)
    lease = SyncKeys("lp", "hook").lease
    try:
        wait_until(lambda: all(f"sync: consumer {n}" in p.output() for n, p in procs.items()) and r.get(lease),
                   what="both processes up, one holding the lease")  # fmt: skip
        holder = r.get(lease).decode()
        standby = "b" if holder == "a" else "a"
        hook.stall_after(100)  # hold the answers once 100 records were applied: mid-stream for sure
        for v in range(2):
            for i in range(300):
                feed.change(f"u{i}", {"cart_value": f"{v}.{i}"})
        wait_until(lambda: hook.stalled >= 1, what=f"a request of the holder held at the vendor: {procs[holder].output()}")
        with hook.lock:  # while both were alive, only the holder delivered, never overlapping
            assert hook.overlaps == [], f"both processes delivering at once: {hook.overlaps[:5]}"
            assert {q.path for q in hook.log} == {f"/{holder}"}
        procs[holder].kill9()
        hook.release()
        # the standby has no connection yet (it sends nothing before it holds the lease)
        wait_until(hook.idle, what="everything the dead holder sent to be handled")
        inflight = unacknowledged(hook, r, "hook")
        assert 1 <= len(inflight) <= CONCURRENCY * MAX_ITEMS
        assert not covered(hook, feed)  # killed mid-stream
        wait_until(lambda: covered(hook, feed), timeout=60, what=f"takeover: {procs[standby].output()}")
        assert r.get(lease) == standby.encode()
    finally:
        for p in procs.values():
            p.stop()

    assert hook.overlaps == [], f"both processes delivering at once: {hook.overlaps[:5]}"
    senders = [q.path for q in sorted(hook.log, key=lambda q: q.seq)]
    switch = senders.index(f"/{standby}")  # the holder until its death, then only the standby
    assert set(senders[:switch]) == {f"/{holder}"} and set(senders[switch:]) == {f"/{standby}"}, senders
    assert hook.violations == []
    # the takeover re-sent exactly what the dead holder had in flight, with the same keys
    counts = times_applied(hook)
    assert {k for k, n in counts.items() if n > 1} == {(rec["user_id"], rec["version"]) for rec in inflight}
    assert max(counts.values()) == 2 and hook.duplicates == len(inflight)
    assert_exactly_once_in_order(hook, feed)
    assert r.xpending("lp:profile-changes", SyncKeys("lp", "hook").group)["pending"] == 0
