"""The parts of the destination worker (lease, feed, delivery), each against a real redis-server and
a fake vendor over real loopback HTTP, driven in-process: :class:`DestinationWorker` runs its real
loop on this test's event loop, or its parts are stepped one call at a time where that makes the
order of events exact (the lease takeover).

What is pinned here, and which break it shows:

* re-driven entries are deleted from the redrive stream once delivered and acknowledged
  (:meth:`FeedReader.ack`);
* items the adapter has nothing to send for (:meth:`Destination.sendable`: no allowed field, no
  event it may push, not a deletion) reach no request, are counted ``nothing_to_send`` per change
  entry and are acknowledged (:meth:`Delivery.deliver`);
* before each request and each retry the lease is checked: a worker told to stop, or that lost
  the lease, sends nothing more and leaves its batch pending (:meth:`Delivery.send`);
* a lease newly taken makes the next read claim the entries a previous holder read but never
  acknowledged (:class:`Lease` ``on_taken`` -> :meth:`FeedReader.reclaim`), also for a worker that
  served before and had already claimed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from liveprofile.sync.config import DestinationConfig, parse_destinations
from liveprofile.sync.lease import Lease
from liveprofile.sync.metrics import SyncMetrics
from liveprofile.sync.model import SyncKeys
from liveprofile.sync.redrive import replay
from liveprofile.sync.worker import DestinationWorker
from tests.sync.fakes import FakeVendor
from tests.sync.helpers import Feed, K, covered, dest, times_applied

Make = Callable[..., FakeVendor]
CART = {"name": "Cart Abandoned", "ts": "2024-05-01T12:00:00.000Z", "properties": {"cart_value": "12.50"}}
CHANGES = K.changes


def config(name: str, vendor: FakeVendor, **opts: Any) -> DestinationConfig:
    """A validated destination config pointing at ``vendor`` (test timings of :func:`dest`)."""
    return parse_destinations(orjson.dumps(dest(name, vendor, **opts)).decode(), {})[name]


def worker(redis_url: str, cfg: DestinationConfig, *, consumer: str = "t1", lease_ttl: float = 1.0,
           metrics: SyncMetrics | None = None) -> DestinationWorker:  # fmt: skip
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    return DestinationWorker(client, K, cfg, consumer=consumer, metrics=metrics or SyncMetrics(), lease_ttl=lease_ttl)


async def until(pred: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Wait for ``pred`` (polled) without blocking the event loop the worker runs on."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            msg = f"timed out waiting for {what}"
            raise TimeoutError(msg)
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(*workers: DestinationWorker) -> AsyncIterator[asyncio.Event]:
    """The workers' real loops (:meth:`DestinationWorker.run`) as tasks; stopped and awaited on exit."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)
        for w in workers:
            await w.feed.r.aclose()


def all_acknowledged(r: redis.Redis, stream: str, group: str) -> bool:
    """The group has read up to the stream's last generated entry and acknowledged everything it
    read (the last generated id, not the last entry: once every group has acknowledged a deletion,
    erasure_scrub.lua deletes that entry from the feed)."""
    if not r.exists(stream):
        return True
    last = r.xinfo_stream(stream)["last-generated-id"]
    info = {g["name"].decode(): g for g in r.xinfo_groups(stream)}.get(group)
    return info is not None and info["last-delivered-id"] == last and info["pending"] == 0


