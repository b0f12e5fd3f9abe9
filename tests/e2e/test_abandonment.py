"""Cart abandonment end to end: the real dataflow process (``python -m bytewax.run
dataflows.profiles:flow``, live: it never stops at the end of the buffer) on real Redis.

Proved, on hand-made events whose expected triggers come from the independent truth
(:func:`liveprofile.devtools.generate.expected_profiles`):

* an idle cart is abandoned by the live timer alone (no further event: the stream clock
  runs on with wall time past the deadline): exactly one ``Cart Abandoned`` change-feed entry
  with the cart's lines and value, ``cart_abandoned=1`` on the profile, the user in the
  ``cart_abandoned`` segment; a later order clears all three and adds no trigger;
* an order before the deadline prevents it, a removal that empties the cart prevents it,
  another cart change postpones it to its own deadline (one entry, at that deadline);
* a forged future timestamp (within ``LIVEPROFILE_MAX_FUTURE_SKEW`` of its receipt) advances
  the shared stream clock only to its receipt time, so it fires no other user's timer early;
  one beyond the skew is dead-lettered (``timestamp_in_future``) and moves nothing.

Fixed clocks: every event time is anchored at a fixed instant and the events carry their own
``receivedAt`` (written straight into the buffer, as the collector stores them), so
validation and the receipt clamp do not depend on when the test runs. Only the live timers
need wall time, by design: the stream clock is the newest event time plus the wall time
since, so the test's deadlines lie a few seconds of wall time after the newest event.
Negative checks never follow a sleep: they are made once a *later* deadline (a sentinel's)
has fired and a barrier event written after it has been processed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import redis

from liveprofile.devtools.generate import expected_profiles
from operators.routing import shard_of
from operators.timeutil import iso
from tests.e2e.helpers import K, abandoned_feed, abandonment_mismatches, dead_letters
from tests.procs import base_env, start_dataflow, wait_for

T0 = 1_714_564_800_000  # 2024-05-01T12:00:00Z: the newest legitimate event time
WINDOW_MS = 10_000  # LIVEPROFILE_CART_ABANDON_WINDOW of this test
RECEIVED = iso(T0 + 1)  # receipt of every event: the forged one's clamp is then unique
SHARDS = 4


def _ev(uid: str, ms: int, name: str, n: int, /, **props: Any) -> dict[str, Any]:
    return {"type": "track", "event": name, "userId": uid, "messageId": f"{uid}-{n}", "timestamp": iso(ms),
            "receivedAt": RECEIVED, "properties": props}  # fmt: skip


def _line(pid: str, price: float, qty: int) -> dict[str, Any]:
    return {"product_id": pid, "name": f"Item {pid}", "category": "Toys", "price": price, "quantity": qty}


def _append(r: redis.Redis, events: list[dict[str, Any]]) -> None:
    """Append events to their buffer shards exactly as the collector stores them."""
    pipe = r.pipeline(transaction=False)
    for ev in events:
        pipe.xadd(K.events(shard_of(ev["userId"], SHARDS)), {"e": orjson.dumps(ev)})
    pipe.execute()


def _scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(legitimate events, forged events). Deadlines: idle T0+1 s, sentinel T0+4 s,
    victim and postponed T0+10 s; ordered and emptied would have had T0+1 s."""
    w, a, b = WINDOW_MS, _line("p1", 12.5, 2), _line("p2", 3.25, 1)
    legit = [
        _ev("idle", T0 - w + 1000, "Product Added", 1, **a),
        _ev("idle", T0 - w + 1200, "Product Viewed", 2, **b),  # not a cart change: no postponement
        _ev("ordered", T0 - w + 1000, "Product Added", 1, **a),
        _ev("ordered", T0 - w + 2000, "Order Completed", 2, order_id="o1", revenue=25.0, products=[a]),
        _ev("emptied", T0 - w + 1000, "Product Added", 1, **a),
        _ev("emptied", T0 - w + 1500, "Product Removed", 2, **a),
        _ev("postponed", T0 - w + 1000, "Product Added", 1, **a),
        _ev("postponed", T0, "Product Added", 2, **b),
        _ev("victim", T0, "Product Added", 1, **b),
        _ev("sentinel", T0 - w + 4000, "Product Added", 1, **b),
    ]
    forged = [
        _ev("forger", T0 + 50 * 60_000, "Product Viewed", 1, **b),  # within the 1 h skew of its receipt
        _ev("far", T0 + 2 * 3_600_000, "Product Viewed", 1, **b),  # beyond it
    ]
    return legit, forged


def _profile(r: redis.Redis, uid: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(K.profile(uid)).items()}


def _triggers(r: redis.Redis, uid: str) -> list[dict[str, Any]]:
    return [a for a in abandoned_feed(r) if a["user_id"] == uid]


