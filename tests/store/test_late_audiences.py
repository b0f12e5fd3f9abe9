"""Late audiences in the profile script (``profile.lua``, :mod:`operators.residual`), on a real
redis-server: the script's rule evaluation equals the full Python evaluation of the audience over
the stored fields (Hypothesis, with the stored strings typed as the API types them); an RFM or
model *patch* moves a late audience with no event (sets and change-feed transitions), keeps the
early ones; an upsert changes the early ones and keeps the late ones deciding; rules dropped
(definitions without late audiences) leave the late audiences."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataflows.sinks import RedisProfileSink
from liveprofile.store.keys import Keys
from liveprofile.store.scripts import PROFILE_LUA, ProfileMode, profile_argv
from operators.audiences import profile_env
from operators.expr import compile_expr
from operators.residual import residual
from operators.user import ProfileUpdate
from tests.operators.test_residual import LATE_AUDIENCES, envs, exprs, values

K = Keys("lp")
T0 = 1_714_564_800_000
LATE_STRINGS = st.sampled_from([None, "", "1", "0", "3", "5", "-2", "champions", "loyal", "0.75", "4.0", "nan", "abc", " 3 "])


def _call(r: redis.Redis, sha: str, uid: str, seq: int, mode: ProfileMode, fields: dict[str, str]) -> int:
    packed = orjson.dumps([x for kv in fields.items() for x in kv])
    return int(r.evalsha(sha, 3, *K.profile_keys(uid), *profile_argv(seq, "2024-05-01T12:00:00Z", 1000, uid, "", K.script_prefix(uid), mode, packed)))


@pytest.fixture
def sha(r: redis.Redis) -> str:
    return r.script_load(PROFILE_LUA)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(exprs(), st.lists(values, min_size=10, max_size=10), st.lists(LATE_STRINGS, min_size=4, max_size=4), st.booleans())
def test_the_scripts_evaluation_equals_the_full_python_evaluation(r: redis.Redis, sha: str, src: str, vals: list[Any],
                                                                  late_s: list[str | None], l_in: bool) -> None:  # fmt: skip
    e = compile_expr(src)
    early, _, _ = envs(vals)
    stored = {k: v for k, v in zip(("rfm_r", "rfm_segment", "suspect", "anomaly_score"), late_s, strict=True) if v is not None}
    uid = "u1"
    r.delete(K.profile(uid))
    if stored:
        r.hset(K.profile(uid), mapping=stored)
    # "l" is a late audience decided before "x" (dependency order): a constant rule here
    rules = [["l", l_in], ["x", residual(e, early, LATE_AUDIENCES)]]
    _call(r, sha, uid, 1, ProfileMode.UPSERT, {"user_id": uid, "audiences": '["early"]', "audience_rules": orjson.dumps(rules).decode()})
    got = orjson.loads(r.hget(K.profile(uid), "audiences"))
    late = profile_env(stored)
    full = {**early, **late, "audience": {**early["audience"], "l": l_in}}
    want = sorted({"early", *(["l"] if l_in else []), *(["x"] if e.holds(full) else [])})
    assert got == want, (src, rules, stored)


def _upd(uid: str, seq: int, **fields: str) -> tuple[str, ProfileUpdate]:
    return uid, ProfileUpdate(uid, seq, {"user_id": uid, **fields}, T0, None, event_ms=T0)


def _write(url: str, items: list) -> None:
    """Through the dataflow's real profile sink (it adds the RFM fields of the update's values:
    none here, so a non-customer's empty ones)."""
    part = RedisProfileSink(url, K).build("profiles", 0, 1)
    try:
        part.write_batch(items)
    finally:
        part.close()


def _upsert(r: redis.Redis, sha: str, uid: str, seq: int, **fields: str) -> int:
    """An upsert as the profile sink sends it, with the user's RFM fields as given."""
    return _call(r, sha, uid, seq, ProfileMode.UPSERT, {"user_id": uid, **fields})


def _last(r: redis.Redis) -> dict[str, str]:
    _, f = r.xrevrange(K.changes, count=1)[0]
    return {k.decode(): v.decode() for k, v in f.items()}


def _members(r: redis.Redis, name: str) -> set[str]:
    return {m.decode() for m in r.smembers(K.audience_in(0, name))}


