"""kill -9 of the sync process mid-request loses nothing, and re-sends exactly what was in flight.

The fakes *stall* (apply a request, hold its answer) so the kill is known to land while requests
are at the vendor: those were applied but never committed (above the watermark). The next process
must send exactly those again — nothing already committed, nothing twice more — so:

* webhook: the raw re-sends are measured and equal the in-flight set (≤ ``concurrency`` requests),
  and they carry the same per-item idempotency keys, so a receiver that de-duplicates on them
  applies each (user, version) exactly once, in order;
* Braze has no idempotency key: the in-flight attribute updates are applied twice, immediately
  after each other (no other version of that user in between: the same values written again, the
  final state unchanged), and the custom events they carried are recorded twice — nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import redis

from liveprofile.sync.model import SyncKeys
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

MAX_ITEMS, CONCURRENCY = 10, 2
CART = {"name": "Cart Abandoned", "ts": "2024-05-01T12:00:00.000Z", "properties": {"cart_value": "1.00"}}


def test_kill_9_mid_request(redis_url: str, r: redis.Redis, feed: Feed, make_vendor: Callable[..., FakeVendor],
                            tmp_path: Path) -> None:  # fmt: skip
    hook = make_vendor("webhook", max_items=MAX_ITEMS, latency=0.02)
    braze = make_vendor("braze", latency=0.02)
    for v in range(3):
        for i in range(150):
            feed.change(f"u{i}", {"cart_value": f"{v}.{i}"}, CART if i % 5 == v else None)
    cfg = {**dest("hook", hook, max_items=MAX_ITEMS, concurrency=CONCURRENCY, batch_size=200, timeout=30),
           **dest("braze", braze, concurrency=CONCURRENCY, batch_size=100, timeout=30)}  # fmt: skip
    hook.stall_after(40)  # the vendors hold their answers once this much was applied: the sender
    braze.stall_after(100)  # cannot finish first, however fast it runs
    first = start_syncer(redis_url, cfg, tmp_path, "first")
    try:
        wait_until(lambda: hook.stalled >= 1 and braze.stalled >= 1, what=f"requests held at both vendors: {first.output()}")
        first.kill9()
    finally:
        first.kill9()
    hook.release()
    braze.release()
    wait_until(lambda: hook.idle() and braze.idle(), what="everything the dead sender sent to be handled")
    assert not covered(hook, feed) and not covered(braze, feed)  # the kill landed mid-stream
    for name in ("hook", "braze"):
        assert r.xpending("lp:profile-changes", SyncKeys("lp", name).group)["pending"] > 0  # a batch was in flight

    # what each vendor took but the sender never committed: the requests in flight at the kill
    inflight = {v.kind: unacknowledged(v, r, name) for v, name in ((hook, "hook"), (braze, "braze"))}
    for kind, recs in inflight.items():
        assert recs, f"{kind}: the stalled request was applied, so something must be in flight"
        assert len({rec["seq"] for rec in recs}) <= CONCURRENCY, kind  # at most `concurrency` requests
    assert len(inflight["webhook"]) <= CONCURRENCY * MAX_ITEMS and len(inflight["braze"]) <= CONCURRENCY * 75
    before = {kind: times_applied(v) for kind, v in (("webhook", hook), ("braze", braze))}
    assert all(n == 1 for c in before.values() for n in c.values())  # no re-send before the kill

    for i in range(150):  # the feed keeps moving while no syncer runs
        feed.change(f"u{i}", {"cart_value": "after"})
    second = start_syncer(redis_url, cfg, tmp_path, "second")
    try:
        wait_until(lambda: covered(hook, feed) and covered(braze, feed), timeout=60, what=f"recovery: {second.output()}")
    finally:
        second.stop()
    assert hook.violations == [] and braze.violations == []

    # re-sent = applied twice, raw: exactly the in-flight set, once more each, nothing else
    for kind, v in (("webhook", hook), ("braze", braze)):
        counts = times_applied(v)
        resent = {k for k, n in counts.items() if n > 1}
        assert resent == {(rec["user_id"], rec["version"]) for rec in inflight[kind]}, kind
        assert max(counts.values()) == 2, kind
    assert hook.duplicates == len(inflight["webhook"])  # the receiver dropped exactly those, by key
    # the webhook receiver's result: exactly once per (user, version), in order, nothing lost
    assert_exactly_once_in_order(hook, feed)

    # Braze: per user the versions never go back; a repeat only of an in-flight update, in place
    resent_braze = {(rec["user_id"], rec["version"]) for rec in inflight["braze"]}
    per_user: dict[str, list[int]] = {}
    for rec in braze.applied:
        if rec["version"] is not None:
            per_user.setdefault(rec["user_id"], []).append(rec["version"])
    for uid, versions in per_user.items():
        assert versions == sorted(versions), (uid, versions)
        repeats = [a for a, b in zip(versions, versions[1:], strict=False) if a == b]
        assert all((uid, a) in resent_braze for a in repeats), (uid, versions)
        assert versions[-1] == feed.versions[uid]
    # its custom events: the ones of the in-flight requests were recorded twice, the rest once
    received = sum(len(rec["events"]) for rec in braze.applied)
    assert received == sum(len(ks) for ks in feed.events.values()) + sum(len(rec["events"]) for rec in inflight["braze"])
    assert r.xpending("lp:profile-changes", SyncKeys("lp", "hook").group)["pending"] == 0
