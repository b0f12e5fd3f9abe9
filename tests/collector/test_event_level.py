"""Issue 12 items 2 and 6 at the collector, over loopback HTTP against real redis-servers:

* one event with a value that cannot be stored (a lone surrogate, non-UTF-8 bytes, NaN,
  Infinity, 1e400) is a dead letter, the rest of its batch is accepted (a Hypothesis property);
* a request answered 503 kept nothing (Redis at maxmemory hit in the middle of the appends);
* the 503 names its condition (out of memory, read-only replica, unreachable, backlog full);
* the dead-letter stream is capped (``LIVEPROFILE_DEAD_LETTER_MAXLEN``);
* the backlog bound is exact (no one-second cache to overshoot it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveprofile.collector.signing import sign_webhook
from tests.collector.conftest import HOOK_ESP, SECURE_ENV, WRITE_KEY, K, basic, launch
from tests.procs import Proc, base_env
from tests.redis_server import RedisServer

AUTH = {**basic(WRITE_KEY), "content-type": "application/json"}

#: JSON tokens one event may carry that orjson refuses to decode (each must cost only its event)
POISONS: dict[bytes, str] = {
    b'"\\ud83d"': "invalid_text",  # what JavaScript's "😀".slice(0, 1) serializes to
    b'"caf\\udce9"': "invalid_text",  # a lone low surrogate
    b'"\xff\xfe"': "invalid_text",  # bytes that are not UTF-8
    b"NaN": "invalid_number",
    b"Infinity": "invalid_number",
    b"-Infinity": "invalid_number",
    b"1e400": "invalid_number",
    b"-1e400": "invalid_number",
}
MARK = "__POISON__"


def _event(n: int, run: str) -> dict:
    return {"type": "track", "userId": f"{run}-u{n % 7}", "event": "Product Viewed", "messageId": f"{run}-m{n}",
            "properties": {"product_id": f"p{n}", "price": 9.5}}  # fmt: skip


def _poisoned(run: str, where: str) -> dict:
    ev = _event(999, run)
    ev["messageId"] = f"{run}-poison"
    if where == "property":
        ev["properties"]["note"] = MARK
    elif where == "event":
        ev["event"] = MARK
    elif where == "nested":
        ev["properties"]["products"] = [{"product_id": "x", "price": 1}, {"product_id": "y", "name": MARK}]
    else:  # a trait of an identify
        ev = {"type": "identify", "userId": f"{run}-u1", "messageId": f"{run}-poison", "traits": {"first_name": MARK}}
    return ev


def _body(events: list[dict], poison: bytes) -> bytes:
    return orjson.dumps({"batch": events}).replace(b'"' + MARK.encode() + b'"', poison)


def _buffered_ids(r: redis.Redis) -> set[str]:
    return {orjson.loads(f[b"e"])["messageId"] for i in range(4) for _, f in r.xrange(K.events(i))}


def _dead(r: redis.Redis) -> list[dict[str, bytes]]:
    return [{k.decode(): v for k, v in f.items()} for _, f in r.xrange(K.dead_letter)]


# ------------------------------------------------------------------ one bad value, one dead letter

_RUNS = iter(range(10**6))


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(0, 30), at=st.integers(0, 30), poison=st.sampled_from(sorted(POISONS)),
    where=st.sampled_from(["property", "event", "nested", "trait"]),
)  # fmt: skip
def test_one_poisoned_event_is_a_dead_letter_and_the_rest_of_its_batch_is_accepted(
    secure: str, r: redis.Redis, n: int, at: int, poison: bytes, where: str
) -> None:
    run = f"r{next(_RUNS)}"
    events = [_event(i, run) for i in range(n)]
    events.insert(min(at, n), _poisoned(run, where))
    resp = httpx.post(secure + "/v1/batch", content=_body(events, poison), headers=AUTH)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["accepted"] == n
    assert [(x["messageId"], x["reason"]) for x in answer["rejected"]] == [(f"{run}-poison", POISONS[poison])]
    got = {m for m in _buffered_ids(r) if m.startswith(run + "-")}
    assert got == {f"{run}-m{i}" for i in range(n)}  # every valid event appended
    mine = [d for d in _dead(r) if d["message_id"] == f"{run}-poison".encode()]
    assert len(mine) == 1 and mine[0]["reason"] == POISONS[poison].encode()
    raw = mine[0]["raw"]
    assert raw.isascii() and orjson.loads(raw.decode().replace("\\ud", "\\\\ud"))["messageId"] == f"{run}-poison"


def test_an_event_nested_deeper_than_the_decoders_go_costs_only_itself(secure: str, r: redis.Redis) -> None:
    """1,100 levels of nesting: orjson refuses the body (its limit is 1,024) and the standard
    library recurses out; the batch is then decoded element by element, the deep event is a dead
    letter and the others are taken (on the previous commit the whole batch got 400 malformed_json)."""
    run = "deep"
    events = [_event(i, run) for i in range(3)]
    deep = b'{"type":"track","event":"E","userId":"u-deep","messageId":"deep-x","properties":{"v":' + b"[" * 1100 + b"]" * 1100 + b"}}"
    body = orjson.dumps({"batch": events, "sentAt": "2024-05-01T12:00:00Z"})
    body = body.replace(b'"batch":[', b'"batch":[' + deep + b",", 1)
    resp = httpx.post(secure + "/v1/batch", content=body, headers=AUTH)
    assert resp.status_code == 200, resp.text
    assert resp.json()["accepted"] == 3 and [x["reason"] for x in resp.json()["rejected"]] == ["invalid_field_type"]
    assert {m for m in _buffered_ids(r) if m.startswith(run + "-")} == {f"{run}-m{i}" for i in range(3)}
    mine = [d for d in _dead(r) if d["reason"] == b"invalid_field_type"]
    assert len(mine) == 1 and mine[0]["raw"].startswith(b'{"type":"track"') and b"u-deep" in mine[0]["raw"]
    # a body that is not JSON for another reason stays a request-level 400
    bad = body.replace(b'"sentAt"', b"sentAt", 1)
    assert httpx.post(secure + "/v1/batch", content=bad, headers=AUTH).json()["error"] == "malformed_json"


def test_a_poisoned_single_event_is_400_with_its_reason_and_a_dead_letter(secure: str, r: redis.Redis) -> None:
    body = orjson.dumps(_poisoned("single", "property")).replace(b'"' + MARK.encode() + b'"', b"NaN")
    resp = httpx.post(secure + "/v1/track", content=body, headers=AUTH)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_number"
    assert [d["reason"] for d in _dead(r)] == [b"invalid_number"]


def test_request_level_problems_stay_request_level(secure: str, r: redis.Redis) -> None:
    """A body that is not JSON as a whole is still a 400 with a JSON reason, and nothing is kept."""
    # (a batch whose element is nested 5,000 deep is no longer one of these: that element is a dead
    # letter, test_an_event_nested_deeper_than_the_decoders_go_costs_only_itself)
    for body in (b'{"batch": [{"type": "track"', b'{"batch": [NaN, }', b"\xff\xfe{}", b'{"batch": [' + b"[" * 5000 + b"]" * 4999 + b"}"):
        resp = httpx.post(secure + "/v1/batch", content=body, headers=AUTH)
        assert resp.status_code == 400 and resp.json()["error"] == "malformed_json", body[:30]
    unauth = httpx.post(secure + "/v1/batch", content=_body([_event(1, "x")], b"NaN"), headers={"content-type": "application/json"})
    assert unauth.status_code == 401 and unauth.json()["error"] == "unauthorized"
    assert _buffered_ids(r) == set() and _dead(r) == []


# ------------------------------------------------------------------ faults: all or nothing, named 503s


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server (its memory limit and role are changed by the test)."""
    srv = RedisServer(tmp_path / "redis").start()
    yield srv
    srv.stop()


