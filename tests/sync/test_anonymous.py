"""Issue 12: anonymous profiles (their own key family, written by the real profile sink) and their
tombstones are never pushed to an email platform as known profiles, even when the anonymous id is
spelled like a known user's id. On main the anonymous profile ``victim`` *was* the known profile
``lp:profile:victim`` (one namespace): the attacker's email reached the vendor under the victim."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis

from dataflows.sinks.profile import RedisProfileSink
from liveprofile.sync.metrics import SyncMetrics
from liveprofile.sync.model import SyncKeys
from operators.identity import anon_uid
from operators.user import ProfileUpdate, Retire
from tests.sync.fakes import FakeVendor
from tests.sync.helpers import K
from tests.sync.test_worker_parts import all_acknowledged, config, running, sample, until, worker


def test_anonymous_profiles_and_their_tombstones_are_not_synced(redis_url: str, r: redis.Redis,
                                                               make_vendor: Callable[..., FakeVendor]) -> None:  # fmt: skip
    part = RedisProfileSink(redis_url, K).build("profile_out", 0, 1)
    part.write_batch([
        ("victim", ProfileUpdate("victim", 1, {"user_id": "victim", "email": "victim@example.com"}, 0, None)),
        (anon_uid("victim"), ProfileUpdate(anon_uid("victim"), 1, {"user_id": anon_uid("victim"), "email": "attacker@evil.example"}, 0, None)),
    ])  # fmt: skip
    part.write_batch([(anon_uid("victim"), Retire(anon_uid("victim"), "attacker", 2))])
    part.close()
    assert r.hget(K.profile("victim"), "email") == b"victim@example.com"
    assert r.hget(K.profile_anon("victim"), "merged_into") == b"attacker"
    assert r.hget(K.profile_anon("victim"), "user_id") == b"victim"
    assert not r.sismember(K.segment("cart_abandoned"), "victim")
    hook = make_vendor("webhook")
    metrics = SyncMetrics()

    async def main() -> None:
        async with running(worker(redis_url, config("hook", hook), metrics=metrics)):
            await until(lambda: all_acknowledged(r, K.changes, SyncKeys("lp", "hook").group), what="all acknowledged")

    asyncio.run(main())
    pushed = [(rec["user_id"], rec["fields"].get("email"), rec["fields"].get("merged_into")) for rec in hook.applied]
    assert pushed == [("victim", "victim@example.com", None)], pushed
    assert sample(metrics, "liveprofile_sync_skipped_total", destination="hook", reason="anonymous") == 2
