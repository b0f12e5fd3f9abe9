"""Computed traits and audience membership reach Klaviyo, Braze and a webhook in their documented
shapes, exactly once per transition — also across a restart and a kill -9 between the vendor call
and the commit (issue 14 item 5; the shared contract 3 (feed entries) and 4 (delivery)).

Feed entries are written here in the contract's shape (profile hash + change entry carrying
``audiences_entered`` / ``audiences_exited`` / ``event_at``), as the profile script writes them.
The fakes check each request against the vendor's contract (:mod:`tests.sync.fakes`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from liveprofile.sync.model import (
    MalformedChange,
    SyncKeys,
    collapse,
    net_transitions,
    parse_change,
)
from liveprofile.sync.redrive import dead_letters, replay
from tests.sync.fakes import FakeVendor
from tests.sync.helpers import K, SyncerThread, dest, start_syncer, wait_until

DEFS = """version: 1
computed_traits:
  - {name: views_7d, kind: count, event: Product Viewed, window: 7d}
audiences:
  - name: vip
    when: computed.views_7d >= 3
    sync: {klaviyo: {list_id: LVIP}, braze: {subscription_group_id: grp-vip}}
  - name: browsers
    when: computed.views_7d >= 1
"""
#: the same file after the marketer deleted ``vip``
DEFS_WITHOUT_VIP = """version: 1
computed_traits:
  - {name: views_7d, kind: count, event: Product Viewed, window: 7d}
audiences:
  - name: browsers
    when: computed.views_7d >= 1
"""


class AudienceFeed:
    """Writes profile changes with audience transitions in the shape of the shared contract 3."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self.versions: dict[str, int] = {}
        self.inside: dict[str, set[str]] = {}

    def change(self, uid: str, views: int, entered: tuple[str, ...] = (), exited: tuple[str, ...] = (),
               at: str = "2026-05-01T12:00:00.000Z") -> int:  # fmt: skip
        v = self.versions.get(uid, 0) + 1
        self.versions[uid] = v
        now = self.inside.setdefault(uid, set())
        now |= set(entered)
        now -= set(exited)
        computed = orjson.dumps({"views_7d": views}).decode()
        audiences = orjson.dumps(sorted(now)).decode()
        fields = {"user_id": uid, "email": f"{uid}@x.co", "computed": computed, "audiences": audiences}
        self.r.hset(K.profile(uid), mapping={**fields, "version": v})
        entry: dict[str, Any] = {"user_id": uid, "version": v, "changed": orjson.dumps(fields),
                                 "updated_at": at, "event_at": at}  # fmt: skip
        if entered:
            entry["audiences_entered"] = orjson.dumps(sorted(entered))
        if exited:
            entry["audiences_exited"] = orjson.dumps(sorted(exited))
        self.r.xadd(K.changes, entry)
        return v


def _vendors(make_vendor: Callable[..., FakeVendor]) -> tuple[FakeVendor, FakeVendor, FakeVendor]:
    return make_vendor("klaviyo"), make_vendor("braze"), make_vendor("webhook")


def _cfg(kl: FakeVendor, bz: FakeVendor, hook: FakeVendor, **opts: Any) -> dict[str, Any]:
    return {**dest("kl", kl, **opts), **dest("bz", bz, **opts), **dest("hook", hook, **opts)}


def _committed(r: redis.Redis, feed: AudienceFeed, dests: tuple[str, ...] = ("kl", "bz", "hook")) -> bool:
    for d in dests:
        wm = {k.decode(): int(v) for k, v in r.hgetall(f"lp:sync-watermark:{d}").items()}
        if any(wm.get(u, 0) < v for u, v in feed.versions.items()):
            return False
    return True


def _hook_events(hook: FakeVendor, unique: bool = False) -> list[tuple[str, str, str, int]]:
    """(user, Audience Entered/Exited, audience, version) of every audience event the receiver took."""
    with hook.lock:
        recs = list(hook.unique.values()) if unique else list(hook.applied)
    return [(rec["user_id"], e["name"], e["properties"]["audience"], rec["version"])
            for rec in recs for e in rec["events"] if e["name"].startswith("Audience ")]  # fmt: skip


