"""Behavioural intelligence end to end on real Redis and real dataflow processes.

* quality on a labelled stream: bot-detection ROC AUC >= 0.95, top_category >= 90 %;
* replaying the same history twice yields identical RFM, interest and segments;
* events shuffled out of order (inside the dedupe window) give the same profiles;
* identify-before and identify-after (across shards) give the same merged profile.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import orjson
import redis

from bench.evaluate import run as evaluate_run
from bench.pipeline import load_buffer
from liveprofile.generate import GenConfig, generate
from liveprofile.keys import Keys
from operators.routing import shard_of
from tests.e2e.helpers import post_batches, wait_caught_up
from tests.procs import base_env, start_collector, start_dataflow, wait_for

K = Keys("lp")
#: Fields that are write metadata or online-model outputs (order-dependent by nature).
VOLATILE = {"version", "updated_at", "seq", "anomaly_score", "suspect", "purchase_propensity"}
END_MS = int(time.time() * 1000) - 6 * 3_600_000


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


def test_quality_on_a_labelled_stream(tmp_path: Path) -> None:
    rep = evaluate_run(400, 10, 9, tmp_path)
    print(rep.table(), file=sys.stderr)
    assert rep.bot_auc >= 0.95, rep.table()
    assert rep.precision >= 0.8 and rep.recall >= 0.8, rep.table()
    assert rep.top_category_accuracy >= 0.9, rep.table()
    assert rep.exact_profiles == rep.users, rep.table()


def test_replay_twice_and_out_of_order_give_identical_profiles(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    gen = generate(GenConfig(users=150, seed=21, end_ms=END_MS, days=20, duplicate_rate=0.03))
    load_buffer(redis_url, gen.events, 4)
    run_to_end(redis_url, tmp_path, "run1")
    first = snapshot(r)
    assert any("rfm_segment" in p and p["rfm_segment"] for p in first[0].values())
    assert first[1], "segments were written"
    clear_outputs(r)
    run_to_end(redis_url, tmp_path, "run2")
    second = snapshot(r)
    assert first == second

    # the same events, shuffled inside 6-hour blocks of event time (well inside the 48 h window)
    r.flushall()
    rnd = random.Random(4)
    blocks: dict[int, list[dict]] = {}
    for e in gen.events:
        t = int(time.mktime(time.strptime(e["timestamp"][:19], "%Y-%m-%dT%H:%M:%S")))
        blocks.setdefault(t // 21600, []).append(e)
    shuffled = []
    for b in sorted(blocks):
        evs = blocks[b]
        rnd.shuffle(evs)
        shuffled += evs
    load_buffer(redis_url, shuffled, 4)
    run_to_end(redis_url, tmp_path, "run3")
    third = snapshot(r)
    diffs = [(k, f, first[0][k].get(f), third[0].get(k, {}).get(f)) for k in first[0] for f in first[0][k] if first[0][k].get(f) != third[0].get(k, {}).get(f)]
    assert not diffs, diffs[:10]
    assert first[1] == third[1]


def _ids_on_different_shards() -> tuple[str, str]:
    for i in range(100):
        a, u = f"anon-{i}", f"user-{i}"
        if shard_of(a, 4) != shard_of(u, 4):
            return a, u
    raise AssertionError


def _merge_events(anon: str, user: str) -> tuple[list[dict], dict]:
    t0 = END_MS - 3_600_000
    iso = lambda ms: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"  # noqa: E731
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
    iso = lambda ms: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"  # noqa: E731
    return [
        {"type": "track", "event": "Product Viewed", "userId": user, "messageId": f"{user}-v", "timestamp": iso(t0),
         "properties": {"product_id": "p2", "category": "Books", "price": 10}},
        {"type": "track", "event": "Product Viewed", "anonymousId": anon, "messageId": f"{anon}-late", "timestamp": iso(t0 + 1000),
         "properties": {"product_id": "p3", "category": "Shoes", "price": 20}},
    ]  # fmt: skip


def _run_merge(redis_url: str, r: redis.Redis, tmp: Path, batches: list[list[dict]], name: str) -> dict[str, str]:
    env = base_env(redis_url, LIVEPROFILE_TIMESTAMP_MIN="2000-01-01T00:00:00Z")
    coll, url = start_collector(env, tmp)
    df = start_dataflow(env, tmp, name=name)
    try:
        for b in batches:
            post_batches(url, b)
            wait_caught_up(r)
        anon, user = _ids_on_different_shards()
        wait_for(lambda: r.hget(K.profile(user), "event_count") == b"7", 60, 0.2, f"merged profile ({df.output()})")
        time.sleep(1.0)
        return {k.decode(): v.decode() for k, v in r.hgetall(K.profile(user)).items() if k.decode() not in VOLATILE}
    finally:
        df.interrupt()
        coll.stop()


def test_identify_before_or_after_gives_the_same_merged_profile(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    anon, user = _ids_on_different_shards()
    anon_events, identify = _merge_events(anon, user)
    known = _known_events(anon, user)
    after = _run_merge(redis_url, r, tmp_path, [anon_events, [identify], known], "after")
    retired = {k.decode(): v.decode() for k, v in r.hgetall(K.profile(anon)).items()}
    assert retired.get("merged_into") == user and "event_count" not in retired
    changes = [orjson.loads(f[b"changed"]) for _, f in r.xrange(K.changes) if f[b"user_id"] == anon.encode()]
    assert any(c.get("merged_into") == user for c in changes)
    r.flushall()
    before = _run_merge(redis_url, r, tmp_path, [[identify], anon_events, known], "before")
    assert not r.exists(K.profile(anon))
    assert after == before
    assert (after["event_count"], after["purchase_count"], after["revenue_total"], after["email"]) == ("7", "1", "100.00", "merge@example.com")
    assert after["top_category"] == "shoes"
