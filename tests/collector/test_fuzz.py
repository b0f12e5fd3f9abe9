"""Hostile input: Hypothesis fuzzing of the collector over real HTTP, and of
``operators.events.parse_event`` / ``liveprofile.buffer.ingest.prepare`` in-process.

Contract checked for every input (see :class:`tests.collector.hostile.Checker`):
a 4xx with a JSON reason and nothing kept, or a 200 with every event either
buffered or dead-lettered; never a 5xx, a crash or a hang; the collector's RSS
stays bounded. The number of inputs tried is printed. ``LP_FUZZ_EXAMPLES``
scales the HTTP run (default keeps this file well under a minute); the long
soak is ``bench/fuzz_collector.py``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import orjson
import pytest
import redis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from liveprofile.buffer.ingest import prepare
from liveprofile.store.keys import Keys
from operators.events import REASONS, Event, Limits, Rejected, parse_event
from operators.routing import shard_of
from tests.collector import hostile
from tests.collector.hostile import Checker, Req, deep, deep_event, gzip_bomb, rss_kb
from tests.procs import Proc, base_env, start_collector, wait_for
from tests.redis_server import RedisServer

HTTP_EXAMPLES = int(os.environ.get("LP_FUZZ_EXAMPLES", "2500"))
LIMITS = Limits()
RECEIVED = "2024-05-01T12:00:00.000Z"
_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example, HealthCheck.filter_too_much]


@pytest.fixture(scope="module")
def fuzz_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, str, str]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    srv = RedisServer(tmp / "redis").start()
    proc, url = start_collector(base_env(srv.url, **hostile.SECRET_ENV), tmp)
    yield proc, url, srv.url
    proc.stop()
    srv.stop()


def _report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n[fuzz] {text}")


EXPLICIT = [
    Req("POST", "/v1/batch", {"Authorization": hostile._AUTH}, deep(100_000), "ingest"),
    Req("POST", "/v1/track", {"Authorization": hostile._AUTH}, deep_event(100_000, False), "ingest"),
    *(Req("POST", "/v1/track", {"Authorization": hostile._AUTH}, deep_event(n, mid), "ingest") for n in (253, 254, 300, 1021) for mid in (False, True)),
    *(Req("POST", "/v1/batch", {"Authorization": hostile._AUTH}, b'{"batch":[' + deep_event(n, False) + b"]}", "ingest") for n in (254, 1019)),
    Req("POST", "/v1/batch", {"Authorization": hostile._AUTH, "Content-Encoding": "gzip"}, gzip_bomb(), "ingest"),
    Req("POST", "/v1/track", {"Authorization": hostile._AUTH}, b'{"type":"track","userId":"u","event":"e","properties":{"price":NaN}}', "ingest"),
    Req("POST", "/v1/track", {"Authorization": hostile._AUTH}, b'{"userId":"\xff\xfe","event":"e"}', "ingest"),
    Req("POST", "/v1/track", {"Authorization": hostile._AUTH}, b'{"userId":"u","event":"e","userId":{"a":1}}', "ingest"),
    Req("POST", "/v1/identify", {"Authorization": hostile._AUTH}, b'{"userId":"u","traits":{"email":"' + b"a" * 40_000 + b'@x.io"}}', "ingest"),
    Req("POST", "/v1/batch", {"Authorization": hostile._AUTH}, b'{"batch":[' + b",".join([b"{}"] * 200_000)[:500_000] + b"]}", "ingest"),
    Req("POST", "/v1/batch", {"Authorization": hostile._AUTH}, b'{"batch":[{"type":"track","userId":"u","event":"e","timestamp":1e308,"sentAt":-1e308}]}', "ingest"),
    Req("POST", "/v1/webhooks/esp", {}, deep(100_000), "webhook"),
]


def test_collector_survives_hostile_http(fuzz_collector: tuple[Proc, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    proc, url, redis_url = fuzz_collector
    checker = Checker(url, redis_url)
    rss0, _ = rss_kb(proc.p.pid)
    t0 = time.monotonic()
    try:
        for req in EXPLICIT:
            checker.check(req)

        @settings(max_examples=HTTP_EXAMPLES, deadline=None, suppress_health_check=_SLOW, database=None)
        @given(hostile.requests)
        def run(req: Req) -> None:
            checker.check(req)

        run()
        assert proc.alive(), proc.output()
        assert httpx.get(url + "/healthz", timeout=5).status_code == 200
        rss1, hwm = rss_kb(proc.p.pid)
        _report(capsys, f"HTTP: {checker.summary()} in {time.monotonic() - t0:.1f} s; collector RSS {rss0 // 1024} -> {rss1 // 1024} MB (peak {hwm // 1024} MB)")
        # Every body is bounded by LIVEPROFILE_MAX_REQUEST_BYTES (inflated too): memory must not grow with input.
        assert rss1 - rss0 < 150 * 1024, (rss0, rss1)
        assert hwm < 600 * 1024, hwm
        assert "Traceback" not in proc.output(), proc.output()
        kinds = {k for k, _ in checker.statuses}
        assert kinds == {"ingest", "webhook", "pixel", "other"}
        assert {s for (k, s) in checker.statuses if k == "ingest"} >= {200, 400, 401, 413, 415}
    finally:
        checker.close()


# ------------------------------------------------------------------ in-process

_events_or_junk = st.one_of(hostile.events, hostile.valid_events, hostile.json_values)
_INPROC = int(os.environ.get("LP_FUZZ_INPROC", "1000"))
_counts = {"parse_event_bytes": 0, "parse_event_dict": 0, "prepare": 0}
# what the in-process fuzz reached: "event" or the rejection reason, per test
_outcomes: dict[str, Counter[str]] = {k: Counter() for k in _counts}


def _ok(res: object, test: str) -> None:
    assert isinstance(res, Event | Rejected), res
    if isinstance(res, Rejected):
        assert res.reason in REASONS and res.message and isinstance(res.raw, bytes)
        _outcomes[test][str(res.reason)] += 1
    else:
        _outcomes[test]["event"] += 1


@st.composite
def _raw_bodies(draw: st.DrawFn) -> bytes:
    body, _ = draw(hostile.bodies(False))
    return body  # every shape, deep nesting included (parse_event dead-letters what orjson cannot write)


@settings(max_examples=_INPROC, deadline=None, suppress_health_check=_SLOW, database=None)
@given(_raw_bodies())
def test_parse_event_never_raises_on_bytes(raw: bytes) -> None:
    _counts["parse_event_bytes"] += 1
    _ok(parse_event(raw, LIMITS, received_at=1714564800000), "parse_event_bytes")


@pytest.mark.parametrize("depth", [1, 100, 252, 253, 254, 255, 256, 300, 1000, 1021, 1022, 1023, 1024, 1025, 100_000])
def test_parse_event_on_every_nesting_depth(depth: int) -> None:
    """The depths the fuzz draws (``hostile._DEPTHS``), each tried for sure, never an exception:
    a bare nested array is refused (not an object, unreadable past 1024 levels, or too large);
    a deep event without a messageId is dead-lettered once orjson cannot write it again (255
    levels: its id cannot be derived) or read it (1024); with a messageId it may pass."""
    bare = parse_event(deep(depth), LIMITS, received_at=1714564800000)
    assert isinstance(bare, Rejected) and bare.reason in ("not_object", "malformed_json", "event_too_large"), bare
    for mid in (False, True):
        res = parse_event(deep_event(depth, mid), LIMITS, received_at=1714564800000)
        assert isinstance(res, Event | Rejected), res
        # the event object and its properties add 2 levels to ``depth``
        if depth + 2 > 1024:  # past orjson's read limit (100,000 levels is also over the size limit)
            assert isinstance(res, Rejected) and res.reason in ("malformed_json", "event_too_large"), (depth, mid, res)
        elif not mid and depth + 2 > 254:  # orjson writes at most 254 levels under the top one
            assert isinstance(res, Rejected) and res.reason == "invalid_field_type", (depth, res)
        elif depth + 2 <= 254:
            assert isinstance(res, Event), (depth, mid, res)


@settings(max_examples=int(os.environ.get("LP_FUZZ_INPROC", "1000")), deadline=None, suppress_health_check=_SLOW, database=None)
@given(st.one_of(hostile.events, hostile.valid_events), st.integers(min_value=-(2**40), max_value=2**45))
def test_parse_event_never_raises_on_dicts(ev: dict, received: int) -> None:
    # The dict form takes *decoded JSON*: what orjson.loads can produce. Integers beyond
    # 64 bits cannot come out of it (it refuses them), so they are out of contract here.
    try:
        ev = orjson.loads(orjson.dumps(ev))
    except orjson.JSONEncodeError:
        assume(False)
    _counts["parse_event_dict"] += 1
    _ok(parse_event(ev, LIMITS, received_at=received), "parse_event_dict")


_unserializable = st.one_of(
    st.just({"type": "track", "userId": "u", "event": "e", "properties": {"x": "\ud800"}}),  # lone surrogate
    st.just({"type": "track", "userId": "u", "event": "e", "properties": {1: "non-str key"}}),
    st.just({"type": "track", "userId": "u", "event": "e", "properties": {"n": 2**70}}),  # > 64-bit int
    st.integers(1, 1100).map(lambda n: orjson.loads(deep_event(min(n, 1020), False))),
    st.just(["\ud800"]),
)


@settings(max_examples=int(os.environ.get("LP_FUZZ_INPROC", "1000")) // 2, deadline=None, suppress_health_check=_SLOW, database=None)
@given(
    st.lists(st.one_of(_events_or_junk, _unserializable), max_size=12),
    st.sampled_from([None, "track", "identify", "alias"]),
    st.one_of(st.none(), st.fixed_dictionaries({}, optional={"sentAt": hostile.timestamps, "context": hostile.json_values})),
    st.booleans(),
)
def test_prepare_never_raises_and_accounts_for_every_event(events: list, force: str | None, defaults: dict | None, mask: bool) -> None:
    _counts["prepare"] += 1
    keys = Keys("lp")
    prep = prepare(events, keys=keys, shards=4, limits=LIMITS, received_at=RECEIVED, source="fuzz", force_type=force, defaults=defaults, mask_ip=mask)
    assert prep.accepted + len(prep.rejected) == len(events)
    _outcomes["prepare"]["event"] += prep.accepted
    for rej in prep.rejected:
        _outcomes["prepare"][str(rej.reason)] += 1
    assert len(prep.appends) == len(events)
    assert all(r.reason in REASONS for r in prep.rejected)
    dead = [a for a in prep.appends if a[0] == keys.dead_letter]
    assert len(dead) == len(prep.rejected)
    for stream, fields in prep.appends:
        if stream != keys.dead_letter:
            ev = orjson.loads(fields["e"])
            assert "writeKey" not in ev
            read = parse_event(fields["e"], LIMITS)  # what the dataflow will read
            assert isinstance(read, Event)
            # one identity rule: the stream it was routed to is the shard of the id the dataflow keys it by
            assert stream == keys.events(shard_of(read.uid, 4)), (stream, read.uid)
            if mask and isinstance(ev.get("context"), dict) and "ip" in ev["context"]:
                ip = ev["context"]["ip"]
                assert isinstance(ip, str) and (ip.endswith(".0") or ip.endswith("::")), ip


@pytest.mark.parametrize("depth", [254, 300, 1021])
def test_parse_event_deep_nesting_without_message_id_is_rejected(depth: int) -> None:
    """orjson reads 1024 levels but writes only 255: parse_event must dead-letter such an
    event (its id cannot be derived), never raise."""
    res = parse_event(deep_event(depth, message_id=False), LIMITS, received_at=1714564800000)
    assert isinstance(res, Rejected) and res.reason == "invalid_field_type"


def test_in_process_fuzz_ran_and_reached_both_outcomes(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    """Each in-process fuzz test of this session ran its examples and its inputs reached both
    sides of the contract: accepted events and several distinct rejection reasons (a strategy
    that only ever produced junk, or only valid events, would make the fuzz prove nothing)."""
    _report(capsys, f"in-process inputs: {_counts} (total {sum(_counts.values())}); outcomes {dict(_outcomes)}")
    ran = {item.name.split("[")[0] for item in request.session.items}
    tests = {
        "parse_event_bytes": ("test_parse_event_never_raises_on_bytes", _INPROC),
        "parse_event_dict": ("test_parse_event_never_raises_on_dicts", _INPROC),
        "prepare": ("test_prepare_never_raises_and_accounts_for_every_event", _INPROC // 2),
    }
    wanted = {k: n for k, (name, n) in tests.items() if name in ran}
    checked = list(wanted)
    if not checked:
        pytest.skip("no in-process fuzz test selected in this session")
    for k in checked:
        assert _counts[k] >= wanted[k], (k, _counts[k])
        seen = _outcomes[k]
        assert seen["event"] > 0, (k, seen)
        assert len(set(seen) - {"event"}) >= 3, (k, seen)


def _sent_events(r: redis.Redis) -> list[int]:
    k = Keys("lp")
    return [r.xlen(k.events(i)) for i in range(4)] + [r.xlen(k.dead_letter)]


def test_truncated_body_then_close_keeps_nothing_and_is_refused(fuzz_collector: tuple[Proc, str, str]) -> None:
    """Raw socket: a body shorter than its Content-Length, then the client closes. The server
    cannot answer a closed peer, so what proves the refusal is the collector's own account of
    it: ``client_disconnected`` counted once (the request was seen and refused, not left
    hanging), and nothing of the request buffered or dead-lettered."""
    import socket

    from tests.collector.conftest import metric

    _, url, redis_url = fuzz_collector
    host, port = url.removeprefix("http://").split(":")
    r = redis.Redis.from_url(redis_url)
    before = _sent_events(r)

    def disconnects() -> float:
        return metric(httpx.get(url + "/metrics").text, "liveprofile_collector_events_rejected_total", reason="client_disconnected")

    seen = disconnects()
    head = b"POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: " + hostile._AUTH.encode() + b"\r\nContent-Length: 1000\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + b'{"type":"track","userId":"u-cut","event":"e"')
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
    wait_for(lambda: disconnects() == seen + 1, 10, what="the collector to count the cut request")
    assert _sent_events(r) == before
    assert httpx.get(url + "/healthz").status_code == 200
    r.close()


def test_chunked_body_over_the_limit_is_413_before_it_ends(fuzz_collector: tuple[Proc, str, str]) -> None:
    """Raw socket, chunked transfer with no Content-Length: as soon as the body passes
    ``LIVEPROFILE_MAX_REQUEST_BYTES`` the collector answers 413 ``request_too_large`` (it does
    not wait for a body that may never end) and keeps nothing."""
    import socket

    _, url, redis_url = fuzz_collector
    host, port = url.removeprefix("http://").split(":")
    r = redis.Redis.from_url(redis_url)
    before = _sent_events(r)
    chunk = b"%x\r\n" % 65536 + b" " * 65536 + b"\r\n"
    head = b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: " + hostile._AUTH.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    n = hostile.MAX_REQUEST // 65536 + 1  # one chunk past the limit, and the body never terminated
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + chunk * n)
        data = b""
        while b"\r\n\r\n" not in data:
            got = s.recv(65536)
            assert got, f"connection closed without an answer: {data[:200]!r}"
            data += got
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert b"request_too_large" in data or b"content-length" in data.lower()
    assert _sent_events(r) == before
    r.close()


def test_a_blank_user_id_is_routed_by_the_anonymous_id_it_is_keyed_by() -> None:
    """The case that once disagreed: ``userId`` of blanks was routed by ``""`` but keyed by ``a1``."""
    keys = Keys("lp")
    prep = prepare([{"type": "page", "userId": "  ", "anonymousId": "a1", "messageId": "m1"}], keys=keys, shards=4,
                   limits=LIMITS, received_at=RECEIVED, source="fuzz")  # fmt: skip
    assert prep.accepted == 1 and shard_of("", 4) != shard_of("a1", 4)
    assert prep.appends[0][0] == keys.events(shard_of("a1", 4))