def test_enter_and_exit_reach_each_vendor_in_its_shape_once(
    redis_url: str, r: redis.Redis, make_vendor: Callable[..., FakeVendor], tmp_path: Path
) -> None:
    kl, bz, hook = _vendors(make_vendor)
    defs = tmp_path / "defs.yaml"
    defs.write_text(DEFS)
    feed = AudienceFeed(r)
    with SyncerThread(redis_url, _cfg(kl, bz, hook), settings={"LIVEPROFILE_DEFINITIONS": str(defs)}):
        feed.change("u1", 3, entered=("browsers", "vip"), at="2026-05-01T12:00:00.000Z")
        feed.change("u2", 1, entered=("browsers",))
        wait_until(lambda: _committed(r, feed), what="the entries delivered")
        feed.change("u1", 2, exited=("vip",), at="2026-05-08T12:00:00.000Z")  # a window exit: its bucket time
        wait_until(lambda: _committed(r, feed), what="the exit delivered")
    assert kl.violations == [] and bz.violations == [] and hook.violations == []

    # Klaviyo: vip (list LVIP) added then removed, by Klaviyo's own profile id; browsers has no list
    assert [(op, lst, u) for op, lst, u, _ in kl.list_ops] == [("add", "LVIP", "u1"), ("remove", "LVIP", "u1")]
    assert kl.lists == {"LVIP": set()}
    imported = [rec for rec in kl.applied if rec["path"].endswith("/api/profile-bulk-import-jobs")]
    assert {rec["user_id"]: rec["fields"]["views_7d"] for rec in imported} == {"u1": 2, "u2": 1}  # the last write
    assert all("computed" not in rec["fields"] and "audiences" not in rec["fields"] for rec in imported)

    # Braze: vip is a subscription group; browsers an element of liveprofile_audiences
    assert [(g, u, s) for g, u, s, _ in bz.subscription_ops] == [("grp-vip", "u1", "subscribed"), ("grp-vip", "u1", "unsubscribed")]
    assert bz.arrays == {"u1": {"liveprofile_audiences": ["browsers"]}, "u2": {"liveprofile_audiences": ["browsers"]}}
    assert Counter((u, op, x) for u, _, op, x, _ in bz.array_ops) == {("u1", "add", "browsers"): 1, ("u2", "add", "browsers"): 1}
    attrs = [rec for rec in bz.applied if rec["path"].endswith("/users/track")]
    assert [rec["fields"]["views_7d"] for rec in attrs if rec["user_id"] == "u1"] == [3, 2]
    assert all("computed" not in rec["fields"] and "audiences" not in rec["fields"] for rec in attrs)

    # webhook: one event per transition, with its event time; computed traits flattened in `changed`
    assert sorted(_hook_events(hook)) == [("u1", "Audience Entered", "browsers", 1), ("u1", "Audience Entered", "vip", 1),
                                          ("u1", "Audience Exited", "vip", 2), ("u2", "Audience Entered", "browsers", 1)]  # fmt: skip
    exit_ev = next(e for rec in hook.applied for e in rec["events"] if e["name"] == "Audience Exited")
    assert exit_ev["ts"] == exit_ev["properties"]["event_at"] == "2026-05-08T12:00:00.000Z"
    assert exit_ev["id"] == "u1:audience:vip:exited:2"
    assert [rec["fields"]["views_7d"] for rec in hook.applied if rec["user_id"] == "u1"] == [3, 2]
    assert all("computed" not in rec["fields"] and "audiences" not in rec["fields"] for rec in hook.applied)