def test_patches_move_late_audiences_and_upserts_keep_them(redis_url: str, r: redis.Redis, sha: str) -> None:
    champs = residual(compile_expr('rfm_segment == "champions" and computed.orders >= 2'), {"computed": {"orders": 3}}, frozenset())
    risky = residual(compile_expr("suspect or anomaly_score > 0.9"), {}, frozenset())
    rules = orjson.dumps([["champs", champs], ["risky", risky]]).decode()
    _write(redis_url, [_upd("u1", 1, audiences='["carts"]', audience_rules=rules)])  # a non-customer yet
    assert orjson.loads(r.hget(K.profile("u1"), "audiences")) == ["carts"]
    # the RFM refresher's patch: the population moved, the user did nothing
    assert _call(r, sha, "u1", 0, ProfileMode.PATCH, {"rfm_segment": "champions"}) == 1
    e = _last(r)
    assert (e["audiences_entered"], "audiences_exited" in e) == ('["champs"]', False)
    assert orjson.loads(e["changed"])["audiences"] == '["carts","champs"]'
    assert _members(r, "champs") == {"u1"} and _members(r, "carts") == {"u1"}
    # a model patch: the anomaly score crosses 0.9
    _call(r, sha, "u1", 0, ProfileMode.PATCH, {"anomaly_score": "0.95", "suspect": "0"})
    assert _last(r)["audiences_entered"] == '["risky"]'
    # an upsert: the early audience exits, the late ones still hold (decided from the stored fields)
    _upsert(r, sha, "u1", 2, audiences="[]", audience_rules=rules, rfm_segment="champions")
    e = _last(r)
    assert (e["audiences_exited"], "audiences_entered" in e) == ('["carts"]', False)
    assert orjson.loads(r.hget(K.profile("u1"), "audiences")) == ["champs", "risky"]
    # the computed trait drops: the step's new rule is false, champs exits at the event
    no_champs = orjson.dumps([["champs", False], ["risky", risky]]).decode()
    _upsert(r, sha, "u1", 3, audiences="[]", audience_rules=no_champs, rfm_segment="champions")
    assert _last(r)["audiences_exited"] == '["champs"]'
    # a new rule with the same outcome is stored, but is no change of the profile: no entry
    n = r.xlen(K.changes)
    same = orjson.dumps([["champs", False], ["risky", ["or", ["f", "suspect"], ["cmp", ">", ["f", "anomaly_score"], ["v", 0.5]]]]]).decode()
    assert _upsert(r, sha, "u1", 4, audiences="[]", audience_rules=same, rfm_segment="champions") == 2
    assert r.xlen(K.changes) == n and r.hget(K.profile("u1"), "audience_rules").decode() == same
    assert all("audience_rules" not in orjson.loads(f[b"changed"]) for _, f in r.xrange(K.changes))
    # a patch that changes no late audience writes no transition
    _call(r, sha, "u1", 0, ProfileMode.PATCH, {"anomaly_score": "0.97"})
    assert "audiences_entered" not in _last(r) and "audiences_exited" not in _last(r)
    # definitions without late audiences: the rules are gone, so is every late membership
    _upsert(r, sha, "u1", 5, audiences='["carts"]', audience_rules="[]", rfm_segment="champions")
    e = _last(r)
    assert (e["audiences_entered"], e["audiences_exited"]) == ('["carts"]', '["risky"]')
    assert _members(r, "risky") == set() and _members(r, "champs") == set()
    # a replayed (stale) upsert changes nothing
    n = r.xlen(K.changes)
    _upsert(r, sha, "u1", 3, audiences="[]", audience_rules=no_champs, rfm_segment="champions")
    assert r.xlen(K.changes) == n


def test_a_profile_without_rules_is_untouched_by_patches(redis_url: str, r: redis.Redis, sha: str) -> None:
    _write(redis_url, [_upd("u2", 1, audiences='["carts"]')])
    _call(r, sha, "u2", 0, ProfileMode.PATCH, {"rfm_segment": "champions", "suspect": "1"})
    assert orjson.loads(r.hget(K.profile("u2"), "audiences")) == ["carts"]
    assert "audiences_exited" not in _last(r)