def sample(metrics: SyncMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# -- 1. re-driven entries ------------------------------------------------------------------------


def test_redriven_entries_are_deleted_once_delivered_and_acknowledged(redis_url: str, r: redis.Redis, feed: Feed,
                                                                      make_vendor: Make) -> None:  # fmt: skip
    """``sync replay`` moves a dead letter to the redrive stream; the worker delivers it (once, with
    the profile's current values) and, on acknowledging, deletes it from the redrive stream: the
    stream ends empty, nothing pending, no dead letter left. (Acknowledged but kept, re-driven
    entries would pile up in the redrive stream forever.)"""
    hook = make_vendor("webhook")
    hook.refuse_users = {"u1"}  # 400 for u1: dead-lettered
    sk = SyncKeys("lp", "hook")

    async def main() -> None:
        w = worker(redis_url, config("hook", hook))
        async with running(w):
            feed.change("u1", {"cart_value": "1.00"})
            feed.change("u2", {"cart_value": "2.00"})
            await until(lambda: r.xlen(sk.dead_letter) == 1 and covered(hook, feed, ["u2"]), what="u1 dead-lettered")
            hook.refuse_users = set()
            assert replay(r, "lp", "hook") == 1
            assert r.xlen(sk.redrive) == 1 and r.xlen(sk.dead_letter) == 0  # the worker has not run since
            await until(lambda: covered(hook, feed, ["u1"]), what="the re-driven item delivered")
            # a change written after the re-drive was delivered is read in a later batch, so once it
            # is delivered the re-drive batch has been acknowledged (ack comes before the next read)
            feed.change("u9", {"cart_value": "9.00"})
            await until(lambda: covered(hook, feed, ["u9"]), what="a later batch")

    asyncio.run(main())
    assert r.xlen(sk.redrive) == 0, f"re-driven entries left in the redrive stream: {r.xrange(sk.redrive)}"
    assert r.xpending(sk.redrive, sk.group)["pending"] == 0
    assert r.xpending(CHANGES, sk.group)["pending"] == 0
    assert r.xlen(sk.dead_letter) == 0
    assert times_applied(hook)[("u1", 1)] == 1
    assert [rec["fields"]["cart_value"] for rec in hook.applied if rec["user_id"] == "u1"] == ["1.00"]
    assert hook.violations == []


# -- 2. nothing to send ----------------------------------------------------------------------------


def test_items_with_nothing_to_send_are_counted_and_acknowledged_not_sent(redis_url: str, r: redis.Redis,
                                                                         feed: Feed, make_vendor: Make) -> None:  # fmt: skip
    """:meth:`Destination.sendable` decides per item: with an allow-list of ``email`` only, a user
    whose changes touch no allowed field and carry no event reaches no request and is counted
    ``nothing_to_send`` once per change entry (2 here); a user with an event but no allowed field is
    sent (the event alone) where events are pushed, and counted instead where they are not
    (``events: false``); a deletion is always sent. Everything is acknowledged either way."""
    hook, noev = make_vendor("webhook"), make_vendor("webhook")
    feed.change("plain", {"cart_value": "1.00"})  # only fields outside the allow-list (and event_count)
    feed.change("plain", {"cart_value": "2.00"})
    feed.change("evented", {"cart_value": "3.00"}, CART)
    feed.change("allowed", {"email": "a@x.co", "cart_value": "4.00"})
    feed.change("gone", {"cart_value": "5.00"})
    feed.delete("gone")  # the deletion collapses the user's batch to "deleted"
    metrics = SyncMetrics()
    group_hook, group_noev = SyncKeys("lp", "hook").group, SyncKeys("lp", "noev").group

    async def main() -> None:
        a = worker(redis_url, config("hook", hook, fields=["email"]), metrics=metrics)
        b = worker(redis_url, config("noev", noev, fields=["email"], events=False), metrics=metrics)
        async with running(a, b):
            # acknowledged comes after every request of the batch finished: nothing more will be sent
            await until(lambda: all_acknowledged(r, CHANGES, group_hook) and all_acknowledged(r, CHANGES, group_noev),
                        what="both destinations acknowledged everything")  # fmt: skip

    asyncio.run(main())
    sent = {name: {rec["user_id"]: rec for rec in v.applied} for name, v in (("hook", hook), ("noev", noev))}
    assert set(sent["hook"]) == {"evented", "allowed", "gone"}, sent["hook"]
    assert set(sent["noev"]) == {"allowed", "gone"}, sent["noev"]
    ev = sent["hook"]["evented"]
    assert ev["fields"] == {} and [e["name"] for e in ev["events"]] == ["Cart Abandoned"]
    for name in ("hook", "noev"):
        assert sent[name]["allowed"]["fields"] == {"email": "a@x.co"}
        assert sent[name]["gone"]["deleted"] is True
    assert {q.status for v in (hook, noev) for q in v.log} == {200}
    assert hook.violations == [] and noev.violations == []
    skipped = "liveprofile_sync_skipped_total"
    assert sample(metrics, skipped, destination="hook", reason="nothing_to_send") == 2
    assert sample(metrics, skipped, destination="noev", reason="nothing_to_send") == 3
    delivered = "liveprofile_sync_delivered_changes_total"
    assert sample(metrics, delivered, destination="hook") == 4  # evented 1 + allowed 1 + gone 2
    assert sample(metrics, delivered, destination="noev") == 3  # allowed 1 + gone 2


# -- 3. the lease is checked before every attempt -------------------------------------------------


@pytest.mark.parametrize("how", ["stop", "lease_lost"])
def test_no_request_after_stop_or_lease_loss(how: str, redis_url: str, r: redis.Redis, feed: Feed,
                                             make_vendor: Make) -> None:  # fmt: skip
    """One request at a time, one item each. While the vendor holds the answer to the first, the
    worker is told to stop (``stop``) or loses its lease to another consumer (``lease_lost``: seen
    by its renewal). When the answer arrives the next request is never sent, and the batch stays
    pending (unacknowledged) for the next holder."""
    hook = make_vendor("webhook", max_items=1)
    sk = SyncKeys("lp", "hook")
    for u in ("u1", "u2", "u3"):
        feed.change(u, {"cart_value": "1.00"})
    hook.stall()  # apply accepted requests, hold their answers until release()

    async def main() -> None:
        w = worker(redis_url, config("hook", hook, max_items=1, concurrency=1, timeout=30), lease_ttl=0.3)
        async with running(w) as stop:
            await until(lambda: hook.stalled == 1, what="the first request held at the vendor")
            if how == "stop":
                stop.set()
            else:
                r.set(sk.lease, "other", px=60_000)  # another consumer holds the lease now
                await until(lambda: not w.lease.held, what="the renewal to see the lease lost")
            hook.release()
            await until(lambda: hook.busy() == 0, what="the held answer written back")
        # stopped and awaited: whatever the worker would still send has been sent by now

    asyncio.run(main())
    assert hook.last_seq() == 1, [(q.seq, q.keys) for q in hook.log]
    assert len(hook.applied) == 1
    assert r.hlen(sk.watermark) <= 1  # at most the item whose request finished is committed
    assert r.xpending(CHANGES, sk.group)["pending"] == 3  # the batch is left for the next holder
    assert hook.violations == []


def test_no_retry_after_stop(redis_url: str, r: redis.Redis, feed: Feed, make_vendor: Make) -> None:
    """The first attempt is answered 500; while the worker backs off (15 to 30 s here) it is told to
    stop: the wait ends at once and no further attempt is sent; nothing is committed or
    acknowledged."""
    hook = make_vendor("webhook")
    hook.fail_next(500)
    sk = SyncKeys("lp", "hook")
    feed.change("u1", {"cart_value": "1.00"})
    metrics = SyncMetrics()

    async def main() -> None:
        w = worker(redis_url, config("hook", hook, backoff_base=30, backoff_max=60), metrics=metrics)
        async with running(w) as stop:
            await until(lambda: sample(metrics, "liveprofile_sync_retries_total", destination="hook", reason="500") == 1,
                        what="the first attempt failed, the worker backing off")  # fmt: skip
            stop.set()

    asyncio.run(main())
    assert [q.status for q in hook.log] == [500]
    assert hook.last_seq() == 1 and hook.applied == []
    assert r.hlen(sk.watermark) == 0 and r.xlen(sk.dead_letter) == 0
    assert r.xpending(CHANGES, sk.group)["pending"] == 1


# -- 4. a new lease claims what the previous holder left pending --------------------------------------


def test_lease_calls_on_taken_each_time_it_is_newly_taken(redis_url: str, r: redis.Redis) -> None:
    """``on_taken`` runs when the lease is taken, not when it is renewed, and again when it is taken
    back after another consumer held it."""
    taken: list[str] = []
    key = SyncKeys("lp", "hook").lease

    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        lease = Lease(client, key, name="hook", consumer="a", ttl=5.0, gauge=SyncMetrics().lease.labels("hook"),
                      on_taken=lambda: taken.append("a"))  # fmt: skip
        assert await lease.acquire() and taken == ["a"]
        assert await lease.acquire() and taken == ["a"]  # renewed: not taken again
        r.set(key, "b", px=60_000)
        assert not await lease.acquire() and not lease.held and taken == ["a"]
        r.delete(key)  # b's lease gone (expired)
        assert await lease.acquire() and taken == ["a", "a"]
        await client.aclose()

    asyncio.run(main())


def test_new_lease_claims_what_the_previous_holder_left_pending(redis_url: str, r: redis.Redis, feed: Feed,
                                                                make_vendor: Make) -> None:  # fmt: skip
    """Worker ``a`` serves and has claimed once already; its lease expires and ``b`` takes it, reads a
    batch and dies without acknowledging it. When ``b``'s lease expires, ``a`` takes the lease again
    and its very next read is ``b``'s pending batch (claimed, not waited for as new entries), which
    it delivers and acknowledges. The parts are stepped as the worker loop runs them (lease,
    read, select, deliver, acknowledge), so the order of events is exact."""
    hook = make_vendor("webhook")
    sk = SyncKeys("lp", "hook")

    async def step(w: DestinationWorker) -> list[str]:
        changes, bad = await w.feed.next_batch()
        await w.delivery.dead_letter_malformed(bad)
        await w.delivery.deliver(await w.feed.select(changes))
        await w.feed.ack(changes, bad)
        return sorted(c.user_id for c in changes)

    async def main() -> None:
        a = worker(redis_url, config("hook", hook, url=f"{hook.url}/a"), consumer="a", lease_ttl=0.3)
        b = worker(redis_url, config("hook", hook, url=f"{hook.url}/b"), consumer="b", lease_ttl=0.3)
        for w in (a, b):
            w.delivery.open()
        try:
            await a.feed.ensure_groups()
            assert await a.lease.acquire()
            feed.change("u1", {"cart_value": "1.00"})
            assert await step(a) == ["u1"]  # claimed (nothing pending), then read as new
            await until(lambda: not r.exists(sk.lease), what="a's lease to expire (a renews nothing)")
            assert await b.lease.acquire() and not await a.lease.acquire()
            feed.change("u2", {"cart_value": "2.00"})
            feed.change("u3", {"cart_value": "3.00"})
            changes, _ = await b.feed.next_batch()  # b reads, then dies before delivering
            assert sorted(c.user_id for c in changes) == ["u2", "u3"]
            consumers = {c["name"].decode(): c["pending"] for c in r.xinfo_consumers(CHANGES, sk.group)}
            assert consumers == {"a": 0, "b": 2}
            await until(lambda: not r.exists(sk.lease), what="b's lease to expire")
            assert await a.lease.acquire()  # newly taken
            assert await step(a) == ["u2", "u3"], "the new holder did not claim b's pending entries"
        finally:
            for w in (a, b):
                await w.delivery.close()
                await w.feed.r.aclose()

    asyncio.run(main())
    assert covered(hook, feed)
    assert {q.path for q in hook.log} == {"/a"}
    assert r.xpending(CHANGES, sk.group)["pending"] == 0
    assert hook.violations == []


def test_a_new_holder_takes_the_whole_pending_batch_at_once(redis_url: str, r: redis.Redis, feed: Feed,
                                                            make_vendor: Make) -> None:  # fmt: skip
    """Holder ``b`` reads u1's versions 1 and 2 (and others) in one batch, sends u1 at version 2 —
    collapsed — and dies before committing or acknowledging. The next holder ``a`` reads in batches
    smaller than that pending batch, yet it takes every pending entry in one batch: so it never
    sends u1's version 1 after the version 2 the receiver already has (a receiver that de-duplicates
    on the item key would keep the stale values of version 1)."""
    hook = make_vendor("webhook")

    async def main() -> None:
        b = worker(redis_url, config("hook", hook, batch_size=10), consumer="b", lease_ttl=0.3)
        a = worker(redis_url, config("hook", hook, batch_size=2), consumer="a", lease_ttl=0.3)
        for w in (a, b):
            w.delivery.open()
        try:
            await b.feed.ensure_groups()
            assert await b.lease.acquire()
            feed.change("u0", {"cart_value": "0.00"})
            feed.change("u1", {"cart_value": "1.00"})
            feed.change("u1", {"cart_value": "2.00"})
            feed.change("u2", {"cart_value": "3.00"})
            changes, _ = await b.feed.next_batch()
            assert len(changes) == 4
            for req in b.delivery.dest.build(await b.feed.select(changes)):
                await b.delivery.send(req)  # sent, then b dies: nothing committed, nothing acknowledged
            assert {(rec["user_id"], rec["version"]) for rec in hook.unique.values()} == {("u0", 1), ("u1", 2), ("u2", 1)}
            await until(lambda: not r.exists(SyncKeys("lp", "hook").lease), what="b's lease to expire")
            assert await a.lease.acquire()
            changes, bad = await a.feed.next_batch()
            assert sorted((c.user_id, c.version) for c in changes) == [("u0", 1), ("u1", 1), ("u1", 2), ("u2", 1)]
            await a.delivery.deliver(await a.feed.select(changes))
            await a.feed.ack(changes, bad)
        finally:
            for w in (a, b):
                await w.delivery.close()
                await w.feed.r.aclose()

    asyncio.run(main())
    with hook.lock:
        got = [(rec["user_id"], rec["version"]) for rec in hook.unique.values()]
    assert got == [("u0", 1), ("u1", 2), ("u2", 1)], got  # nothing after u1's version 2 but duplicates
    assert hook.duplicates == 3
    assert r.xpending(CHANGES, SyncKeys("lp", "hook").group)["pending"] == 0
    assert hook.violations == []