def test_the_fakes_refuse_wrong_membership_shapes(make_vendor: Callable[..., FakeVendor]) -> None:
    """Each documented rule the fakes enforce fails a wrong body with a 400 (so the tests above can fail)."""
    kl, bz = make_vendor("klaviyo"), make_vendor("braze")
    kh = {"authorization": f"Klaviyo-API-Key {kl.api_key}", "revision": "2024-10-15",
          "content-type": "application/vnd.api+json", "accept": "application/vnd.api+json"}  # fmt: skip
    bh = {"authorization": f"Bearer {bz.api_key}", "content-type": "application/json"}
    with httpx.Client(timeout=5) as c:
        up = c.post(kl.url + "/api/profile-import", headers=kh,
                    content=orjson.dumps({"data": {"type": "profile", "attributes": {"external_id": "u1"}}}))  # fmt: skip
        assert up.status_code == 201
        kid = up.json()["data"]["id"]
        path = kl.url + "/api/lists/L1/relationships/profiles"
        for bad in ({"data": [{"type": "profile", "attributes": {"external_id": "u1"}}]},  # no id: the schema
                    {"data": [{"type": "profile", "id": "u1"}]},  # an external id, not Klaviyo's
                    {"data": {"type": "profile", "id": kid}}):  # not an array
            assert c.post(path, headers=kh, content=orjson.dumps(bad)).status_code == 400, bad
            assert c.request("DELETE", path, headers=kh, content=orjson.dumps(bad)).status_code == 400, bad
        ok = orjson.dumps({"data": [{"type": "profile", "id": kid}]})
        assert c.post(path, headers={**kh, "revision": "2023-01-24"}, content=ok).status_code == 400
        assert c.post(path, headers=kh, content=ok).status_code == 204
        assert c.request("DELETE", path, headers=kh, content=ok).status_code == 204
        assert [(op, u) for op, _, u, _ in kl.list_ops] == [("add", "u1"), ("remove", "u1")]

        track = bz.url + "/users/track"
        for arr in ({"append": ["vip"]}, {"add": "vip"}, {"add": []}, {"add": [1]}):
            body = {"attributes": [{"external_id": "u1", "liveprofile_audiences": arr}]}
            assert c.post(track, headers=bh, content=orjson.dumps(body)).status_code == 400, arr
        good = {"attributes": [{"external_id": "u1", "liveprofile_audiences": {"add": ["vip"], "remove": ["x"]}}]}
        assert c.post(track, headers=bh, content=orjson.dumps(good)).status_code == 201
        sub = bz.url + "/v2/subscription/status/set"
        for bad in ({"subscription_group_id": "g", "subscription_state": "subscribed", "external_id": ["u1"]},  # v1's shape
                    {"subscription_groups": [{"subscription_group_id": "g", "subscription_state": "in", "external_ids": ["u1"]}]},
                    {"subscription_groups": [{"subscription_state": "subscribed", "external_ids": ["u1"]}]},
                    {"subscription_groups": [{"subscription_group_id": "g", "subscription_state": "subscribed",
                                              "external_ids": [f"u{i}" for i in range(51)]}]}):  # fmt: skip
            assert c.post(sub, headers=bh, content=orjson.dumps(bad)).status_code == 400, bad
        ok_sub = {"subscription_groups": [{"subscription_group_id": "g", "subscription_state": "subscribed", "external_ids": ["u1"]}]}
        assert c.post(sub, headers=bh, content=orjson.dumps(ok_sub)).status_code == 201
    assert bz.arrays == {"u1": {"liveprofile_audiences": ["vip"]}} and bz.subscriptions == {("g", "u1"): "subscribed"}


def test_an_audience_removed_from_the_file_still_exits_where_it_entered(
    redis_url: str, r: redis.Redis, make_vendor: Callable[..., FakeVendor], tmp_path: Path
) -> None:
    kl, bz, hook = _vendors(make_vendor)
    (tmp_path / "a.yaml").write_text(DEFS)
    (tmp_path / "b.yaml").write_text(DEFS_WITHOUT_VIP)
    feed = AudienceFeed(r)
    with SyncerThread(redis_url, _cfg(kl, bz, hook), settings={"LIVEPROFILE_DEFINITIONS": str(tmp_path / "a.yaml")}):
        feed.change("u1", 3, entered=("browsers", "vip"))
        wait_until(lambda: _committed(r, feed), what="the entry delivered")
    with SyncerThread(redis_url, _cfg(kl, bz, hook), settings={"LIVEPROFILE_DEFINITIONS": str(tmp_path / "b.yaml")}):
        feed.change("u1", 3, exited=("vip",))  # the dataflow's last word on the deleted audience
        wait_until(lambda: _committed(r, feed), what="the exit delivered")
    assert [(op, lst) for op, lst, _, _ in kl.list_ops] == [("add", "LVIP"), ("remove", "LVIP")]
    assert bz.subscriptions == {("grp-vip", "u1"): "unsubscribed"}
    assert kl.violations == [] and bz.violations == []


