"""End to end against a real redis-server and fake vendors over real HTTP: what each destination receives."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import redis

from liveprofile.sync.model import SyncKeys
from tests.sync.fakes import FakeVendor
from tests.sync.helpers import (
    Feed,
    SyncerThread,
    assert_sent_once_in_order,
    covered,
    dest,
    wait_until,
)

Make = Callable[..., FakeVendor]
CART = {"name": "Cart Abandoned", "ts": "2024-05-01T12:00:00.000Z", "properties": {"cart_value": "12.50"}}


def fill(feed: Feed, users: int, versions: int) -> list[str]:
    uids = [f"u{i}" for i in range(users)]
    for v in range(versions):
        for u in uids:
            ev = CART if (v + int(u[1:])) % 4 == 0 else None
            feed.change(u, {"cart_value": f"{v}.50", "email": f"{u}@example.com"}, ev)
    return uids


def test_all_three_dialects_exactly_once_in_order(redis_url: str, r: redis.Redis, feed: Feed, make_vendor: Make) -> None:
    """Without faults or crashes every (user, version) reaches each vendor in exactly one accepted
    request (checked raw), in order; only changed fields; each trigger event once; typed values."""
    hook, braze, klav = make_vendor("webhook", max_items=50), make_vendor("braze"), make_vendor("klaviyo")
    uids = fill(feed, 40, 3)
    cfg = {**dest("hook", hook, max_items=50), **dest("braze", braze), **dest("klav", klav)}
    with SyncerThread(redis_url, cfg):
        wait_until(lambda: all(covered(v, feed) for v in (hook, braze, klav)), what="first wave")
        fill(feed, 40, 2)  # a second wave after the first was delivered
        wait_until(lambda: all(covered(v, feed) for v in (hook, braze, klav)), what="second wave")
    for v in (hook, braze, klav):
        assert v.violations == []
        assert_sent_once_in_order(v, feed, uids)  # raw: no de-duplication anywhere
    assert hook.duplicates == 0
    # only changed fields are pushed: email never changes after the first version
    later = [rec for rec in hook.applied if rec["from_version"] > 1]
    assert later and all("email" not in rec["fields"] for rec in later)
    # events reach every vendor exactly once, with their change id
    sent = sorted(e["id"] for rec in hook.applied for e in rec["events"])
    assert sent == sorted(k for ks in feed.events.values() for k in ks)
    klav_ids = sorted(e["unique_id"] for rec in klav.applied for e in rec["events"])
    assert klav_ids == sent
    assert sum(len(rec["events"]) for rec in braze.applied) == len(sent)
    # typed values at the ESPs, strings at the webhook
    last = next(rec for rec in reversed(braze.applied) if rec["fields"])
    assert isinstance(last["fields"]["cart_value"], float)
    assert isinstance(hook.applied[0]["fields"]["cart_value"], str)
    # the watermark holds the latest version per user
    assert int(r.hget(SyncKeys("lp", "braze").watermark, "u7")) == feed.versions["u7"]


def test_collapse_inside_a_batch(redis_url: str, feed: Feed, make_vendor: Make) -> None:
    hook = make_vendor("webhook")
    for v in range(5):
        feed.change("u1", {"cart_value": str(v), **({"email": "a@b.co"} if v == 1 else {})})
    with SyncerThread(redis_url, dest("hook", hook, flush_interval=0.5)):
        wait_until(lambda: covered(hook, feed))
    (rec,) = hook.applied
    assert (rec["from_version"], rec["version"]) == (1, 5)
    assert rec["fields"]["cart_value"] == "4" and rec["fields"]["email"] == "a@b.co"


def test_suppressed_consent_and_deletion(redis_url: str, r: redis.Redis, feed: Feed, make_vendor: Make) -> None:
    hook, braze, klav = make_vendor("webhook"), make_vendor("braze"), make_vendor("klaviyo")
    feed.change("ok", {"consent": '{"email": true}', "email": "ok@x.co"})
    feed.change("nosay", {"email": "nosay@x.co"})  # no consent recorded
    feed.change("optout", {"consent": '{"email": false}'})
    feed.change("gone", {"email": "gone@x.co", "consent": '{"email": true}'})
    feed.change("blocked", {"consent": '{"email": true}'})
    r.sadd("lp:suppressed", "blocked")
    feed.delete("gone")
    strict = {"channel": "email", "require_consent": True}
    cfg = {**dest("hook", hook), **dest("braze", braze, **strict), **dest("klav", klav, channel="email")}
    with SyncerThread(redis_url, cfg):
        wait_until(lambda: covered(hook, feed, ["ok", "nosay", "optout"]) and covered(braze, feed, ["ok"]), what="delivery")
        wait_until(lambda: any(rec["deleted"] for v in (hook, braze, klav) for rec in v.applied if rec["user_id"] == "gone")
                   and sum(rec["deleted"] for v in (hook, braze, klav) for rec in v.applied) == 3, what="deletes")  # fmt: skip
        # consent granted later: the whole profile is pushed, not only the changed field
        feed.change("nosay", {"consent": '{"email": true}'})
        wait_until(lambda: covered(braze, feed, ["nosay"]), what="consent grant")
    def users(v: FakeVendor) -> set[str]:
        return {rec["user_id"] for rec in v.applied if not rec["deleted"]}

    assert "blocked" not in users(hook) | users(braze) | users(klav)
    assert users(braze) == {"ok", "nosay"}  # require_consent: explicit consent only
    assert users(klav) == {"ok", "nosay"}  # explicit opt-out respected
    assert "optout" in users(hook)  # no channel: no consent gate
    granted = [rec for rec in braze.applied if rec["user_id"] == "nosay"]
    assert granted[-1]["fields"]["email"] == "nosay@x.co"  # full profile on consent grant
    for v in (hook, braze, klav):
        assert v.violations == []
    deleted = [rec for rec in hook.applied if rec["deleted"]]
    assert [(d["user_id"], d["fields"], d["events"]) for d in deleted] == [("gone", {}, [])]


def test_klaviyo_cleared_fields_are_unset_not_nulled(redis_url: str, feed: Feed, make_vendor: Make) -> None:
    klav = make_vendor("klaviyo")
    feed.change("u1", {"email": "a@b.co", "top_category": "shoes", "cart_value": "5.00"})
    with SyncerThread(redis_url, dest("klav", klav)):
        wait_until(lambda: covered(klav, feed))
        feed.change("u1", {"top_category": "", "email": ""})
        wait_until(lambda: covered(klav, feed) and any("unset" in rec for rec in klav.applied), what="unset")
    assert klav.violations == []  # no null ever reached the bulk import
    (unset,) = [rec["unset"] for rec in klav.applied if "unset" in rec]
    assert unset == ["top_category"]  # email cannot be unset: skipped (and counted)
    last = [rec for rec in klav.applied if rec["version"] == 2]
    assert last and all("email" not in rec["fields"] for rec in last)


def test_braze_batches_respect_75_objects(redis_url: str, feed: Feed, make_vendor: Make) -> None:
    braze = make_vendor("braze")
    for i in range(200):
        feed.change(f"u{i}", {"cart_value": "1.00"}, CART)
    for _ in range(80):  # one user with more events than fit one request
        feed.change("heavy", {"cart_value": "2.00"}, CART)
    with SyncerThread(redis_url, dest("braze", braze, flush_interval=0.5, batch_size=2000)):
        wait_until(lambda: covered(braze, feed) and sum(len(x["events"]) for x in braze.applied) == 280, what="braze")
    assert braze.violations == []
    assert sum(len(x["events"]) for x in braze.applied if x["user_id"] == "heavy") == 80


def test_metrics_endpoint(redis_url: str, feed: Feed, make_vendor: Make) -> None:
    from prometheus_client import start_http_server

    from tests.redis_server import free_port

    hook = make_vendor("webhook")
    feed.change("u1", {"email": "a@b.co"})
    hook.fail_next(500)
    with SyncerThread(redis_url, dest("hook", hook)) as st:
        port = free_port()
        server, _ = start_http_server(port, addr="127.0.0.1", registry=st.syncer.metrics.registry)
        wait_until(lambda: covered(hook, feed))
        wait_until(lambda: 'liveprofile_sync_delivered_changes_total{destination="hook"} 1.0' in httpx.get(f"http://127.0.0.1:{port}/metrics").text)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        server.shutdown()
    assert 'liveprofile_sync_requests_total{destination="hook",status="500"} 1.0' in text
    assert 'liveprofile_sync_requests_total{destination="hook",status="200"} 1.0' in text
    assert 'liveprofile_sync_retries_total{destination="hook",reason="500"} 1.0' in text
    assert 'liveprofile_sync_queue_age_seconds{destination="hook"}' in text
    assert 'liveprofile_sync_lease_held{destination="hook"} 1.0' in text
