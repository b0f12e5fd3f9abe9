"""End to end on a real 3-master Redis Cluster (``LIVEPROFILE_REDIS_CLUSTER=on``).

The collector, ``python -m bytewax.run dataflows.profiles:flow`` (with recovery)
and ``liveprofile sync`` (a webhook destination: a fake receiver on loopback)
run as processes against a cluster of three ``redis-server --cluster-enabled
yes`` joined by ``redis-cli --cluster create``; the API runs in-process. A
generated stream (duplicates, invalid events, bots, identity merges) goes in
through ``/v1/batch``; the sync is ``kill -9``-ed once mid-stream and restarted.

Asserted: every profile equals the generator's truth; every invalid event is
dead-lettered; the change feed is spread over every group and never repeats a
(user, version), each entry in its user's group; segments live in many groups;
the webhook receiver got every change of every user exactly once, in order
(de-duplicated by idempotency key, as receivers are told to, after the kill);
the API reads profiles and pages a segment across the groups; and the keys
really are spread over the three masters.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import orjson
import redis

from liveprofile.devtools.generate import GenConfig, generate
from liveprofile.store.keys import Keys
from liveprofile.sync.model import SyncKeys
from tests.api.conftest import ApiServer
from tests.e2e.helpers import dead_letters, post_batches, wait_caught_up, wait_truth
from tests.procs import Proc, base_env, start_collector, start_dataflow
from tests.redis_cluster import RedisCluster3
from tests.sync.fakes import FakeVendor
from tests.sync.helpers import assert_exactly_once_in_order, dest, wait_until

G = 16
K = Keys("lp", cluster_groups=G)
NOW_MS = int(time.time() * 1000) - 120_000
CLUSTER_ENV = {"LIVEPROFILE_REDIS_CLUSTER": "on", "LIVEPROFILE_CLUSTER_GROUPS": str(G)}


def start_sync(env: dict[str, str], vendor: FakeVendor, tmp: Path, name: str) -> Proc:
    cfg = dest("hook", vendor, max_items=50, batch_size=300)
    sync_env = {**env, "LIVEPROFILE_SYNC_DESTINATIONS": orjson.dumps(cfg).decode(), "LIVEPROFILE_SYNC_LEASE_TTL": "1",
                "LIVEPROFILE_SYNC_METRICS_PORT": "0", "LIVEPROFILE_SYNC_CONSUMER": name}  # fmt: skip
    return Proc([sys.executable, "-m", "liveprofile.sync"], sync_env, tmp / f"{name}.log")


def feed_versions(rc: redis.RedisCluster) -> dict[str, int]:
    """Newest version per user over every group's change feed (checking each entry's group)."""
    latest: dict[str, int] = {}
    seen: set[tuple[str, int]] = set()
    for g in K.groups:
        for _, f in rc.xrange(K.changes_in(g)):
            uid, v = f[b"user_id"].decode(), int(f[b"version"])
            assert K.group(uid) == g, (uid, g)
            assert (uid, v) not in seen, (uid, v)
            seen.add((uid, v))
            latest[uid] = max(latest.get(uid, 0), v)
    return latest


def test_pipeline_on_a_redis_cluster(redis_cluster: RedisCluster3, cluster_url: str, rc: redis.RedisCluster, tmp_path: Path) -> None:
    gen = generate(GenConfig(users=300, seed=11, end_ms=NOW_MS, days=10, duplicate_rate=0.03, invalid_rate=0.02, bots=3))
    env = base_env(cluster_url, **CLUSTER_ENV)
    rec = tmp_path / "rec"
    rec.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec), "1"], check=True)
    vendor = FakeVendor("webhook")
    coll, url = start_collector(env, tmp_path)
    df = start_dataflow(env, tmp_path, recovery=rec)
    sync = start_sync(env, vendor, tmp_path, "sync-1")
    api = None
    try:
        n = len(gen.events)
        post_batches(url, gen.events[: n // 2])
        wait_until(lambda: len(vendor.unique) > 50, 60, f"first deliveries ({sync.output()})")
        sync.kill9()  # mid-stream: its lease expires, a new process claims what was in flight
        post_batches(url, gen.events[n // 2 :])
        sync = start_sync(env, vendor, tmp_path, "sync-2")

        wait_caught_up(rc, keys=K)
        mism = wait_truth(rc, gen.truth, keys=K)
        assert not mism, (len(mism), mism[:10], df.output())
        got = {d["message_id"]: d["reason"] for d in dead_letters(rc, K) if d["message_id"]}
        assert all(got.get(i["messageId"]) == i["reason"] for i in gen.invalid)

        # the change feed: every group used, each entry in its user's group, no (user, version) twice
        versions = feed_versions(rc)
        assert all(rc.xlen(K.changes_in(g)) > 0 for g in K.groups)
        assert set(gen.truth) <= set(versions)

        # segments in many groups
        seg_groups = {g for g in K.groups if any(True for _ in rc.scan_iter(match=K.segment_pattern(g), count=1000))}
        assert len(seg_groups) == G, seg_groups

        # the sync: every change delivered exactly once per (user, version), in order. The feed may
        # still move (model patches, RFM rescoring): compare against a snapshot the receiver matches.
        settled: dict[str, int] = {}

        def done() -> bool:
            nonlocal settled
            settled = feed_versions(rc)
            with vendor.lock:
                have: dict[str, int] = {}
                for rec_ in vendor.unique.values():
                    have[rec_["user_id"]] = max(have.get(rec_["user_id"], 0), rec_["version"])
            return have == settled

        wait_until(done, 60, f"the sync to deliver everything ({sync.output()})")
        assert vendor.violations == []
        assert vendor.duplicates <= 50 * 4  # at most the requests in flight at the kill came twice (same keys)
        assert_exactly_once_in_order(vendor, SimpleNamespace(versions=settled))  # type: ignore[arg-type]
        sk = SyncKeys("lp", "hook", G)
        assert sum(rc.xlen(sk.dead_letter_in(g)) for g in K.groups) == 0
        wait_until(lambda: all(rc.xpending(K.changes_in(g), sk.group)["pending"] == 0 for g in K.groups), 10, "acks")

        # the API reads profiles from their groups and pages a segment across all groups
        api = ApiServer(cluster_url, **CLUSTER_ENV)
        for uid in list(gen.truth)[:25]:
            body = api.get(f"/v1/profiles/{uid}").json()
            assert body["event_count"] == gen.truth[uid]["event_count"] and body["user_id"] == uid
        name = max(((K.segment_name(k), rc.scard(k)) for k in rc.scan_iter(match=K.segment_pattern(), count=1000)), key=lambda x: x[1])[0]
        expect = set()
        for g in K.groups:
            expect |= {m.decode() for m in rc.smembers(K.segment_in(g, name))}
        members, cursor = set(), "0"
        while True:
            page = api.get(f"/v1/segments/{name}", params={"cursor": cursor, "count": 50}).json()
            members |= set(page["members"])
            cursor = page["next_cursor"]
            if cursor == "0":
                break
        assert members == expect and len(expect) > 1

        # keys really are spread over the three masters, by slot
        owner = {}
        for lo, hi, node in ((s[0], s[1], f"{s[2][0]}:{s[2][1]}") for s in redis_cluster.node_clients()[0].cluster("SLOTS")):
            owner[(lo, hi)] = node
        nodes = set()
        for uid in gen.truth:
            slot = rc.keyslot(K.profile(uid))
            nodes |= {n for (lo, hi), n in owner.items() if lo <= slot <= hi}
        assert len(nodes) == 3, nodes
        sizes = [c.dbsize() for c in redis_cluster.node_clients()]
        assert all(s > 50 for s in sizes), sizes
        # no per-command key lookups by the clients (redis-py asks COMMAND GETKEYS for commands
        # it cannot route by itself: a round trip each, e.g. per script call)
        getkeys = [c.info("commandstats").get("cmdstat_command|getkeys", {}).get("calls", 0) for c in redis_cluster.node_clients()]
        assert sum(getkeys) < 100, getkeys
    finally:
        if api is not None:
            api.stop()
        sync.stop()
        df.interrupt()
        coll.stop()
        vendor.close()
