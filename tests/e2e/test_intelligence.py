"""Behavioural intelligence end to end on real Redis and real dataflow processes.

* quality on a labelled stream: bot-detection ROC AUC >= 0.95, top_category >= 90 %, every
  profile equal to the independent truth;
* a replayed history equals the truth (cart and abandonment, sessions, top category and
  decayed interests, RFM scores and segments); replaying it twice yields identical profiles;
* events shuffled out of order (inside the dedupe window) give the same profiles;
* identify-before and identify-after (across shards) give the same merged profile.

Fixed clocks and seeds: every stream is anchored at a fixed instant (``END_MS``), so the
shuffle's 6-hour blocks, and so the permutation tested, never depend on when the test runs.
The live runs (quality, merges) need wall time only for their timers (the stream clock is the
newest event time plus the wall time since); they wait on observable conditions.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

from bench.evaluate import evaluate
from bench.pipeline import load_buffer
from liveprofile.devtools.generate import GenConfig, expected_profiles, generate
from liveprofile.store.keys import Keys
from operators.routing import shard_of
from operators.timeutil import iso, parse_ts
from tests.e2e.helpers import (
    abandoned_feed,
    interest_mismatches,
    post_batches,
    profile_mismatches,
    wait_caught_up,
    wait_truth,
)
from tests.procs import base_env, start_collector, start_dataflow, wait_for
from tests.redis_server import free_port

K = Keys("lp")
#: Fields that are write metadata or online-model outputs (order-dependent by nature).
VOLATILE = {"version", "updated_at", "seq", "anomaly_score", "suspect", "purchase_propensity"}
END_MS = 1_714_564_800_000  # 2024-05-01T12:00:00Z, fixed
BLOCK_MS = 6 * 3_600_000


def snapshot(r: redis.Redis) -> tuple[dict[str, dict[str, str]], dict[str, set[str]]]:
    profiles = {}
    for key in r.scan_iter(K.profile("*")):
        p = {k.decode(): v.decode() for k, v in r.hgetall(key).items()}
        profiles[key.decode()] = {k: v for k, v in p.items() if k not in VOLATILE}
    segments = {k.decode(): {m.decode() for m in r.smembers(k)} for k in r.scan_iter(K.segment("*")) if not k.endswith(b":suspect")}
    return profiles, segments


def clear_outputs(r: redis.Redis) -> None:
    keep = set(r.scan_iter("lp:events:*"))
    for k in r.scan_iter("*"):
        if k not in keep:
            r.delete(k)


def run_to_end(redis_url: str, tmp: Path, name: str) -> None:
    env = base_env(redis_url, LIVEPROFILE_TIMESTAMP_MIN="2000-01-01T00:00:00Z")
    df = start_dataflow(env, tmp, flow="dataflows.profiles:get_flow(stop_at_end=True)", name=name)
    assert df.wait(300) == 0, df.output()


def test_quality_on_a_labelled_stream(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    """Bot detection and top-category quality on a labelled stream, read once every profile
    equals the truth (the condition that replaces a fixed sleep)."""
    gen = generate(GenConfig(users=400, seed=9, end_ms=END_MS, days=30, bots=10, duplicate_rate=0.02))
    load_buffer(redis_url, gen.events, 4)
    port = free_port()
    env = base_env(redis_url, LIVEPROFILE_TIMESTAMP_MIN="2000-01-01T00:00:00Z", BYTEWAX_DATAFLOW_API_ENABLED="1",
                   BYTEWAX_DATAFLOW_API_PORT=str(port))  # fmt: skip
    df = start_dataflow(env, tmp_path)
    try:
        wait_caught_up(r, timeout=300)
        mism = wait_truth(r, gen.truth, timeout=120, interests=gen.interests)
        assert not mism, (len(mism), mism[:10], df.output())
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        rep = evaluate(r, gen, text)
    finally:
        df.interrupt()
    print(rep.table(), file=sys.stderr)
    assert rep.bot_auc >= 0.95, rep.table()
    assert rep.precision >= 0.8 and rep.recall >= 0.8, rep.table()
    assert rep.top_category_accuracy >= 0.9, rep.table()
    assert rep.exact_profiles == rep.users, rep.table()


def test_replay_equals_truth_twice_and_out_of_order(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    """A finite replay equals the independent truth in every field it holds (cart,
    cart_abandoned, sessions, top category, RFM scores), interests within tolerance, and the
    truth's segment sets; a second replay gives identical profiles, and two fixed shuffled
    permutations equal the truth and the first run."""
    gen = generate(GenConfig(users=150, seed=21, end_ms=END_MS, days=20, duplicate_rate=0.03, bots=2))
    load_buffer(redis_url, gen.events, 4)
    run_to_end(redis_url, tmp_path, "run1")
    first = snapshot(r)
    mism = profile_mismatches(r, gen.truth)
    assert not mism, (len(mism), mism[:10])
    assert not interest_mismatches(r, gen.interests)[:5]
    want_segments: dict[str, set[str]] = {}
    for uid, t in gen.truth.items():
        for name in (t["rfm_segment"], f"interest:{t.get('top_category', '')}", "cart_abandoned" if t["cart_abandoned"] == "1" else ""):
            if name and not name.endswith(":"):
                want_segments.setdefault(K.segment(name), set()).add(uid)
    assert no_bot_interest(first[1], gen.bots) == want_segments  # the bots' top category is not in the truth
    assert len({t["rfm_segment"] for t in gen.truth.values()} - {""}) >= 5
    # every trigger in the feed is for a cart the truth abandoned (how many: see test_truth.py)
    assert {a["user_id"] for a in abandoned_feed(r)} <= {a["user_id"] for a in gen.abandonments}
    clear_outputs(r)
    run_to_end(redis_url, tmp_path, "run2")
    second = snapshot(r)
    assert first == second

    # The same events, shuffled inside 6-hour blocks of event time (well inside the 48 h window),
    # blocks aligned to END_MS (a fixed instant) and the shuffle seeded: the same permutations
    # every run. Seeds 1 and 3 are permutations known to catch the out-of-order cart bug fixed
    # in 583620a (both fail on the code before it; 5 of 8 seeds tried did not).
    for seed in (1, 3):
        r.flushall()
        load_buffer(redis_url, shuffle_in_blocks(gen.events, seed=seed), 4)
        run_to_end(redis_url, tmp_path, f"shuffled{seed}")
        mism = profile_mismatches(r, gen.truth)
        assert not mism, (seed, len(mism), mism[:10])
        third = snapshot(r)
        # Bots excepted from interest: the fixed bot rule gates interest updates on the session
        # as seen so far, so which of a scraper's events count depends on their order (a finding
        # reported in issue 10: docs/intelligence.md's "shuffled events give the same profile" is not true
        # of interest for users that rule flags). Everything else must be identical.
        bot_keys = {K.profile(b) for b in gen.bots}
        order_dependent = {"interests", "top_category", "interests_at"}
        diffs = [(k, f, first[0][k].get(f), third[0].get(k, {}).get(f)) for k in first[0] for f in first[0][k]
                 if first[0][k].get(f) != third[0].get(k, {}).get(f) and not (k in bot_keys and f in order_dependent)]  # fmt: skip
        assert not diffs, (seed, diffs[:10])
        assert set(first[0]) == set(third[0])
        assert no_bot_interest(first[1], gen.bots) == no_bot_interest(third[1], gen.bots)


def no_bot_interest(segs: dict[str, set[str]], bots: list[str]) -> dict[str, set[str]]:
    """Segment sets without the bots' interest memberships (order-dependent, see above)."""
    out = {k: (v - set(bots) if ":interest:" in k else v) for k, v in segs.items()}
    return {k: v for k, v in out.items() if v}


