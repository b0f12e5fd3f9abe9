"""Audience transitions written by the dataflow's real profile sink (``RedisProfileSink`` ->
``PROFILE_LUA``: the sets, ``audiences_entered`` / ``audiences_exited`` / ``event_at``) reach fake
Klaviyo, Braze and a webhook through the real sync (issue 14 item 5 with contract 3's writer)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import redis

from dataflows.sinks import RedisProfileSink
from liveprofile.store.keys import Keys
from operators.timeutil import iso
from operators.user import ProfileUpdate
from tests.sync.fakes import FakeVendor
from tests.sync.helpers import SyncerThread, dest, wait_until
from tests.sync.test_audiences import DEFS

T0 = 1_777_636_800_000  # 2026-05-01T12:00:00Z
WEEK = 7 * 86_400_000


def _write(url: str, uid: str, seq: int, views: int, audiences: list[str], event_ms: int) -> None:
    f = {"user_id": uid, "email": f"{uid}@x.co", "computed": orjson.dumps({"views_7d": views}).decode(),
         "audiences": orjson.dumps(audiences).decode()}  # fmt: skip
    part = RedisProfileSink(url, Keys("lp")).build("profiles", 0, 1)
    try:
        part.write_batch([(uid, ProfileUpdate(uid, seq, f, event_ms, None, event_ms=event_ms))])
    finally:
        part.close()


def test_transitions_from_the_real_profile_script_reach_the_vendors(
    redis_url: str, r: redis.Redis, make_vendor: Callable[..., FakeVendor], tmp_path: Path
) -> None:
    kl, bz, hook = make_vendor("klaviyo"), make_vendor("braze"), make_vendor("webhook")
    defs = tmp_path / "defs.yaml"
    defs.write_text(DEFS)
    cfg = {**dest("kl", kl), **dest("bz", bz), **dest("hook", hook)}

    def taken(version: int) -> bool:
        return all(int(r.hget(f"lp:sync-watermark:{d}", "u1") or 0) >= version for d in ("kl", "bz", "hook"))

    with SyncerThread(redis_url, cfg, settings={"LIVEPROFILE_DEFINITIONS": str(defs)}):
        _write(redis_url, "u1", 1, 3, ["browsers", "vip"], T0)
        wait_until(lambda: taken(1), what="the entries")
        assert r.smembers("lp:audience:vip") == {b"u1"}
        _write(redis_url, "u1", 2, 1, ["browsers"], T0 + WEEK)  # the window let the user out of vip
        wait_until(lambda: taken(2), what="the exit")
    assert [(op, lst, u) for op, lst, u, _ in kl.list_ops] == [("add", "LVIP", "u1"), ("remove", "LVIP", "u1")]
    assert [(g, u, s) for g, u, s, _ in bz.subscription_ops] == [("grp-vip", "u1", "subscribed"), ("grp-vip", "u1", "unsubscribed")]
    assert bz.arrays == {"u1": {"liveprofile_audiences": ["browsers"]}}
    events = [(e["name"], e["properties"]["audience"], e["ts"]) for rec in hook.applied for e in rec["events"]]
    assert sorted(events) == [("Audience Entered", "browsers", iso(T0)), ("Audience Entered", "vip", iso(T0)),
                              ("Audience Exited", "vip", iso(T0 + WEEK))]  # fmt: skip
    assert kl.violations == [] and bz.violations == [] and hook.violations == []