@pytest.fixture
def collector_on(tmp_path: Path) -> Iterator[Callable[..., str]]:
    procs: list[Proc] = []

    def _start(redis_url: str, **extra: str) -> str:
        proc, url = launch(base_env(redis_url, **{**SECURE_ENV, **extra}), tmp_path, name=f"c{len(procs)}")
        procs.append(proc)
        return url

    yield _start
    for p in procs:
        p.stop()


def _big_batch(run: str, n: int) -> list[dict]:
    return [{**_event(i, run), "properties": {"product_id": f"p{i}", "blob": "x" * 1500}} for i in range(n)]


def test_a_request_answered_503_kept_nothing_when_redis_hits_maxmemory_mid_append(
    own_redis: RedisServer, collector_on: Callable[..., str]
) -> None:
    r = redis.Redis.from_url(own_redis.url)
    url = collector_on(own_redis.url, LIVEPROFILE_MAX_REQUEST_BYTES="4000000")
    assert httpx.post(url + "/v1/batch", json={"batch": [_event(0, "warm")]}, headers=AUTH).status_code == 200
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory", used + 400_000)  # room for part of one request's 600 KB of events
    outcomes = []
    for k in range(4):
        events = _big_batch(f"b{k}", 400)
        resp = httpx.post(url + "/v1/batch", json={"batch": events}, headers=AUTH, timeout=30)
        outcomes.append(resp.status_code)
        kept = {m for m in _buffered_ids(r) if m.startswith(f"b{k}-")}
        if resp.status_code == 200:
            assert len(kept) == 400
        else:
            assert resp.status_code == 503, resp.text
            assert resp.json()["error"] == "buffer_out_of_memory", resp.text
            assert resp.headers["retry-after"]
            assert kept == set(), f"a 503 kept {len(kept)} of its 400 events"
    assert 503 in outcomes
    r.config_set("maxmemory", 0)  # memory frees: the same request is accepted whole
    resp = httpx.post(url + "/v1/batch", json={"batch": _big_batch("b3", 400)}, headers=AUTH, timeout=30)
    assert resp.status_code == 200 and len({m for m in _buffered_ids(r) if m.startswith("b3-")}) == 400
    r.close()