def shuffle_in_blocks(events: list[dict[str, Any]], seed: int, block_ms: int = BLOCK_MS) -> list[dict[str, Any]]:
    """The events in order of ``block_ms`` blocks of event time (aligned to ``END_MS``),
    shuffled inside each block with a seeded generator: the same permutation every run."""
    rnd = random.Random(seed)
    blocks: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        blocks.setdefault((END_MS - parse_ts(e["timestamp"])) // block_ms, []).append(e)
    out: list[dict[str, Any]] = []
    for b in sorted(blocks, reverse=True):
        evs = list(blocks[b])
        rnd.shuffle(evs)
        out += evs
    return out


def test_shuffle_is_fixed_and_stays_inside_its_blocks() -> None:
    """The permutation depends only on the events and the seed, and moves no event out of
    its block (so never further than 6 h, well inside the 48 h dedupe window)."""
    gen = generate(GenConfig(users=20, seed=21, end_ms=END_MS, days=3))
    a, b = shuffle_in_blocks(gen.events, 4), shuffle_in_blocks(gen.events, 4)
    assert a == b and a != gen.events and sorted(map(orjson.dumps, a)) == sorted(map(orjson.dumps, gen.events))
    blocks = [(END_MS - parse_ts(e["timestamp"])) // BLOCK_MS for e in a]
    assert blocks == sorted(blocks, reverse=True)


def _ids_on_different_shards() -> tuple[str, str]:
    for i in range(100):
        a, u = f"anon-{i}", f"user-{i}"
        if shard_of(a, 4) != shard_of(u, 4):
            return a, u
    raise AssertionError


def _merge_events(anon: str, user: str) -> tuple[list[dict], dict]:
    t0 = END_MS - 3_600_000
    anon_events = [
        {"type": "page", "anonymousId": anon, "messageId": f"{anon}-p", "timestamp": iso(t0), "name": "Home"},
        {"type": "track", "event": "Product Viewed", "anonymousId": anon, "messageId": f"{anon}-v", "timestamp": iso(t0 + 1000),
         "properties": {"product_id": "p1", "category": "Shoes", "price": 50}},
        {"type": "track", "event": "Product Added", "anonymousId": anon, "messageId": f"{anon}-a", "timestamp": iso(t0 + 2000),
         "properties": {"product_id": "p1", "category": "Shoes", "price": 50, "quantity": 2}},
        {"type": "track", "event": "Order Completed", "anonymousId": anon, "messageId": f"{anon}-o", "timestamp": iso(t0 + 3000),
         "properties": {"order_id": "o1", "revenue": 100, "products": [{"product_id": "p1", "category": "Shoes", "price": 50, "quantity": 2}]}},
    ]  # fmt: skip
    identify = {"type": "identify", "anonymousId": anon, "userId": user, "messageId": f"{user}-i", "timestamp": iso(t0 + 4000), "traits": {"email": "merge@example.com"}}
    return anon_events, identify


def _known_events(anon: str, user: str) -> list[dict]:
    t0 = END_MS - 3_000_000
    return [
        {"type": "track", "event": "Product Viewed", "userId": user, "messageId": f"{user}-v", "timestamp": iso(t0),
         "properties": {"product_id": "p2", "category": "Books", "price": 10}},
        {"type": "track", "event": "Product Viewed", "anonymousId": anon, "messageId": f"{anon}-late", "timestamp": iso(t0 + 1000),
         "properties": {"product_id": "p3", "category": "Shoes", "price": 20}},
    ]  # fmt: skip


def _merged_truth(user: str, events: list[dict]) -> dict[str, str]:
    """The independent truth of the merged user: every event, anonymous or not, as theirs."""
    as_user = [{**{k: v for k, v in e.items() if k != "anonymousId"}, "userId": user} for e in events]
    return expected_profiles(as_user).truth[user]


def _run_merge(redis_url: str, r: redis.Redis, tmp: Path, batches: list[list[dict]], name: str, tombstone: bool) -> dict[str, str]:
    env = base_env(redis_url, LIVEPROFILE_TIMESTAMP_MIN="2000-01-01T00:00:00Z")
    coll, url = start_collector(env, tmp)
    df = start_dataflow(env, tmp, name=name)
    try:
        for b in batches:
            post_batches(url, b)
            wait_caught_up(r)
        anon, user = _ids_on_different_shards()
        # settled: the merged profile equals the truth in every field (RFM scores arrive with the
        # population's edges, after the merge), and the anonymous profile is retired (if it existed)
        truth = _merged_truth(user, [e for b in batches for e in b])
        mism = wait_truth(r, {user: truth}, timeout=60)
        assert not mism, (mism, df.output())
        if tombstone:
            wait_for(lambda: r.hget(K.profile_anon(anon), "merged_into") == user.encode(), 30, 0.1, "the tombstone")
        return {k.decode(): v.decode() for k, v in r.hgetall(K.profile(user)).items() if k.decode() not in VOLATILE}
    finally:
        df.interrupt()
        coll.stop()


def test_identify_before_or_after_gives_the_same_merged_profile(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    anon, user = _ids_on_different_shards()
    anon_events, identify = _merge_events(anon, user)
    known = _known_events(anon, user)
    after = _run_merge(redis_url, r, tmp_path, [anon_events, [identify], known], "after", tombstone=True)
    retired = {k.decode(): v.decode() for k, v in r.hgetall(K.profile_anon(anon)).items()}
    assert retired.get("merged_into") == user and "event_count" not in retired
    changes = [orjson.loads(f[b"changed"]) for _, f in r.xrange(K.changes) if f[b"user_id"] == anon.encode() and f.get(b"anonymous") == b"1"]
    assert any(c.get("merged_into") == user for c in changes)
    r.flushall()
    before = _run_merge(redis_url, r, tmp_path, [[identify], anon_events, known], "before", tombstone=False)
    assert not r.exists(K.profile_anon(anon)) and not r.exists(K.profile(anon))
    assert after == before
    assert (after["event_count"], after["purchase_count"], after["revenue_total"], after["email"]) == ("7", "1", "100.00", "merge@example.com")
    assert after["top_category"] == "shoes"
