"""Hostile input: Hypothesis fuzzing of the collector over real HTTP, and of
``operators.events.parse_event`` / ``liveprofile.ingest.prepare`` in-process.

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
from collections.abc import Iterator

import httpx
import orjson
import pytest
import redis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from liveprofile.ingest import prepare
from liveprofile.keys import Keys
from operators.events import REASONS, Event, Limits, Rejected, parse_event
from tests.collector import hostile
from tests.collector.hostile import Checker, Req, deep, deep_event, gzip_bomb, rss_kb
from tests.procs import Proc, base_env, start_collector
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
_counts = {"parse_event_bytes": 0, "parse_event_dict": 0, "prepare": 0}


def _ok(res: object) -> None:
    assert isinstance(res, Event | Rejected), res
    if isinstance(res, Rejected):
        assert res.reason in REASONS and res.message and isinstance(res.raw, bytes)


@st.composite
def _raw_bodies(draw: st.DrawFn) -> bytes:
    body, _ = draw(hostile.bodies(False))
    # Nesting 254..1023 deep without a messageId makes parse_event raise (an operators
    # bug, see test_parse_event_deep_nesting_without_message_id_raises): kept out here.
    return body if not body.startswith((b"[[[", b'{"type":"track","userId":"u-deep"')) else deep_event(draw(st.integers(1, 250)), draw(st.booleans()))


@settings(max_examples=int(os.environ.get("LP_FUZZ_INPROC", "1000")), deadline=None, suppress_health_check=_SLOW, database=None)
@given(_raw_bodies())
def test_parse_event_never_raises_on_bytes(raw: bytes) -> None:
    _counts["parse_event_bytes"] += 1
    _ok(parse_event(raw, LIMITS, received_at=1714564800000))


@settings(max_examples=int(os.environ.get("LP_FUZZ_INPROC", "1000")), deadline=None, suppress_health_check=_SLOW, database=None)
@given(hostile.events, st.integers(min_value=-(2**40), max_value=2**45))
def test_parse_event_never_raises_on_dicts(ev: dict, received: int) -> None:
    # The dict form takes *decoded JSON*: what orjson.loads can produce. Integers beyond
    # 64 bits cannot come out of it (it refuses them), so they are out of contract here.
    try:
        ev = orjson.loads(orjson.dumps(ev))
    except orjson.JSONEncodeError:
        assume(False)
    _counts["parse_event_dict"] += 1
    _ok(parse_event(ev, LIMITS, received_at=received))


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
    assert len(prep.appends) == len(events)
    assert all(r.reason in REASONS for r in prep.rejected)
    dead = [a for a in prep.appends if a[0] == keys.dead_letter]
    assert len(dead) == len(prep.rejected)
    for stream, fields in prep.appends:
        if stream != keys.dead_letter:
            ev = orjson.loads(fields["e"])
            assert "writeKey" not in ev
            assert isinstance(parse_event(fields["e"], LIMITS), Event)  # what the dataflow will read
            if mask and isinstance(ev.get("context"), dict) and "ip" in ev["context"]:
                ip = ev["context"]["ip"]
                assert isinstance(ip, str) and (ip.endswith(".0") or ip.endswith("::")), ip


@pytest.mark.parametrize("depth", [254, 300, 1021])
def test_parse_event_deep_nesting_without_message_id_is_rejected(depth: int) -> None:
    """orjson reads 1024 levels but writes only 255: parse_event must dead-letter such an
    event (its id cannot be derived), never raise."""
    res = parse_event(deep_event(depth, message_id=False), LIMITS, received_at=1714564800000)
    assert isinstance(res, Rejected) and res.reason == "invalid_field_type"


def test_report_in_process_counts(capsys: pytest.CaptureFixture[str]) -> None:
    _report(capsys, f"in-process inputs: {_counts} (total {sum(_counts.values())})")


def test_truncated_bodies_and_lying_content_length(fuzz_collector: tuple[Proc, str, str]) -> None:
    """Raw sockets: a body shorter than Content-Length then close; chunked over the limit."""
    import socket

    _, url, redis_url = fuzz_collector
    host, port = url.removeprefix("http://").split(":")
    r = redis.Redis.from_url(redis_url)
    before = [r.xlen(Keys("lp").events(i)) for i in range(4)] + [r.xlen(Keys("lp").dead_letter)]
    auth = hostile._AUTH.encode()
    for head in (
        b"POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth + b"\r\nContent-Length: 1000\r\n\r\n" + b'{"type":"track"',
        b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n" % 65536 + b" " * 65536 + b"\r\n" for _ in range(9)),
    ):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(head)
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert not data or data.startswith(b"HTTP/1.1 4"), data[:200]
    after = [r.xlen(Keys("lp").events(i)) for i in range(4)] + [r.xlen(Keys("lp").dead_letter)]
    assert after == before
    assert httpx.get(url + "/healthz").status_code == 200
    r.close()

