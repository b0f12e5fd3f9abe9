"""The profile script's audience sets and change-feed transitions (contract item 3), on a real
redis-server through the dataflow's real profile sink (``RedisProfileSink`` -> ``PROFILE_LUA``)
and the real erasure (:func:`liveprofile.admin.privacy.forget`): entering and leaving move
``{p}:audience:{name}`` and write ``audiences_entered`` / ``audiences_exited`` / ``event_at``;
an update that leaves ``audiences`` alone carries none of them; a tombstone and a delete leave
every set; a replayed (stale) update writes no second entry; anonymous profiles keep no sets;
the cluster layout's sets carry the group's hash tag."""

from __future__ import annotations

import orjson
import redis

from dataflows.sinks import RedisProfileSink
from liveprofile.admin.privacy import forget
from liveprofile.store.keys import Keys
from liveprofile.store.scripts import PROFILE_LUA, ProfileMode, profile_argv
from operators.identity import anon_uid
from operators.timeutil import iso
from operators.user import ProfileUpdate, Retire

K = Keys("lp")
T0 = 1_714_564_800_000


def _upd(uid: str, seq: int, audiences: list[str], event_ms: int | None = T0, **fields: str) -> tuple[str, ProfileUpdate]:
    f = {"user_id": uid, "audiences": orjson.dumps(audiences).decode(), **fields}
    return uid, ProfileUpdate(uid, seq, f, T0, None, event_ms=event_ms)


def _write(url: str, items: list, keys: Keys = K) -> None:
    part = RedisProfileSink(url, keys).build("profiles", 0, 1)
    try:
        part.write_batch(items)
    finally:
        part.close()


def _entries(r: redis.Redis, stream: str = K.changes) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in r.xrange(stream)]


def _members(r: redis.Redis, key: str) -> set[str]:
    return {m.decode() for m in r.smembers(key)}


def test_enter_exit_and_no_change(redis_url: str, r: redis.Redis) -> None:
    _write(redis_url, [_upd("u1", 1, ["a_first", "b_second"]), _upd("u2", 1, ["b_second"])])
    assert _members(r, K.audience_in(0, "a_first")) == {"u1"} and _members(r, K.audience_in(0, "b_second")) == {"u1", "u2"}
    e1, e2 = _entries(r)
    assert (e1["audiences_entered"], e1["event_at"], "audiences_exited" in e1) == ('["a_first","b_second"]', iso(T0), False)
    assert e2["audiences_entered"] == '["b_second"]'
    # u1 leaves a_first, enters c_third; the event time is the one of the update (a window exit, say)
    _write(redis_url, [_upd("u1", 2, ["b_second", "c_third"], event_ms=T0 + 86_400_000)])
    e = _entries(r)[-1]
    assert (e["audiences_entered"], e["audiences_exited"], e["event_at"]) == ('["c_third"]', '["a_first"]', iso(T0 + 86_400_000))
    assert _members(r, K.audience_in(0, "a_first")) == set() and _members(r, K.audience_in(0, "c_third")) == {"u1"}
    # another field changes, audiences do not: an entry without transitions
    _write(redis_url, [_upd("u1", 3, ["b_second", "c_third"], email="u1@x.co")])
    e = _entries(r)[-1]
    assert orjson.loads(e["changed"]) == {"email": "u1@x.co"}
    assert not {"audiences_entered", "audiences_exited", "event_at"} & set(e)
    # replay of an older update (recovery): STALE, no second entry, sets unchanged
    n = len(_entries(r))
    _write(redis_url, [_upd("u1", 2, ["b_second", "c_third"], event_ms=T0 + 86_400_000)])
    _write(redis_url, [_upd("u1", 1, ["a_first", "b_second"])])
    assert len(_entries(r)) == n and _members(r, K.audience_in(0, "a_first")) == set()


def test_tombstone_and_delete_leave_every_set(redis_url: str, r: redis.Redis) -> None:
    _write(redis_url, [_upd("old", 1, ["vip"]), _upd("u1", 1, ["vip", "zz"], email="u1@x.co")])
    _write(redis_url, [("old", Retire("old", "u1", 2))])  # merged away
    e = _entries(r)[-1]
    assert (e["user_id"], e["audiences_exited"]) == ("old", '["vip"]') and "audiences_entered" not in e
    assert _members(r, K.audience_in(0, "vip")) == {"u1"}
    # the delete mode as `liveprofile forget` runs it
    script = r.register_script(PROFILE_LUA)
    script(keys=K.profile_keys("u1"), args=profile_argv(0, "t", 100, "u1", "", K.script_prefix("u1"), ProfileMode.DELETE, ""))
    d = _entries(r)[-1]
    assert (d["user_id"], d["deleted"], d["audiences_exited"]) == ("u1", "1", '["vip","zz"]')
    assert list(r.scan_iter(match=K.audience_pattern())) == []  # the sets are gone with their last member


def test_forget_leaves_the_user_in_no_audience_set(redis_url: str, r: redis.Redis) -> None:
    _write(redis_url, [_upd("u1", 1, ["vip"]), _upd("u2", 1, ["vip"])])
    forget(r, K, 1, "u1")
    assert _members(r, K.audience_in(0, "vip")) == {"u2"}


def test_anonymous_profiles_keep_no_sets_and_no_transitions(redis_url: str, r: redis.Redis) -> None:
    a = anon_uid("a1")
    _write(redis_url, [(a, ProfileUpdate(a, 1, {"user_id": "a1", "audiences": '["vip"]'}, T0, None, event_ms=T0))])
    assert r.hget(K.profile_anon("a1"), "audiences") == b'["vip"]'
    (e,) = _entries(r)
    assert e["anonymous"] == "1" and "audiences_entered" not in e
    assert list(r.scan_iter(match=K.audience_pattern())) == []
    _write(redis_url, [(a, Retire(a, "u1", 2))])
    assert "audiences_exited" not in _entries(r)[-1]


def test_cluster_layout_sets_carry_the_group_tag(cluster_url: str, rc: redis.RedisCluster) -> None:
    """On a real 3-master Redis Cluster: ``{p}:{g}:audience:{name}`` in the slot of the user's
    group (the script's keys and its sets share one hash tag), and the group's change feed."""
    c = Keys("lp", cluster_groups=16)
    _write(cluster_url, [_upd("u1", 1, ["vip"]), _upd("u2", 1, ["vip"])], c)
    for uid in ("u1", "u2"):
        g = c.group(uid)
        assert _members(rc, c.audience_in(g, "vip")) == {uid}  # type: ignore[arg-type]
        assert _entries(rc, c.changes_in(g))[-1]["audiences_entered"] == '["vip"]'  # type: ignore[arg-type]
    assert c.group("u1") != c.group("u2")  # two groups: two sets
