"""Complete erasure (issue 12 item 5), end to end on real processes: after ``liveprofile forget`` no key
and no stream entry in Redis names the user (id, email, anonymous id) except the suppression record,
and later events of the user are answered 2xx and leave nothing.

The run exercises every store that can hold the user: the collector (accepted events with a padded
user id, a dead letter, an oversize dead letter whose raw is cut before its ``userId``), the dataflow
(profiles, an anonymous profile merged by identify, a known user merged in by ``alias``, audience
sets and the change feed's audience transitions under a definitions file), the ESP
sync (a real ``liveprofile.sync`` process delivering to a fake webhook destination that refuses the
user once: a sync dead letter, then the deletions) and the profile API (an experiment exposure and
its ``Experiment Viewed`` event)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import redis

from liveprofile.store.keys import Keys
from liveprofile.sync.model import SyncKeys
from tests.api.conftest import ApiServer
from tests.e2e.helpers import post_batches, wait_caught_up
from tests.procs import base_env, start_collector, start_dataflow, wait_for
from tests.sync.fakes import FakeVendor
from tests.sync.helpers import dest, start_syncer

K = Keys("lp")
#: wall-relative on purpose (as in test_privacy_deadletters): the collector's plausibility bounds are
#: relative to receipt; every event time below is a fixed offset from it
T0 = int(time.time() * 1000) - 600_000
#: what must not be left anywhere: the user id, the merged user's id (it contains the first), the
#: email (``Carol@Example.com``: contains it too, case aside) and the anonymous id
NEEDLES = re.compile(rb"carol|dev-c", re.IGNORECASE)


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _values(r: redis.Redis, key: bytes) -> Iterator[tuple[str, bytes]]:
    """Every value stored at ``key`` (SCAN + TYPE + read), as (where, bytes)."""
    kind = r.type(key).decode()
    if kind == "string":
        yield "value", r.get(key) or b""
    elif kind == "hash":
        for f, v in r.hgetall(key).items():
            yield "field", f
            yield f"field {f!r}", v
    elif kind == "set":
        for m in r.smembers(key):
            yield "member", m
    elif kind == "zset":
        for m, _ in r.zrange(key, 0, -1, withscores=True):
            yield "member", m
    elif kind == "list":
        for v in r.lrange(key, 0, -1):
            yield "item", v
    elif kind == "stream":
        for eid, fields in r.xrange(key):
            for f, v in fields.items():
                yield f"entry {eid.decode()} {f.decode()}", v
        for g in r.xinfo_groups(key):
            yield "group", str(g["name"]).encode()
    else:
        yield f"unknown type {kind}", b"carol"  # an unexpected type fails the scan: read it here first


def traces(r: redis.Redis) -> list[str]:
    """Where the user is still named, except the suppression record (the suppressed set, and the
    ``_forget`` control entries the dataflow reads, until the buffer is trimmed past them)."""
    found = []
    for key in r.scan_iter(count=1000):
        if NEEDLES.search(key):
            found.append(f"key {key!r}")
        if key == K.suppressed.encode():
            continue
        for where, v in _values(r, key):
            if NEEDLES.search(v) and not (key.startswith(b"lp:events:") and v.startswith(b'{"type":"_forget"')):
                found.append(f"{key.decode()} {where}: {v[:160]!r}")
    return found


def cli(env: dict[str, str], *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "liveprofile.cli", *args], env=env, capture_output=True, text=True, check=True)
    return orjson.loads(out.stdout.strip().splitlines()[-1])


def profile(r: redis.Redis, uid: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(K.profile(uid)).items()}


def order(uid: str, n: int, t: int) -> dict:
    return {"type": "track", "event": "Order Completed", "userId": uid, "messageId": f"o-{uid.strip()}-{n}", "timestamp": iso(t),
            "properties": {"order_id": f"{uid.strip()}-{n}", "revenue": 12, "products": [{"product_id": "p1", "category": "Books", "price": 12}]}}  # fmt: skip


def test_forget_by_email_leaves_nothing_but_the_suppression_record(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    defs = tmp_path / "definitions.yaml"  # computed traits and audiences: carol is in two audience sets
    defs.write_text("version: 1\ncomputed_traits:\n  - {name: orders, kind: count, event: Order Completed}\n"
                    "audiences:\n  - {name: buyers, when: computed.orders >= 1}\n  - {name: known, when: email != null}\n")  # fmt: skip
    env = base_env(redis_url, LIVEPROFILE_DEBUGGER="on", LIVEPROFILE_DEFINITIONS=str(defs))  # the source debugger's tap is scanned too
    hook = FakeVendor("webhook")
    hook.refuse_users = {"carol"}  # the sync dead-letters carol's profile once
    coll, url = start_collector(env, tmp_path)
    df = start_dataflow(env, tmp_path)
    sync = start_syncer(redis_url, dest("hook", hook), tmp_path, "s1")
    api = None
    try:
        first = [
            {"type": "page", "anonymousId": "dev-c", "messageId": "e1", "timestamp": iso(T0), "name": "Home"},
            {"type": "identify", "userId": "carol-old", "messageId": "e2", "timestamp": iso(T0 + 1), "traits": {"email": "Carol@Example.com"}},
            {"type": "identify", "userId": "dave", "messageId": "e3", "timestamp": iso(T0 + 2), "traits": {"email": "dave@example.com"}},
            order("dave", 1, T0 + 3),
        ]
        post_batches(url, first)
        wait_caught_up(r)
        wait_for(lambda: profile(r, "carol-old").get("email") == "Carol@Example.com", 30, 0.1, "carol-old's profile")
        second = [
            {"type": "identify", "anonymousId": "dev-c", "userId": " carol ", "messageId": "e4", "timestamp": iso(T0 + 10),
             "traits": {"email": " Carol@Example.com "}},  # fmt: skip
            order(" carol", 1, T0 + 11),
            {"type": "alias", "previousId": "carol-old", "userId": "carol", "messageId": "e5", "timestamp": iso(T0 + 12)},
            {"type": "track", "userId": "carol", "messageId": "e6", "timestamp": iso(T0 + 13)},  # no event: a dead letter
            # oversize: a dead letter whose raw is cut before it reaches the userId
            {"type": "track", "event": "Viewed", "properties": {"blob": "x" * 40_000}, "messageId": "e7", "timestamp": iso(T0 + 14), "userId": "carol"},
        ]
        post_batches(url, second)
        wait_caught_up(r)
        wait_for(lambda: profile(r, "carol").get("purchase_count") == "1" and profile(r, "carol-old").get("merged_into") == "carol",
                 30, 0.1, "carol's profile and the merge")  # fmt: skip
        assert "dev-c" in orjson.loads(profile(r, "carol")["anonymous_ids"])
        assert r.sismember(K.audience_in(0, "buyers"), "carol") and r.sismember(K.audience_in(0, "known"), "carol")
        assert {d[b"reason"] for _, d in r.xrange(K.dead_letter)} == {b"missing_event", b"event_too_large"}

        api = ApiServer(redis_url)
        assert api.get("/v1/profiles/carol", params={"expose": "1"}).status_code == 200
        assert r.hexists(K.exposures_in(0, "subject"), "carol")
        wait_caught_up(r)  # the exposure's Experiment Viewed event
        wait_for(lambda: r.xlen(SyncKeys("lp", "hook").dead_letter) >= 1, 30, 0.1, "carol's sync dead letter")
        wait_for(lambda: any(rec["user_id"] == "dave" for rec in hook.applied), 30, 0.1, "dave delivered")
        hook.refuse_users.clear()
        assert traces(r), "the run left nothing of carol to erase: the test would prove nothing"
        tapped = {(e["uid"], e["aid"], e["pid"]) for _, f in r.xrange(K.debug_events) for e in orjson.loads(f[b"d"])}
        assert {("carol", "dev-c", ""), ("carol", "", "carol-old"), ("", "dev-c", "")} <= tapped, tapped

        stats = cli(env, "forget", "--email", "carol@example.com")
        assert stats["users"] == ["carol", "carol-old"] and "dev-c" in stats["anonymous_ids"]

        def deleted(uid: str) -> bool:
            with hook.lock:
                return any(rec["user_id"] == uid and rec["deleted"] for rec in hook.applied)

        wait_for(lambda: deleted("carol") and deleted("carol-old"), 30, 0.1, "the deletions delivered")
        wait_for(lambda: not any(NEEDLES.search(f.get(b"user_id", b"")) for _, f in r.xrange(K.changes)), 30, 0.1,
                 "the delivered deletions gone from the change feed")  # fmt: skip
        assert traces(r) == []
        assert profile(r, "dave")["purchase_count"] == "1"  # others untouched
        assert r.smembers(K.audience_in(0, "buyers")) == {b"dave"}

        # later events of the user, by any of their ids, are answered 2xx and leave nothing
        late = [order(" carol", 2, T0 + 20), {"type": "page", "anonymousId": "dev-c", "messageId": "e8", "timestamp": iso(T0 + 21)},
                {"type": "track", "userId": "carol-old", "messageId": "e9", "timestamp": iso(T0 + 22)}, order("dave", 2, T0 + 23)]  # fmt: skip
        for ev in late:
            res = httpx.post(url + "/v1/batch", json={"batch": [ev]}, auth=("test-key", ""), timeout=10)
            assert res.status_code == 200, res.text
        wait_for(lambda: profile(r, "dave").get("purchase_count") == "2", 30, 0.1, "dave's later order (the barrier)")
        assert traces(r) == []
        metrics = httpx.get(url + "/metrics", timeout=5).text
        assert "liveprofile_collector_events_suppressed_total 3.0" in metrics
        assert hook.violations == []
    finally:
        if api is not None:
            api.stop()
        sync.stop()
        df.interrupt()
        coll.stop()
        hook.close()