def test_exactly_once_per_transition_across_kill_9_and_restart(
    redis_url: str, r: redis.Redis, make_vendor: Callable[..., FakeVendor], tmp_path: Path
) -> None:
    """kill -9 while the membership requests are at the vendors (applied, unanswered, uncommitted):
    the next process sends exactly those again — Klaviyo's list add and Braze's group state are set
    operations (the state is right, each in-flight user twice, nobody else), the webhook's events
    carry stable ids (the receiver keeps each once) — and a graceful restart re-sends nothing."""
    kl, bz, hook = _vendors(make_vendor)
    defs = tmp_path / "defs.yaml"
    defs.write_text(DEFS)
    cfg = _cfg(kl, bz, hook, timeout=30)
    env = {"LIVEPROFILE_DEFINITIONS": str(defs)}
    feed = AudienceFeed(r)
    users = [f"u{i}" for i in range(10)]
    for u in users:
        feed.change(u, 3, entered=("browsers", "vip"))
    kl.stall_only, bz.stall_only, hook.stall_only = "/relationships/profiles", "/v2/subscription", "/"
    for v in (kl, bz, hook):
        v.stall_after(0)
    first = start_syncer(redis_url, cfg, tmp_path, "first", **env)
    try:
        wait_until(lambda: kl.stalled >= 1 and bz.stalled >= 1 and hook.stalled >= 1, what=f"held requests: {first.output()}")
        first.kill9()
    finally:
        first.kill9()
    for v in (kl, bz, hook):
        v.stall_only = None
        v.release()
    wait_until(lambda: kl.idle() and bz.idle() and hook.idle(), what="the dead sender's requests handled")
    assert not _committed(r, feed)  # the kill landed between the vendor call and the commit
    held_kl = {u for op, _, u, _ in kl.list_ops}
    held_bz = {u for _, u, _, _ in bz.subscription_ops}
    assert held_kl and held_bz

    second = start_syncer(redis_url, cfg, tmp_path, "second", **env)
    try:
        wait_until(lambda: _committed(r, feed), timeout=60, what=f"recovery: {second.output()}")
    finally:
        second.stop()
    for u in users:  # leave again, after a graceful restart
        feed.change(u, 0, exited=("browsers", "vip"))
    third = start_syncer(redis_url, cfg, tmp_path, "third", **env)
    try:
        wait_until(lambda: _committed(r, feed), timeout=60, what=f"the exits: {third.output()}")
    finally:
        third.stop()
    assert kl.violations == [] and bz.violations == [] and hook.violations == []

    adds = Counter(u for op, _, u, _ in kl.list_ops if op == "add")
    removes = Counter(u for op, _, u, _ in kl.list_ops if op == "remove")
    assert adds == {u: 2 if u in held_kl else 1 for u in users}  # re-sent: exactly the in-flight ones
    assert removes == dict.fromkeys(users, 1)  # nothing committed was sent again
    assert kl.lists == {"LVIP": set()}
    subs = Counter((u, s) for _, u, s, _ in bz.subscription_ops)
    assert subs == {**{(u, "subscribed"): 2 if u in held_bz else 1 for u in users}, **{(u, "unsubscribed"): 1 for u in users}}
    assert bz.subscriptions == {("grp-vip", u): "unsubscribed" for u in users}
    assert all(bz.arrays[u] == {"liveprofile_audiences": []} for u in users)
    # the webhook receiver (de-duplicating on the item key) took each transition exactly once
    assert Counter((u, n, a) for u, n, a, _ in _hook_events(hook, unique=True)) == {
        **{(u, "Audience Entered", a): 1 for u in users for a in ("browsers", "vip")},
        **{(u, "Audience Exited", a): 1 for u in users for a in ("browsers", "vip")}}  # fmt: skip


def test_membership_failures_are_dead_lettered_and_replayed_with_current_membership(
    redis_url: str, r: redis.Redis, make_vendor: Callable[..., FakeVendor], tmp_path: Path
) -> None:
    """A list Klaviyo does not have: each membership change is dead-lettered with the vendor's status
    (never dropped, never the whole batch). Re-driven after the list exists, only what the profile's
    membership still says goes out: u2's entry is not replayed (u2 left since), its exit is."""
    kl = make_vendor("klaviyo")
    kl.missing_lists = {"LVIP"}
    defs = tmp_path / "defs.yaml"
    defs.write_text(DEFS)
    feed = AudienceFeed(r)
    cfg = dest("kl", kl)
    with SyncerThread(redis_url, cfg, settings={"LIVEPROFILE_DEFINITIONS": str(defs)}):
        feed.change("u1", 3, entered=("browsers", "vip"))
        feed.change("u2", 3, entered=("browsers", "vip"))
        feed.change("u3", 1, entered=("browsers",))  # no list: delivered, nothing to dead-letter
        wait_until(lambda: _committed(r, feed, ("kl",)), what="the entries taken")
        feed.change("u2", 1, exited=("vip",))
        wait_until(lambda: _committed(r, feed, ("kl",)), what="u2's exit taken")
        dls = dead_letters(r, "lp", "kl")
        assert sorted((d["item"]["user_id"], d["reason"], d["status"]) for d in dls) == [
            ("u1", "http_404", "404"), ("u2", "http_404", "404"), ("u2", "http_404", "404")]  # fmt: skip
        assert kl.list_ops == []
        kl.missing_lists.clear()  # the marketer creates the list
        done = lambda: r.xlen(SyncKeys("lp", "kl").redrive) == 0  # noqa: E731
        assert replay(r, "lp", "kl", limit=2) == 2  # the oldest two: u1's and u2's entries
        wait_until(done, what="the first replay delivered")
        assert [(op, u) for op, _, u, _ in kl.list_ops] == [("add", "u1")]  # u2 is not in vip any more
        assert replay(r, "lp", "kl") == 1  # u2's exit
        wait_until(lambda: done() and r.xlen(SyncKeys("lp", "kl").dead_letter) == 0 and len(kl.list_ops) == 2,
                   what="the second replay delivered")  # fmt: skip
    assert sorted((op, u) for op, _, u, _ in kl.list_ops) == [("add", "u1"), ("remove", "u2")]
    assert kl.lists == {"LVIP": {FakeVendor.klaviyo_id("u1")}}
    assert kl.violations == []