def _barrier(r: redis.Redis, n: int) -> None:
    """Write an event that cannot move the clock (a day old) and wait until it is processed:
    everything the dataflow emitted before it has been written."""
    uid = f"barrier{n}"
    _append(r, [_ev(uid, T0 - 86_400_000, "Product Viewed", 1, **_line("p9", 1.0, 1))])
    wait_for(lambda: r.exists(K.profile(uid)), 60, 0.05, f"barrier {n}")


def test_live_timers_abandon_idle_carts_once_and_forged_times_fire_nothing_early(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    legit, forged = _scenario()
    # the independent truth of the legitimate events once the clock passed every deadline
    want = expected_profiles(legit, abandon_ms=WINDOW_MS, clock_ms=T0 + WINDOW_MS)
    assert {a["user_id"] for a in want.abandonments} == {"idle", "sentinel", "victim", "postponed"}
    _append(r, legit + forged)
    env = base_env(redis_url, LIVEPROFILE_TIMESTAMP_MIN="2000-01-01T00:00:00Z", LIVEPROFILE_SHARDS=str(SHARDS),
                   LIVEPROFILE_CART_ABANDON_WINDOW=f"{WINDOW_MS // 1000}s", LIVEPROFILE_TIMER_RECHECK="0.5s")  # fmt: skip
    df = start_dataflow(env, tmp_path)
    try:
        # the shared stream clock (published per shard) took the forged event at its receipt time
        def clock() -> int:
            return max((int(v) for k, v in r.hgetall(K.buffer_progress).items() if k.startswith(b"t")), default=-1)

        wait_for(lambda: clock() > T0, 60, 0.05, f"the forged event to reach the shared clock ({df.output()})")
        assert clock() == T0 + 1, f"a forged timestamp moved the stream clock to {iso(clock())}"
        wait_for(lambda: any(d["message_id"] == "far-1" for d in dead_letters(r)), 30, 0.05, "the far-future dead letter")
        assert [d["reason"] for d in dead_letters(r)] == ["timestamp_in_future"]
        assert _profile(r, "forger")["last_seen_at"] == iso(T0 + 50 * 60_000)  # accepted, not dropped
        assert not r.exists(K.profile("far"))

        # the sentinel's deadline (T0 + 4 s) passes by the live timer alone; by then every earlier
        # deadline has too, and the forged clock would already have fired the T0 + 10 s ones
        wait_for(lambda: _triggers(r, "sentinel"), 60, 0.05, f"the sentinel's abandonment ({df.output()})")
        _barrier(r, 1)
        assert len(_triggers(r, "idle")) == 1
        assert _profile(r, "idle")["cart_abandoned"] == "1"
        assert r.sismember(K.segment("cart_abandoned"), "idle")
        for uid in ("ordered", "emptied"):  # prevented: an order, a removal emptying the cart
            assert _triggers(r, uid) == [] and _profile(r, uid)["cart_abandoned"] == "0", uid
            assert not r.sismember(K.segment("cart_abandoned"), uid)
        for uid in ("victim", "postponed"):  # not early: neither the forged clock nor the first add
            assert _triggers(r, uid) == [] and _profile(r, uid)["cart_abandoned"] == "0", uid

        # their own deadline passes: once each, at that deadline
        wait_for(lambda: _triggers(r, "victim") and _triggers(r, "postponed"), 60, 0.05, "the T0 + 10 s abandonments")
        _barrier(r, 2)
        assert abandonment_mismatches(r, want.abandonments) == {}
        assert [a["ts"] for a in _triggers(r, "postponed")] == [iso(T0 + WINDOW_MS)]
        for uid in ("idle", "sentinel", "victim", "postponed"):
            assert _profile(r, uid)["cart_abandoned"] == "1", uid
            assert {f: _profile(r, uid)[f] for f in ("cart", "cart_items", "cart_value")} == {
                f: want.truth[uid][f] for f in ("cart", "cart_items", "cart_value")}, uid
        assert r.smembers(K.segment("cart_abandoned")) == {b"idle", b"sentinel", b"victim", b"postponed"}

        # an order after the abandonment clears the cart, the flag and the segment; no new trigger
        _append(r, [_ev("idle", T0 + 2000, "Order Completed", 3, order_id="o2", revenue=25.0, products=[_line("p1", 12.5, 2)])])
        wait_for(lambda: _profile(r, "idle").get("purchase_count") == "1", 60, 0.05, "the late order")
        assert (_profile(r, "idle")["cart_abandoned"], _profile(r, "idle")["cart_items"]) == ("0", "0")
        assert not r.sismember(K.segment("cart_abandoned"), "idle")
        _barrier(r, 3)
        assert abandonment_mismatches(r, want.abandonments) == {}
    finally:
        df.interrupt()
