"""Audiences in the Redis Cluster layout (16 user groups on a real 3-master cluster): the API sums
and pages ``{p}:{g}:audience:{name}`` over every group, and the sync delivers the transitions of
every group's change feed (issue 14 item 5; the shared contract 3's cluster keys)."""

from __future__ import annotations

from pathlib import Path

import orjson
import redis

from liveprofile.store.keys import Keys
from tests.api.conftest import ApiServer
from tests.sync.fakes import FakeVendor
from tests.sync.helpers import SyncerThread, dest, wait_until
from tests.sync.test_audiences import DEFS

G = 16
K = Keys("lp", cluster_groups=G)
CLUSTER = {"LIVEPROFILE_REDIS_CLUSTER": "on", "LIVEPROFILE_CLUSTER_GROUPS": str(G)}


def _audience(uid: str, name: str) -> str:
    return K.audience_in(K.group(uid), name)


def test_api_sizes_and_pages_audiences_over_every_group(cluster_url: str, rc: redis.RedisCluster, tmp_path: Path) -> None:
    defs = tmp_path / "defs.yaml"
    defs.write_text(DEFS)
    users = [f"c{i}" for i in range(400)]
    for u in users:
        rc.sadd(_audience(u, "browsers"), u)
    assert len({K.group(u) for u in users}) == G  # every group holds some
    api = ApiServer(cluster_url, LIVEPROFILE_DEFINITIONS=str(defs), **CLUSTER)
    try:
        listing = api.get("/v1/audiences")
        assert listing.status_code == 200, listing.text
        sizes = {a["name"]: a["size"] for a in listing.json()["audiences"]}
        assert sizes == {"vip": 0, "browsers": 400}
        seen: list[str] = []
        cursor, pages = "0", 0
        while True:
            body = api.get("/v1/audiences/browsers/members", params={"cursor": cursor, "count": 60}).json()
            seen += body["members"]
            pages += 1
            cursor = body["next_cursor"]
            if cursor == "0":
                break
        assert sorted(set(seen)) == sorted(users) and pages > 1
        assert api.get("/v1/audiences/browsers/members", params={"cursor": f"{G}-0"}).status_code == 400
    finally:
        api.stop()


def test_sync_delivers_transitions_of_every_group(cluster_url: str, rc: redis.RedisCluster, tmp_path: Path) -> None:
    kl = FakeVendor("klaviyo")
    defs = tmp_path / "defs.yaml"
    defs.write_text(DEFS)
    users = [f"c{i}" for i in range(40)]
    for u in users:  # the contract-3 entry, in the user's group feed
        fields = {"user_id": u, "email": f"{u}@x.co", "computed": '{"views_7d": 3}', "audiences": '["browsers", "vip"]'}
        rc.hset(K.profile(u), mapping={**fields, "version": 1})
        rc.xadd(K.changes_for(u), {"user_id": u, "version": 1, "changed": orjson.dumps(fields), "updated_at": "2026-05-01T12:00:00.000Z",
                                   "event_at": "2026-05-01T12:00:00.000Z", "audiences_entered": '["browsers", "vip"]'})  # fmt: skip
    try:
        with SyncerThread(cluster_url, dest("kl", kl), settings={"LIVEPROFILE_DEFINITIONS": str(defs), **CLUSTER}):
            wait_until(lambda: len(kl.list_ops) == len(users), what="every group's entries")
    finally:
        kl.close()
    assert sorted(u for op, lst, u, _ in kl.list_ops if op == "add" and lst == "LVIP") == sorted(users)
    assert kl.violations == []
