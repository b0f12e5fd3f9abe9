"""Account profiles from group calls, written by the real account sink into a real Redis:
per-trait last writer by event time whatever the arrival order (and replays), null unsets
without a later older value resurrecting it, members collected."""

from __future__ import annotations

import itertools

import orjson
import redis

from dataflows.sinks.account import RedisAccountSink
from liveprofile.store.keys import Keys
from operators.events import Event, Limits, parse_event

K = Keys("lp")
T0 = 1_714_564_800_000


def group(i: int, uid: str, t: int, **traits: object) -> Event:
    e = parse_event({"type": "group", "userId": uid, "groupId": "acme", "messageId": f"g{i}", "timestamp": t / 1000,
                     "receivedAt": (t + 1) / 1000, "traits": traits}, Limits(timestamp_min_ms=0))  # fmt: skip
    assert isinstance(e, Event)
    return e


EVENTS = [
    group(1, "u1", T0, name="Acme", plan="free", employeeCount=5),
    group(2, "u2", T0 + 10, plan="pro"),
    group(3, "u1", T0 + 20, employeeCount=None),  # unset
    group(4, "u3", T0 + 5, employeeCount=7, industry="retail"),  # older than the unset
    group(5, "u2", T0 + 10, plan="enterprise"),  # a tie: the larger JSON wins
]


def test_account_traits_and_members_do_not_depend_on_order(redis_url: str, r: redis.Redis) -> None:
    part = RedisAccountSink(redis_url, K).build("account_out", 0, 1)
    try:
        results = set()
        for order in itertools.islice(itertools.permutations(EVENTS), 0, None, 17):
            r.flushall()
            part.write_batch(list(order[:2]))
            part.write_batch(list(order[2:]))
            part.write_batch(list(order))  # a replay changes nothing
            acct = {k.decode(): v.decode() for k, v in r.hgetall(K.account("acme")).items()}
            results.add(tuple(sorted(acct.items())))
            assert r.smembers(K.account_members("acme")) == {b"u1", b"u2", b"u3"}
        assert len(results) == 1
        acct = dict(results.pop())
        assert {k: orjson.loads(v) for k, v in acct.items() if k != "group_id"} == {
            "name": "Acme", "plan": "pro", "industry": "retail"}  # fmt: skip
        assert acct["group_id"] == "acme"
    finally:
        part.close()
