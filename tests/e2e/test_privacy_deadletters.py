"""GDPR forget/unsuppress and dead-letter re-drive, end to end on real processes."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import orjson
import redis

from liveprofile.store.keys import Keys
from operators.routing import shard_of
from tests.e2e.helpers import dead_letters, post_batches, wait_caught_up
from tests.procs import base_env, start_collector, start_dataflow, wait_for

K = Keys("lp")
#: Wall-relative on purpose: the collector's default plausibility bounds are relative to
#: receipt (LIVEPROFILE_MAX_EVENT_AGE 400 d), and the dead-letter test needs events that are
#: too old by that default bound and valid under a looser one.
NOW = int(time.time() * 1000) - 600_000
_markers = itertools.count()


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def cli(env: dict[str, str], *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "liveprofile.cli", *args], env=env, capture_output=True, text=True, check=True)
    return orjson.loads(out.stdout.strip().splitlines()[-1])


def order(uid: str, i: int, t: int, **kw: object) -> dict:
    return {"type": "track", "event": "Order Completed", "userId": uid, "messageId": f"{uid}-o{i}", "timestamp": iso(t),
            "properties": {"order_id": f"{uid}-{i}", "revenue": 10, "products": [{"product_id": "p1", "category": "Books", "price": 10}]}, **kw}  # fmt: skip


def profile(r: redis.Redis, uid: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(K.profile(uid)).items()}


def anon_profile(r: redis.Redis, anonymous_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(K.profile_anon(anonymous_id)).items()}


def processed_through(url: str, r: redis.Redis, uid: str) -> None:
    """Return once everything posted for ``uid`` so far has been through the (single-worker)
    dataflow and its sinks, so a negative check after it cannot pass merely because the
    dataflow is slow. Two marker users on ``uid``'s buffer shard each get one event: the first
    is read after ``uid``'s events (one shard is one stream, read in order); it is posted only
    after the first's profile exists, so the second is read in a later batch, whose writes the
    one worker makes only after those of every earlier batch."""
    shard = shard_of(uid, 4)
    for _ in range(2):
        m = next(f"marker-{i}" for i in _markers if shard_of(f"marker-{i}", 4) == shard)
        post_batches(url, [{"type": "page", "userId": m, "messageId": m, "timestamp": iso(NOW + 60_000), "name": "Home"}])
        wait_for(lambda m=m: profile(r, m).get("event_count") == "1", 30, 0.05, f"marker {m}")


def test_forget_erases_everywhere_and_suppresses_until_unsuppressed(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    env = base_env(redis_url)
    coll, url = start_collector(env, tmp_path)
    df = start_dataflow(env, tmp_path)
    try:
        anon = [{"type": "page", "anonymousId": "dev-1", "messageId": f"a{i}", "timestamp": iso(NOW + i), "name": "Home"} for i in range(3)]
        ident = {"type": "identify", "anonymousId": "dev-1", "userId": "u1", "messageId": "i1", "timestamp": iso(NOW + 10), "traits": {"email": "u1@example.com"}}
        post_batches(url, anon)
        wait_caught_up(r)
        post_batches(url, [ident, order("u1", 1, NOW + 20), order("u2", 1, NOW + 30), {"type": "track", "userId": "u1", "messageId": "bad"}])
        wait_caught_up(r)
        wait_for(lambda: profile(r, "u1").get("event_count") == "5" and profile(r, "u1").get("rfm_segment"), 30, 0.2, "u1 profile")
        assert anon_profile(r, "dev-1").get("merged_into") == "u1" and profile(r, "dev-1") == {}
        assert orjson.loads(profile(r, "u1")["anonymous_ids"]) == ["dev-1"]
        seg = profile(r, "u1")["rfm_segment"]
        assert r.sismember(K.segment(seg), "u1")

        stats = cli(env, "forget", "u1")
        assert stats["profiles"] == 2 and stats["buffered_events"] >= 5 and stats["dead_letters"] == 1
        assert profile(r, "u1") == {} and anon_profile(r, "dev-1") == {}
        assert not any(r.sismember(k, "u1") for k in r.scan_iter(K.segment("*")))
        # no sync destination reads the feed here: the deletion entry (it carries the email) goes at once
        assert [f for _, f in r.xrange(K.changes) if f[b"user_id"] in (b"u1", b"dev-1")] == []
        assert all(b'"u1"' not in f[b"e"] for i in range(4) for _, f in r.xrange(K.events(i)) if not f[b"e"].startswith(b'{"type":"_forget"'))
        assert not any(d.get("raw", "").find('"u1"') >= 0 for d in dead_letters(r))
        assert profile(r, "u2")["purchase_count"] == "1"  # others untouched

        # later events do not re-create the profile ...
        post_batches(url, [order("u1", 2, NOW + 40)])
        processed_through(url, r, "u1")
        assert profile(r, "u1") == {}
        # ... until the user is unsuppressed; the dataflow forgot their state
        assert cli(env, "unsuppress", "u1")["was_suppressed"] is True
        post_batches(url, [order("u1", 3, NOW + 50)])
        wait_caught_up(r)
        wait_for(lambda: profile(r, "u1").get("purchase_count") == "1", 30, 0.2, "fresh u1 profile")
        assert profile(r, "u1")["event_count"] == "1" and profile(r, "u1")["email"] == ""
    finally:
        df.interrupt()
        coll.stop()


def test_dead_letters_list_show_and_idempotent_redrive(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    env = base_env(redis_url)
    coll, url = start_collector(env, tmp_path)
    old = NOW - 3 * 365 * 86_400_000
    try:
        history = [order("h1", i, old + i * 86_400_000) for i in range(3)]
        post_batches(url, history + [{"type": "track", "userId": "h1", "messageId": "no-event"}])
        listing = subprocess.run([sys.executable, "-m", "liveprofile.cli", "deadletter", "list"], env=env, capture_output=True, text=True, check=True).stdout
        assert '"timestamp_too_old": 3' in listing and '"missing_event": 1' in listing
        first = dead_letters(r)[0]
        some_id = r.xrange(K.dead_letter, count=1)[0][0].decode()
        shown = subprocess.run([sys.executable, "-m", "liveprofile.cli", "deadletter", "show", some_id], env=env, capture_output=True, text=True, check=True).stdout
        assert first["message_id"] in shown and '"reason": "timestamp_too_old"' in shown
    finally:
        coll.stop()

    env_old = base_env(redis_url, LIVEPROFILE_TIMESTAMP_MIN="2000-01-01T00:00:00Z")
    # the client had already re-sent one of them, fixed, and it was counted
    fixed = dict(history[0], timestamp=iso(NOW))
    coll, url = start_collector(env_old, tmp_path)
    df = start_dataflow(env_old, tmp_path)
    try:
        post_batches(url, [fixed])
        wait_caught_up(r)
        assert cli(env_old, "deadletter", "replay", "--dry-run", "--reason", "timestamp_too_old")["redriven"] == 3
        stats = cli(env_old, "deadletter", "replay", "--reason", "timestamp_too_old")
        assert stats["redriven"] == 3
        assert cli(env_old, "deadletter", "replay", "--reason", "timestamp_too_old")["selected"] == 0  # idempotent
        still = cli(env_old, "deadletter", "replay", "--all")
        assert still["redriven"] == 0 and still["still_invalid"] == {"missing_event": 1}
        wait_caught_up(r)
        wait_for(lambda: profile(r, "h1").get("purchase_count") == "3", 30, 0.2, "re-driven history")
        assert profile(r, "h1")["revenue_total"] == "30.00"  # the already-counted order is not counted twice
        assert r.xlen(K.dead_letter_redriven) == 3 and r.xlen(K.dead_letter) == 1
    finally:
        df.interrupt()
        coll.stop()
