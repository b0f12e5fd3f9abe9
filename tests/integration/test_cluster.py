"""The Redis Cluster layout (``LIVEPROFILE_REDIS_CLUSTER=on``) against a real 3-master cluster.

In-process components — sinks, source, backlog, privacy, dead-letter re-drive,
sync dead letters, collector (webhooks included) and API — on cluster clients:
every multi-key script and command must touch one slot, per-group keys must
come from :class:`~liveprofile.store.keys.Keys`, and readers must cover every group.
The whole pipeline as processes is in ``tests/e2e/test_cluster.py``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys

import httpx
import orjson
import pytest
import redis

from dataflows.outputs import DeadLetter, EdgesOut, ModelOut
from dataflows.sinks import RedisDeadLetterSink, RedisPatchSink, RedisProfileSink, RfmEdgesSink
from dataflows.sources.streams import RedisStreamSource
from liveprofile.admin.deadletters import redrive
from liveprofile.admin.privacy import forget, unsuppress
from liveprofile.api.experiments import report
from liveprofile.buffer.streams import backlog
from liveprofile.collector.app import CollectorApp
from liveprofile.collector.config import CollectorConfig
from liveprofile.collector.signing import sign_webhook
from liveprofile.settings import ConfigError, Settings, load_env
from liveprofile.store.keys import Keys
from liveprofile.sync.model import SyncKeys
from liveprofile.sync.redrive import dead_letters, replay
from operators.events import Rejected
from operators.identity import anon_uid
from operators.rfm import Population, RfmValues
from operators.timeutil import iso
from operators.user import ProfileUpdate, Retire
from tests.api.conftest import ApiServer
from tests.redis_cluster import RedisCluster3
from tests.sync.fakes import FakeVendor
from tests.sync.helpers import (
    Feed,
    SyncerThread,
    assert_exactly_once_in_order,
    covered,
    dest,
    wait_until,
)

G = 16
K = Keys("lp", cluster_groups=G)
DAY = 86_400_000


def env(url: str, **extra: str) -> dict[str, str]:
    return {"LIVEPROFILE_REDIS_URL": url, "LIVEPROFILE_REDIS_CLUSTER": "on", "LIVEPROFILE_CLUSTER_GROUPS": str(G), **extra}


def update(uid: str, seq: int, rfm: RfmValues | None = None, **kw: str) -> ProfileUpdate:
    return ProfileUpdate(uid, seq, {"user_id": uid, "event_count": str(seq), **kw}, 0, rfm)


def decoded(rc: redis.RedisCluster, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in rc.hgetall(key).items()}


def test_settings_select_the_cluster_layout() -> None:
    s = Settings.from_env(env("redis://127.0.0.1:7000/0"))
    assert s.redis_cluster and Keys.of(s) == K
    assert Keys.of(Settings.from_env({})) == Keys("lp")  # default: the single-Redis layout
    with pytest.raises(ConfigError):
        Settings.from_env(env("redis://h:1/0", LIVEPROFILE_KEY_PREFIX="l{p}"))
    with pytest.raises(ValueError, match="per group"):
        _ = K.changes  # a group-less name cannot be used by mistake in cluster mode


def test_profile_writes_touch_one_slot_and_spread_over_the_masters(cluster_url: str, rc: redis.RedisCluster,
                                                                   redis_cluster: RedisCluster3) -> None:  # fmt: skip
    pop = Population()
    users = [f"user-{i}" for i in range(120)]
    for i, _ in enumerate(users):
        pop.apply(None, RfmValues(10**12 + i * DAY, 1 + i % 4, 1000 + 100 * i))
    rc.set(K.rfm_edges, pop.edges().to_json())
    part = RedisProfileSink(cluster_url, K).build("s", 0, 1)
    part.write_batch([
        (u, update(u, 1, RfmValues(10**12 + i * DAY, 1 + i % 4, 1000 + 100 * i), top_category=f"cat{i % 3}", cart_abandoned=str(i % 2)))
        for i, u in enumerate(users)
    ])  # fmt: skip
    groups = {K.group(u) for u in users}
    assert len(groups) == G  # 120 users cover every group
    for u in users:
        prof = decoded(rc, K.profile(u))
        assert prof["event_count"] == "1" and prof["version"] == "1" and prof["rfm_segment"], prof
        g = K.group(u)
        slot = rc.keyslot(K.profile(u))
        for key in (K.changes_for(u), K.suppressed_for(u), K.segment_in(g, prof["rfm_segment"]), K.rfm_customers_in(g),
                    K.segment_in(g, f"interest:{prof['top_category']}")):  # fmt: skip
            assert rc.keyslot(key) == slot, key
        assert rc.sismember(K.segment_in(g, prof["rfm_segment"]), u) and rc.sismember(K.rfm_customers_in(g), u)
    # each group's change feed holds exactly its users' entries
    for g in K.groups:
        feed = {f[b"user_id"].decode() for _, f in rc.xrange(K.changes_in(g))}
        assert feed == {u for u in users if K.group(u) == g}
    # segment membership is the union over the groups
    abandoned = set()
    for g in K.groups:
        abandoned |= {m.decode() for m in rc.smembers(K.segment_in(g, "cart_abandoned"))}
    assert abandoned == set(users[1::2])
    # keys are really spread over the three masters
    sizes = [c.dbsize() for c in redis_cluster.node_clients()]
    assert all(n > 0 for n in sizes), sizes
    # a replay is a no-op; a tombstone clears the segments of its own group
    before = rc.xlen(K.changes_for(users[0]))
    part.write_batch([(users[0], update(users[0], 0, top_category="other"))])  # an older seq: refused
    assert rc.xlen(K.changes_for(users[0])) == before
    part.write_batch([(users[1], Retire(users[1], users[2], 2))])
    assert decoded(rc, K.profile(users[1])).get("merged_into") == users[2]
    assert not rc.sismember(K.segment_in(K.group(users[1]), "cart_abandoned"), users[1])
    assert not rc.sismember(K.rfm_customers_in(K.group(users[1])), users[1])


def test_scripts_are_reloaded_when_a_node_loses_them(cluster_url: str, rc: redis.RedisCluster,
                                                     redis_cluster: RedisCluster3) -> None:  # fmt: skip
    part = RedisProfileSink(cluster_url, K).build("s", 0, 1)
    part.write_batch([(f"u{i}", update(f"u{i}", 1)) for i in range(40)])
    for c in redis_cluster.node_clients():
        c.script_flush()  # as after a restart or a failover to a fresh node
    part.write_batch([(f"u{i}", update(f"u{i}", 2)) for i in range(40)])
    assert all(rc.hget(K.profile(f"u{i}"), "event_count") == b"2" for i in range(40))
    patch = RedisPatchSink(cluster_url, K).build("s", 0, 1)
    patch.write_batch([ModelOut("u3", {"anomaly_score": "0.9", "suspect": "1"}, True, 0.9, {"v": 1.0})])
    assert rc.sismember(K.segment_in(K.group("u3"), "suspect"), "u3") and rc.xlen(K.anomalies) == 1


def test_rfm_refresher_walks_every_group(cluster_url: str, rc: redis.RedisCluster) -> None:
    users = [f"c{i}" for i in range(60)]
    part = RedisProfileSink(cluster_url, K).build("s", 0, 1)
    part.write_batch([(u, update(u, 1, RfmValues(10**12, 1, 500), last_purchase_at=iso(10**12 - i * DAY), purchase_count="1",
                                 revenue_total=f"{5 + i / 100:.2f}")) for i, u in enumerate(users)])  # no edges yet: unscored  # fmt: skip
    assert all(rc.hget(K.profile(u), "rfm_segment") in (b"", None) for u in users)
    pop = Population()
    for i, _ in enumerate(users):
        pop.apply(None, RfmValues(10**12 - i * DAY, 1, 500 + i))
    edges = RfmEdgesSink(cluster_url, K, slice_size=7).build("s", 0, 1)
    edges.write_batch([EdgesOut(pop.edges(), final=True)])  # full passes until converged
    assert all(rc.hget(K.profile(u), "rfm_segment") for u in users)


def test_dead_letters_share_a_slot_and_stay_idempotent(cluster_url: str, rc: redis.RedisCluster) -> None:
    assert rc.keyslot(K.dead_letter) == rc.keyslot(K.dead_letter_seen) == rc.keyslot(K.dead_letter_redriven)
    part = RedisDeadLetterSink(cluster_url, K).build("s", 0, 1)
    rej = Rejected("missing_event", "track calls need an event", b'{"type":"track","userId":"u1"}', 1, "m1")
    batch = [DeadLetter(rej, "events:0", (100, 0)), DeadLetter(rej, "events:1", (5, 0))]
    part.write_batch(batch)
    part.write_batch(batch)
    assert rc.xlen(K.dead_letter) == 2


def test_source_and_backlog_read_every_shard(cluster_url: str, rc: redis.RedisCluster) -> None:
    for shard in range(4):
        for i in range(5):
            rc.xadd(K.events(shard), {"e": f"{shard}-{i}"})
    assert backlog(rc, K, 4) == {0: 5, 1: 5, 2: 5, 3: 5}
    src = RedisStreamSource(cluster_url, [K.events(i) for i in range(4)], count=3, stop_at_end=True,
                            progress_key=K.buffer_progress, cluster=True)  # fmt: skip
    got = []
    for part_name in src.list_parts():
        p = src.build_part("inp", part_name, None)
        try:
            while True:
                got += [x[2] for x in p.next_batch()]
        except StopIteration:
            pass
    assert sorted(got) == sorted(f"{s}-{i}".encode() for s in range(4) for i in range(5))
    assert backlog(rc, K, 4) == {0: 0, 1: 0, 2: 0, 3: 0}


def test_forget_erases_the_user_and_aliases_in_their_own_groups(cluster_url: str, rc: redis.RedisCluster) -> None:
    # a user and an anonymous id in different groups, both profiled, the anonymous one merged
    uid, anon = "known-1", next(f"anon-{i}" for i in range(100) if K.group(f"anon-{i}") != K.group("known-1"))
    part = RedisProfileSink(cluster_url, K).build("s", 0, 1)
    part.write_batch([(uid, update(uid, 1, anonymous_ids=orjson.dumps([anon]).decode(), cart_abandoned="1", email="k@x.co")),
                      (anon_uid(anon), update(anon_uid(anon), 1, cart_abandoned="1"))])  # fmt: skip
    assert rc.hget(K.profile_anon(anon), "user_id") == anon.encode() and not rc.exists(K.profile(anon))
    rc.xadd(K.events(0), {"e": orjson.dumps({"type": "track", "userId": uid, "event": "x"})})
    settings = Settings.from_env(env(cluster_url))
    stats = forget(rc, K, 4, uid, write=None)
    assert stats["profiles"] == 2 and stats["buffered_events"] == 1
    assert not rc.exists(K.profile(uid)) and not rc.exists(K.profile_anon(anon))
    assert rc.sismember(K.suppressed_for(uid), uid)
    for u in (uid, anon):
        assert not rc.sismember(K.segment_in(K.group(u), "cart_abandoned"), u)
        entries = [f for _, f in rc.xrange(K.changes_for(u)) if f[b"user_id"] == u.encode()]
        assert entries == []  # older entries gone; no destination reads the feed, so the deletion went at once
    # the suppressed user is refused by the profile script in their group
    part.write_batch([(uid, update(uid, 5))])
    assert not rc.exists(K.profile(uid))
    assert unsuppress(rc, K, settings.shards, uid)
    assert not rc.sismember(K.suppressed_for(uid), uid)


def test_dead_letter_redrive_moves_entries_in_one_slot(cluster_url: str, rc: redis.RedisCluster) -> None:
    settings = Settings.from_env(env(cluster_url, LIVEPROFILE_TIMESTAMP_MIN="2000-01-01T00:00:00Z"))
    raw = orjson.dumps({"type": "track", "userId": "u1", "event": "x", "timestamp": "2001-01-01T00:00:00Z",
                        "messageId": "m1", "receivedAt": "2001-01-01T00:00:01Z"})  # fmt: skip
    rc.xadd(K.dead_letter, {"reason": "timestamp_too_old", "raw": raw, "stage": "collector", "message": "old"})
    stats = redrive(rc, settings, reasons={"timestamp_too_old"})
    assert stats["redriven"] == 1 and rc.xlen(K.dead_letter) == 0 and rc.xlen(K.dead_letter_redriven) == 1
    assert sum(rc.xlen(K.events(i)) for i in range(settings.shards)) == 1


def test_sync_dead_letters_and_replay_cover_every_group(cluster_url: str, rc: redis.RedisCluster) -> None:
    sk = SyncKeys("lp", "hook", G)
    items = {}
    for i, u in enumerate(("a", "b", "c", "d")):
        item = {"user_id": u, "version": 1, "from_version": 1, "changed": {"x": "1"}}
        rc.xadd(sk.dead_letter_in(K.group(u)), {"item": orjson.dumps(item), "reason": "max_attempts", "status": "500", "attempts": 3, "at": str(i)})
        items[u] = K.group(u)
    assert len(set(items.values())) > 1
    listed = dead_letters(rc, K, "hook")
    assert sorted(d["item"]["user_id"] for d in listed) == ["a", "b", "c", "d"]
    assert [d["id"] for d in listed] == sorted((d["id"] for d in listed), key=lambda s: tuple(map(int, s.split("-"))))
    assert replay(rc, K, "hook") == 4
    for u, g in items.items():
        assert rc.xlen(sk.dead_letter_in(g)) == 0
        assert any(orjson.loads(f[b"item"])["user_id"] == u for _, f in rc.xrange(sk.redrive_in(g)))


def test_collector_batches_and_webhooks_on_a_cluster(cluster_url: str, rc: redis.RedisCluster) -> None:
    secret = "whsec-0123456789abcdef"
    settings = Settings.from_env(env(cluster_url, LIVEPROFILE_WRITE_KEYS="k1"))
    config = CollectorConfig.from_values(load_env({"LIVEPROFILE_WEBHOOK_SECRETS": orjson.dumps({"esp": secret}).decode()}))
    app = CollectorApp(settings, config=config)
    events = [{"type": "track", "userId": f"u{i}", "event": "Product Viewed", "messageId": f"m{i}"} for i in range(40)]
    events.append({"type": "track", "userId": "bad"})  # no event name: dead letter

    async def main() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        auth = {"Authorization": "Basic " + base64.b64encode(b"k1:").decode()}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            a = await c.post("/v1/batch", content=orjson.dumps({"batch": events}), headers=auth)
            body = orjson.dumps({"batch": [{"type": "track", "userId": f"w{i}", "event": "Order Completed", "messageId": f"w{i}"} for i in range(8)]})
            sig = {"X-Liveprofile-Signature": sign_webhook(secret, body)}
            b = await c.post("/v1/webhooks/esp", content=body, headers=sig)
            again = await c.post("/v1/webhooks/esp", content=body, headers=sig)
        await app.shutdown()
        return a, b, again

    a, b, again = asyncio.run(main())
    assert a.status_code == 200 and b.status_code == 200, (a.text, b.text)
    assert again.status_code == 401 and again.json()["error"] == "replayed_signature"  # the claim is shared
    buffered = [orjson.loads(f[b"e"]) for i in range(settings.shards) for _, f in rc.xrange(K.events(i))]
    assert {e["userId"] for e in buffered} >= {f"u{i}" for i in range(40)} | {f"w{i}" for i in range(8)}
    assert rc.xlen(K.dead_letter) == 1
    assert len(list(rc.scan_iter(match="lp:webhook-seen:esp:*"))) == 1


def test_api_reads_profiles_and_pages_segments_across_groups(cluster_url: str, rc: redis.RedisCluster) -> None:
    users = [f"s{i}" for i in range(250)]
    part = RedisProfileSink(cluster_url, K).build("s", 0, 1)
    part.write_batch([(u, update(u, 1, top_category="shoes", email=f"{u}@x.co")) for u in users])
    part.write_batch([("s0", Retire("s0", "s1", 2))])
    api = ApiServer(cluster_url, LIVEPROFILE_REDIS_CLUSTER="on", LIVEPROFILE_CLUSTER_GROUPS=str(G))
    try:
        assert api.app.fast is None  # the single-connection fast path serves one server only
        prof = api.get("/v1/profiles/s7").json()
        assert prof["user_id"] == "s7" and prof["email"] == "s7@x.co"
        assert api.get("/v1/profiles/s0").json()["user_id"] == "s1"  # merged: the surviving profile
        assert api.get("/v1/profiles/nobody").status_code == 404
        members: list[str] = []
        cursor = "0"
        pages = 0
        while True:
            body = api.get("/v1/segments/interest:shoes", params={"cursor": cursor, "count": 40}).json()
            members += body["members"]
            pages += 1
            cursor = body["next_cursor"]
            if cursor == "0":
                break
        assert sorted(set(members)) == sorted(users[1:]) and pages > 1
        assert api.get("/v1/segments/interest:shoes", params={"cursor": "99-0"}).status_code == 400
        assert api.get("/v1/segments/nothing").json() == {"segment": "nothing", "members": [], "next_cursor": "0"}
        # exposures are recorded in the profile's slot (one script) and reported across groups
        for u in users[1:21]:
            assert api.get(f"/v1/content/{u}/recommendations", params={"format": "json"}).status_code == 200
        rows = report(rc, K, "subject")
        assert sum(r.exposures for r in rows) == 20
    finally:
        api.stop()


def test_cli_tools_on_a_cluster(cluster_url: str, rc: redis.RedisCluster) -> None:
    """``liveprofile profile | forget | deadletter list | sync status`` as a user runs them."""
    part = RedisProfileSink(cluster_url, K).build("s", 0, 1)
    part.write_batch([("cli-user", update("cli-user", 1, email="c@x.co"))])
    dests = orjson.dumps({"hook": {"type": "webhook", "url": "http://127.0.0.1:9/h", "secret": "s"}}).decode()
    e = {k: v for k, v in os.environ.items() if not k.startswith("LIVEPROFILE_")}
    e.update(env(cluster_url, LIVEPROFILE_SYNC_DESTINATIONS=dests))

    def cli(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "liveprofile.cli", *args], env=e, capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert orjson.loads(cli("profile", "cli-user"))["email"] == "c@x.co"
    status = orjson.loads(cli("sync", "status"))
    assert status["destination"] == "hook" and status["pending"] == 0 and status["dead_letters"] == 0
    assert '"total":0' in cli("deadletter", "list").replace(" ", "").replace("\n", "")
    assert orjson.loads(cli("forget", "cli-user"))["profiles"] == 1
    assert not rc.exists(K.profile("cli-user"))


def test_health_endpoints_on_a_cluster(cluster_url: str) -> None:
    settings = Settings.from_env(env(cluster_url, LIVEPROFILE_WRITE_KEYS="k1"))
    app = CollectorApp(settings)

    async def main() -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            status = (await c.get("/healthz")).status_code
        await app.shutdown()
        return status

    assert asyncio.run(main()) == 200
    api = ApiServer(cluster_url, LIVEPROFILE_REDIS_CLUSTER="on", LIVEPROFILE_CLUSTER_GROUPS=str(G))
    try:
        assert api.get("/healthz").status_code == 200
    finally:
        api.stop()


def test_sync_exactly_once_dead_letters_and_replay_across_groups(cluster_url: str, rc: redis.RedisCluster) -> None:
    """The ESP sync on G feeds: faults, a refused user (dead letter in their group), a deletion,
    a suppressed user, then a re-drive through the group's redrive stream; exactly once, in order."""
    feed = Feed(rc, K)
    hook, braze = FakeVendor("webhook"), FakeVendor("braze")
    try:
        users = [f"u{i}" for i in range(60)]
        for v in range(3):
            for u in users:
                feed.change(u, {"cart_value": f"{v}.{u}"}, {"name": "Cart Abandoned"} if v == 1 and u == "u5" else None)
        hook.refuse_users = {"u3"}
        braze.fail_next(500, 429, "timeout")
        cfg = {**dest("hook", hook, max_items=8, batch_size=50), **dest("braze", braze, batch_size=40)}
        sk = SyncKeys("lp", "hook", G)
        with SyncerThread(cluster_url, cfg, settings=env(cluster_url)) as t:
            wait_until(lambda: covered(hook, feed, [u for u in users if u != "u3"]) and covered(braze, feed), what="deliveries")
            assert len(t.syncer.workers[0].feeds) == G  # one destination worker reads every group's feed
            wait_until(lambda: rc.xlen(sk.dead_letter_in(K.group("u3"))) >= 1, what="u3's dead letter(s), in u3's group")
            feed.delete("u7")
            feed.change("u8", {"cart_value": "late"})
            wait_until(lambda: covered(hook, feed, ["u7", "u8"]) and covered(braze, feed, ["u8"])
                       and any(rec["deleted"] for rec in braze.applied if rec["user_id"] == "u7"), what="deletion and late change")  # fmt: skip
            hook.refuse_users = set()
            assert replay(rc, K, "hook") == rc.xlen(sk.redrive_in(K.group("u3"))) >= 1
            wait_until(lambda: covered(hook, feed), what="the re-driven dead letter")
            rc.sadd(K.suppressed_for("u9"), "u9")
            feed.change("u9", {"cart_value": "never"})
            feed.change("u10", {"cart_value": "after"})
            wait_until(lambda: covered(hook, feed, ["u10"]), what="u10")
        assert hook.violations == [] and braze.violations == []
        assert not any(rec["fields"].get("cart_value") == "never" for rec in hook.applied)
        feed.versions["u9"] -= 1  # the suppressed change is never pushed
        assert_exactly_once_in_order(hook, feed, [u for u in users if u != "u3"])
        assert [rec["fields"].get("cart_value") for rec in hook.applied if rec["user_id"] == "u3"][-1] == "2.u3"  # current value
        assert any(rec["deleted"] for rec in hook.applied if rec["user_id"] == "u7")
        assert sum(rc.xlen(sk.dead_letter_in(g)) for g in K.groups) == 0
        assert all(rc.xpending(K.changes_in(g), sk.group)["pending"] == 0 for g in K.groups)
    finally:
        hook.close()
        braze.close()