def test_the_503_names_read_only_replica_unreachable_and_backlog_full(
    own_redis: RedisServer, collector_on: Callable[..., str]
) -> None:
    r = redis.Redis.from_url(own_redis.url)
    url = collector_on(own_redis.url)
    one = {"batch": [_event(1, "ro")]}
    assert httpx.post(url + "/v1/batch", json=one, headers=AUTH).status_code == 200
    r.execute_command("REPLICAOF", "127.0.0.1", "1")  # a replica (of nothing reachable): read-only
    resp = httpx.post(url + "/v1/batch", json={"batch": [_event(2, "ro")]}, headers=AUTH)
    assert resp.status_code == 503 and resp.json()["error"] == "buffer_read_only", resp.text
    r.execute_command("REPLICAOF", "NO", "ONE")
    assert httpx.post(url + "/v1/batch", json={"batch": [_event(3, "ro")]}, headers=AUTH).status_code == 200
    assert _buffered_ids(r) == {"ro-m1", "ro-m3"}
    r.close()
    own_redis.kill()
    resp = httpx.post(url + "/v1/batch", json={"batch": [_event(4, "ro")]}, headers=AUTH, timeout=30)
    assert resp.status_code == 503 and resp.json()["error"] == "buffer_unavailable", resp.text


def test_the_backlog_bound_is_exact(redis_url: str, r: redis.Redis, collector_on: Callable[..., str]) -> None:
    """30 requests of 10 events against a bound of 100 and no dataflow reading: exactly 10 are
    accepted (a one-second cache of the backlog let every one of them in)."""
    url = collector_on(redis_url, LIVEPROFILE_MAX_BACKLOG="100")
    statuses = []
    with httpx.Client(headers=AUTH) as http:
        for k in range(30):
            resp = http.post(url + "/v1/batch", json={"batch": [_event(i, f"q{k}") for i in range(10)]})
            statuses.append(resp.status_code)
            if resp.status_code == 503:
                assert resp.json()["error"] == "backlog_full" and resp.headers["retry-after"]
    assert statuses == [200] * 10 + [503] * 20
    assert len(_buffered_ids(r)) == 100
    # the dataflow reads 40: exactly 4 more requests fit
    read = {i: r.xlen(K.events(i)) for i in range(4)}
    taken, left = {}, 40
    for i in range(4):
        taken[i] = min(read[i], left)
        left -= taken[i]
    r.hset(K.buffer_progress, mapping={str(i): n for i, n in taken.items()})
    with httpx.Client(headers=AUTH) as http:
        more = [http.post(url + "/v1/batch", json={"batch": [_event(i, f"z{k}") for i in range(10)]}).status_code for k in range(6)]
    assert more == [200] * 4 + [503] * 2


def test_the_dead_letter_stream_is_capped(redis_url: str, r: redis.Redis, collector_on: Callable[..., str]) -> None:
    url = collector_on(redis_url, LIVEPROFILE_DEAD_LETTER_MAXLEN="100")
    bad = [{"type": "track", "userId": "u", "messageId": f"d{i}", "properties": {"blob": "y" * 1000}} for i in range(50)]  # no event name
    with httpx.Client(headers=AUTH) as http:
        for _ in range(20):
            assert http.post(url + "/v1/batch", json={"batch": bad}).status_code == 200
    # MAXLEN ~ trims whole stream nodes (100 entries each by default): at most a node over the cap
    assert 100 <= r.xlen(K.dead_letter) <= 200, r.xlen(K.dead_letter)
    # signed webhook deliveries append through their own replay-guard script: capped as well
    # (on the previous commit 20 deliveries of 50 bad events left 1,000+ entries)
    for k in range(20):
        body = orjson.dumps({"batch": [{**b, "messageId": f"w{k}-{i}"} for i, b in enumerate(bad)]})
        resp = httpx.post(url + "/v1/webhooks/esp", content=body,
                          headers={"content-type": "application/json", "X-Liveprofile-Signature": sign_webhook(HOOK_ESP, body)})  # fmt: skip
        assert resp.status_code == 200, resp.text
    assert 100 <= r.xlen(K.dead_letter) <= 200, r.xlen(K.dead_letter)