def test_a_merged_away_profile_leaves_the_vendors_lists(
    redis_url: str, r: redis.Redis, make_vendor: Callable[..., FakeVendor], tmp_path: Path
) -> None:
    """A tombstone's entry carries ``audiences_exited`` with every audience it was in (contract 3):
    its fields are never pushed, but the exits are — or the merged-away id stays on the lists."""
    kl, bz, hook = _vendors(make_vendor)
    defs = tmp_path / "defs.yaml"
    defs.write_text(DEFS)
    feed = AudienceFeed(r)
    with SyncerThread(redis_url, _cfg(kl, bz, hook), settings={"LIVEPROFILE_DEFINITIONS": str(defs)}):
        feed.change("u1", 3, entered=("browsers", "vip"))
        wait_until(lambda: _committed(r, feed), what="the entries")
        v = feed.versions["u1"] = feed.versions["u1"] + 1
        r.hset(K.profile("u1"), mapping={"merged_into": "u9", "version": v})
        r.xadd(K.changes, {"user_id": "u1", "version": v, "changed": orjson.dumps({"merged_into": "u9"}),
                           "updated_at": "2026-05-02T00:00:00.000Z", "event_at": "2026-05-02T00:00:00.000Z",
                           "audiences_exited": orjson.dumps(["browsers", "vip"])})  # fmt: skip
        wait_until(lambda: _committed(r, feed), what="the tombstone")
    assert [(op, u) for op, _, u, _ in kl.list_ops] == [("add", "u1"), ("remove", "u1")]
    assert bz.subscriptions == {("grp-vip", "u1"): "unsubscribed"} and bz.arrays["u1"] == {"liveprofile_audiences": []}
    assert sorted(n for u, n, a, _ in _hook_events(hook) if u == "u1") == ["Audience Entered"] * 2 + ["Audience Exited"] * 2
    assert not any("merged_into" in rec["fields"] for v_ in (kl, bz, hook) for rec in v_.applied)  # no fields pushed
    assert kl.violations == [] and bz.violations == [] and hook.violations == []


def test_feed_entries_parse_and_collapse_into_transitions() -> None:
    """Contract 3's fields: arrays of names; anything else is a malformed entry (dead-lettered)."""
    base = {"user_id": "u", "changed": "{}"}
    a = parse_change("s", "1-0", {**base, "version": "1", "audiences_entered": '["a", "b"]', "event_at": "T1"})
    b = parse_change("s", "2-0", {**base, "version": "2", "audiences_exited": '["a"]', "audiences_entered": '["c"]'})
    assert (a.entered, a.exited, a.event_at) == (("a", "b"), (), "T1")
    (it,) = collapse([b, a])
    assert [(t["audience"], t["change"], t["version"]) for t in it.transitions] == [
        ("a", "entered", 1), ("b", "entered", 1), ("a", "exited", 2), ("c", "entered", 2)]  # fmt: skip
    gone = parse_change("s", "3-0", {**base, "version": "3", "deleted": "1", "audiences_exited": '["b", "c"]'})
    (it,) = collapse([a, b, gone])
    assert it.deleted and it.transitions == []  # the vendor deletes the profile with its memberships
    for bad in ('"a"', "[1]", '[""]', "{}", "[nope"):
        with pytest.raises(MalformedChange):
            parse_change("s", "4-0", {**base, "version": "4", "audiences_entered": bad})


def test_net_transitions_equal_applying_them_one_by_one() -> None:
    """The net change a membership-state vendor gets leaves it where the transitions one by one would."""
    tr = st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(["entered", "exited"])), max_size=12)

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(st.sets(st.sampled_from("abc")), tr)
    def check(start: set[str], seq: list[tuple[str, str]]) -> None:
        one_by_one = set(start)
        for a, ch in seq:
            (one_by_one.add if ch == "entered" else one_by_one.discard)(a)
        net = set(start)
        for a, ch in net_transitions({"audience": a, "change": ch} for a, ch in seq).items():
            (net.add if ch == "entered" else net.discard)(a)
        assert net == one_by_one

    check()
