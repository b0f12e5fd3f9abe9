"""The collector's edge over real HTTP against a real redis-server: rate limits, the
email-open pixel, signed webhooks, IP truncation, refusal metrics."""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from liveprofile.collector.signing import pixel_signature, sign_webhook, signed_pixel_url
from tests.collector.conftest import (
    HOOK_ESP,
    HOOK_ESP_OLD,
    HOOK_SHOP,
    OTHER_KEY,
    PIXEL_NEW,
    PIXEL_OLD,
    WRITE_KEY,
    FakeClock,
    InProcessCollector,
    K,
    basic,
    buffered,
    dead,
    metric,
)
from tests.procs import base_env

AUTH = basic(WRITE_KEY)


def track(i: int, **kw: object) -> dict:
    return {"type": "track", "userId": f"u{i}", "event": "Product Viewed", "messageId": f"m{i}", **kw}


def metrics(url: str) -> str:
    return httpx.get(url + "/metrics").text


# --------------------------------------------------------------------- rate limits


def test_rate_limit_counts_events_and_answers_429_with_retry_after(start: Callable[..., str], r: redis.Redis) -> None:
    url = start(LIVEPROFILE_RATE_LIMIT="1", LIVEPROFILE_RATE_BURST="20")
    ok = httpx.post(url + "/v1/batch", json={"batch": [track(i) for i in range(15)]}, headers=AUTH)
    assert ok.status_code == 200
    # 5 tokens left: a 10-event batch is refused whole, a single event still passes
    resp = httpx.post(url + "/v1/batch", json={"batch": [track(100 + i) for i in range(10)]}, headers=AUTH)
    assert resp.status_code == 429
    assert resp.json()["error"] == "rate_limited" and "10 events" in resp.json()["message"]
    assert resp.headers["retry-after"] == "5"  # (10 - 5 tokens) / 1 per s
    assert len(buffered(r)) == 15 and dead(r) == []  # nothing of the refused request kept
    assert httpx.post(url + "/v1/track", json=track(200), headers=AUTH).status_code == 200
    # a request bigger than the burst waits for a full bucket
    big = httpx.post(url + "/v1/batch", json={"batch": [track(300 + i) for i in range(30)]}, headers=AUTH)
    assert big.status_code == 429 and int(big.headers["retry-after"]) >= 15
    # buckets are per write key
    assert httpx.post(url + "/v1/batch", json={"batch": [track(400 + i) for i in range(20)]}, headers=basic(OTHER_KEY)).status_code == 200
    m = metrics(url)
    assert metric(m, "liveprofile_collector_rate_limited_events_total") == 40
    assert metric(m, "liveprofile_collector_events_rejected_total", reason="rate_limited") == 2
    assert metric(m, "liveprofile_collector_requests_total", endpoint="/v1/batch", status="429") == 2


def test_rate_limit_refills_at_the_configured_rate_up_to_the_burst(
    in_process: Callable[..., InProcessCollector], r: redis.Redis
) -> None:
    """Refill over real HTTP with the collector's clock injected (no sleeps): 8 tokens/s, burst 4.

    Times are multiples of 1/16 s (exact in binary), so every expectation is exact: a
    request is admitted exactly when enough tokens have accrued and not a tick before, the
    bucket never holds more than the burst, and a refused request costs nothing.
    """
    clock = FakeClock(1000.0)
    c = in_process(clock, LIVEPROFILE_RATE_LIMIT="8", LIVEPROFILE_RATE_BURST="4")
    bucket = c.app._limiter
    assert bucket is not None
    sent: list[str] = []

    def post(n: int) -> httpx.Response:
        first = len(sent)
        resp = client.post("/v1/batch", json={"batch": [track(first + i) for i in range(n)]})
        if resp.status_code == 200:
            sent.extend(f"m{first + i}" for i in range(n))
        return resp

    with httpx.Client(base_url=c.url, headers=AUTH) as client:
        assert post(4).status_code == 200  # the full burst
        refused = post(1)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"  # 1/8 s, rounded up
        assert bucket.tokens(WRITE_KEY.encode()) == 0.0  # refused: nothing taken
        clock.t += 1 / 16  # half a token
        assert post(1).status_code == 429
        clock.t += 1 / 16  # exactly one token: admitted now, not later
        assert post(1).status_code == 200
        assert post(1).status_code == 429
        clock.t += 1.0  # 8 tokens' worth, capped at the burst of 4
        assert bucket.tokens(WRITE_KEY.encode()) == 4.0
        assert post(4).status_code == 200
        assert post(1).status_code == 429  # the cap held: nothing beyond the burst
        clock.t += 3 / 8  # 3 tokens
        over = post(4)
        assert over.status_code == 429 and "retry in 1 s" in over.json()["message"]
        assert post(3).status_code == 200
        assert bucket.tokens(WRITE_KEY.encode()) == 0.0
        clock.t += 2.0  # a long idle spell still leaves only the burst
        assert bucket.tokens(WRITE_KEY.encode()) == 4.0
        assert post(5).status_code == 200  # bigger than the burst: admitted on a full bucket, into debt
        assert bucket.tokens(WRITE_KEY.encode()) == -1.0
        clock.t += 1 / 8  # repays the debt only
        assert post(1).status_code == 429
        clock.t += 1 / 8
        assert post(1).status_code == 200
    assert sorted(e["messageId"] for e in buffered(r)) == sorted(sent) and len(sent) == 18
    assert dead(r) == []


def test_auth_failures_are_counted_by_reason(secure: str, r: redis.Redis) -> None:
    assert httpx.post(secure + "/v1/track", json=track(1)).status_code == 401
    assert httpx.post(secure + "/v1/track", json=track(1), headers=basic("nope-nope")).status_code == 401
    assert httpx.post(secure + "/v1/track", json=track(1), headers={"Authorization": "Basic ***"}).status_code == 401
    assert httpx.post(secure + "/v1/track", json={**track(1), "writeKey": "also-wrong"}).status_code == 401
    m = metrics(secure)
    assert metric(m, "liveprofile_collector_auth_failures_total", reason="missing_write_key") == 1
    assert metric(m, "liveprofile_collector_auth_failures_total", reason="unknown_write_key") == 2
    assert metric(m, "liveprofile_collector_auth_failures_total", reason="malformed_authorization") == 1
    assert metric(m, "liveprofile_collector_events_rejected_total", reason="unauthorized") == 4
    assert buffered(r) == [] and dead(r) == []


def test_too_many_events_in_one_request_is_413(start: Callable[..., str], r: redis.Redis) -> None:
    url = start(LIVEPROFILE_MAX_BATCH_EVENTS="100", LIVEPROFILE_RATE_LIMIT="1000")
    resp = httpx.post(url + "/v1/batch", json={"batch": [1] * 101}, headers=AUTH)
    assert resp.status_code == 413 and resp.json()["error"] == "too_many_events"
    assert httpx.post(url + "/v1/batch", json={"batch": [track(i) for i in range(100)]}, headers=AUTH).status_code == 200
    assert len(buffered(r)) == 100 and dead(r) == []


# -------------------------------------------------------------------------- pixel


def _pixel(url: str, **kw: object) -> httpx.Response:
    resp = httpx.get(url, headers={"User-Agent": "Mozilla/5.0 (Test)"}, **kw)  # type: ignore[arg-type]
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/gif"
    assert resp.headers["cache-control"].startswith("no-store")
    assert resp.content.startswith(b"GIF89a") and len(resp.content) == 43
    return resp


def test_pixel_valid_signature_appends_email_opened(secure: str, r: redis.Redis) -> None:
    u = signed_pixel_url(secure, PIXEL_NEW, "user 1/ü", "spring-24", "e-42")
    _pixel(u)
    (ev,) = buffered(r)
    assert ev["type"] == "track" and ev["event"] == "Email Opened" and ev["userId"] == "user 1/ü"
    assert ev["properties"] == {"campaign_id": "spring-24", "email_id": "e-42"}
    assert ev["context"] == {"userAgent": "Mozilla/5.0 (Test)", "ip": "127.0.0.1"}
    assert ev["messageId"].startswith("px-") and ev["receivedAt"].endswith("Z")
    _pixel(u)  # a reload in the same window: same messageId, not appended twice
    assert len(buffered(r)) == 1
    # a URL signed with the previous secret still verifies (rotation)
    _pixel(signed_pixel_url(secure, PIXEL_OLD, "u2", "c", "e"))
    assert [e["userId"] for e in buffered(r)].count("u2") == 1
    m = metrics(secure)
    assert metric(m, "liveprofile_collector_pixel_requests_total", result="ok") == 2
    assert metric(m, "liveprofile_collector_pixel_requests_total", result="duplicate") == 1
    assert dead(r) == []


def test_pixel_forged_expired_and_malformed_get_the_gif_and_no_event(secure: str, r: redis.Redis) -> None:
    now = int(time.time())
    good = signed_pixel_url(secure, PIXEL_NEW, "u1", "c1", "e1", ts=now)
    cases = {
        "invalid_signature": [
            signed_pixel_url(secure, "not-the-secret-0123456789", "u1", "c1", "e1"),
            good.replace("user=u1", "user=u2"),  # tampered user
            good.replace("campaign=c1", "campaign=c2"),
            good.replace(f"ts={now}", f"ts={now + 1}"),
            good[:-1] + ("0" if good[-1] != "0" else "1"),
        ],
        "expired": [signed_pixel_url(secure, PIXEL_NEW, "u1", "c1", "e1", ts=now - 7200)],  # max age 1h
        "not_yet_valid": [signed_pixel_url(secure, PIXEL_NEW, "u1", "c1", "e1", ts=now + 3600)],
        "missing_parameter": [secure + "/v1/pixel.gif", secure + "/v1/pixel.gif?user=u1&campaign=c&email_id=e&ts=1"],
        "malformed": [
            good + "&user=u3",  # a parameter twice
            secure + f"/v1/pixel.gif?user=&campaign=c&email_id=e&ts={now}&sig=00",
            secure + "/v1/pixel.gif?user=u&campaign=c&email_id=e&ts=soon&sig=00",
            secure + "/v1/pixel.gif?user=" + "x" * 5000,
        ],
    }
    for urls in cases.values():
        for u in urls:
            _pixel(u)
    head = httpx.head(good)
    assert head.status_code == 200 and head.headers["content-type"] == "image/gif" and head.content == b""
    assert buffered(r) == [] and dead(r) == []
    m = metrics(secure)
    for reason, urls in cases.items():
        assert metric(m, "liveprofile_collector_pixel_requests_total", result=reason) == len(urls), reason
        assert metric(m, "liveprofile_collector_events_rejected_total", reason=f"pixel_{reason}") == len(urls), reason
    assert metric(m, "liveprofile_collector_pixel_requests_total", result="head") == 1
    _pixel(good)
    assert len(buffered(r)) == 1


def test_pixel_without_secret_records_nothing(start: Callable[..., str], r: redis.Redis) -> None:
    url = start(LIVEPROFILE_PIXEL_SECRET="")
    _pixel(signed_pixel_url(url, PIXEL_NEW, "u1", "c", "e"))
    assert buffered(r) == []
    assert metric(metrics(url), "liveprofile_collector_pixel_requests_total", result="disabled") == 1


def test_pixel_url_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``liveprofile pixel-url`` through liveprofile.collector.signing.add_commands (how cli.py will register it)."""
    import argparse
    from urllib.parse import parse_qs, urlsplit

    from liveprofile.collector.signing import add_commands, parse_pixel_query, verify_pixel
    from liveprofile.settings import Settings

    parser = argparse.ArgumentParser(prog="liveprofile")
    add_commands(parser.add_subparsers(dest="cmd", required=True))
    monkeypatch.setenv("LIVEPROFILE_PIXEL_SECRET", f"{PIXEL_NEW},{PIXEL_OLD}")
    monkeypatch.setenv("LIVEPROFILE_PIXEL_BASE_URL", "https://collect.example.com")
    args = parser.parse_args(["pixel-url", "--user", "ann@example.com", "--campaign", "spring", "--email-id", "e1"])
    assert args.func(args, Settings.from_env({})) == 0
    out = capsys.readouterr().out.strip()
    parts = urlsplit(out)
    assert out.startswith("https://collect.example.com/v1/pixel.gif?") and parse_qs(parts.query)["user"] == ["ann@example.com"]
    opened = verify_pixel(parse_pixel_query(parts.query.encode()), [PIXEL_NEW.encode()], now=time.time(), max_age_s=60)
    assert (opened.user_id, opened.campaign_id, opened.email_id) == ("ann@example.com", "spring", "e1")
    args = parser.parse_args(["pixel-url", "--user", "u", "--campaign", "c", "--email-id", "e", "--base", "http://x:1/", "--ts", "100"])
    assert args.func(args, None) == 0
    assert capsys.readouterr().out.startswith("http://x:1/v1/pixel.gif?user=u&campaign=c&email_id=e&ts=100&sig=" + pixel_signature(PIXEL_NEW, "u", "c", "e", 100))
    monkeypatch.setenv("LIVEPROFILE_PIXEL_SECRET", "")
    assert args.func(args, None) == 2
    assert "LIVEPROFILE_PIXEL_SECRET" in capsys.readouterr().err


# ----------------------------------------------------------------------- webhooks


def _hook(url: str, source: str, body: bytes, header: str | None, **headers: str) -> httpx.Response:
    if header is not None:
        headers["X-Liveprofile-Signature"] = header
    return httpx.post(f"{url}/v1/webhooks/{source}", content=body, headers=headers)


def test_webhook_single_event_and_batch(secure: str, r: redis.Redis) -> None:
    one = orjson.dumps({"type": "track", "userId": "w1", "event": "Email Delivered", "properties": {"email_id": "e1"}})
    resp = _hook(secure, "esp", one, sign_webhook(HOOK_ESP, one))
    assert resp.status_code == 200 and resp.json() == {"success": True}
    batch = orjson.dumps({"batch": [track(1), {"type": "track", "userId": "w2"}, 5], "context": {"ip": "10.1.2.3"}})
    resp = _hook(secure, "shop", batch, sign_webhook(HOOK_SHOP, batch))
    j = resp.json()
    assert resp.status_code == 200 and j["accepted"] == 1 and [x["reason"] for x in j["rejected"]] == ["missing_event", "not_object"]
    evs = {e["userId"]: e for e in buffered(r)}
    assert set(evs) == {"w1", "u1"} and evs["u1"]["context"] == {"ip": "10.1.2.3"}
    assert {(d["reason"], d["source"], d["stage"]) for d in dead(r)} == {
        ("missing_event", "webhook:shop", "collector"), ("not_object", "webhook:shop", "collector")
    }  # fmt: skip
    # a previous secret of the source still works, as does a gzip body (signed as inflated)
    body = orjson.dumps(track(7))
    assert _hook(secure, "esp", gzip.compress(body), sign_webhook(HOOK_ESP_OLD, body), **{"Content-Encoding": "gzip"}).status_code == 200
    m = metrics(secure)
    assert metric(m, "liveprofile_collector_webhook_requests_total", source="esp", result="accepted") == 2
    assert metric(m, "liveprofile_collector_webhook_requests_total", source="shop", result="accepted") == 1


def test_webhook_refusals_have_distinct_codes(secure: str, r: redis.Redis) -> None:
    body = orjson.dumps(track(1))
    now = int(time.time())
    checks = [
        ("nope", sign_webhook(HOOK_ESP, body), 404, "unknown_source"),
        ("esp", None, 401, "missing_signature"),
        ("esp", "", 401, "missing_signature"),
        ("esp", "v1=abc", 401, "invalid_signature"),
        ("esp", f"t={now}", 401, "invalid_signature"),
        ("esp", f"t=soon,v1={'0' * 64}", 401, "invalid_signature"),
        ("esp", sign_webhook(HOOK_SHOP, body), 401, "invalid_signature"),  # another source's secret
        ("esp", sign_webhook(HOOK_ESP, body + b" "), 401, "invalid_signature"),  # body changed
        ("esp", sign_webhook(HOOK_ESP, body, now - 301), 401, "stale_signature"),
        ("esp", sign_webhook(HOOK_ESP, body, now + 400), 401, "stale_signature"),
    ]
    for source, header, status, code in checks:
        resp = _hook(secure, source, body, header)
        assert (resp.status_code, resp.json()["error"]) == (status, code), (source, header, resp.text)
    assert buffered(r) == [] and dead(r) == []
    good = sign_webhook(HOOK_ESP, body)
    assert _hook(secure, "esp", body, good).status_code == 200
    again = _hook(secure, "esp", body, good)
    assert again.status_code == 401 and again.json()["error"] == "replayed_signature"
    # the same delivery under the source's other secret is the same delivery
    t = good.split(",")[0].removeprefix("t=")
    assert _hook(secure, "esp", body, sign_webhook(HOOK_ESP_OLD, body, int(t))).json()["error"] == "replayed_signature"
    assert len(buffered(r)) == 1
    m = metrics(secure)
    assert metric(m, "liveprofile_collector_webhook_requests_total", source="unknown", result="unknown_source") == 1
    for code, n in (("missing_signature", 2), ("invalid_signature", 5), ("stale_signature", 2), ("replayed_signature", 2)):
        assert metric(m, "liveprofile_collector_webhook_requests_total", source="esp", result=code) == n, code
        assert metric(m, "liveprofile_collector_events_rejected_total", reason=code) == n, code
    seen = r.keys("lp:webhook-seen:esp:*")
    assert len(seen) == 1 and 300 < r.ttl(seen[0]) <= 361


def test_webhook_replay_cache_is_shared_between_collectors(start: Callable[..., str], r: redis.Redis) -> None:
    a, b = start(), start()
    body = orjson.dumps(track(1))
    header = sign_webhook(HOOK_ESP, body)
    results = sorted(_hook(u, "esp", body, header).status_code for u in (a, b))
    assert results == [200, 401] and len(buffered(r)) == 1


def test_webhook_failed_append_does_not_burn_the_delivery(secure: str, r: redis.Redis) -> None:
    body = orjson.dumps({"batch": [track(i) for i in range(8)]})
    header = sign_webhook(HOOK_ESP, body)
    for i in range(4):
        r.set(K.events(i), "not a stream")  # every XADD fails (WRONGTYPE)
    resp = _hook(secure, "esp", body, header)
    assert resp.status_code == 503 and resp.headers["retry-after"] and resp.json()["error"] == "buffer_unavailable"
    assert r.keys("lp:webhook-seen:*") == []
    for i in range(4):
        r.delete(K.events(i))
    retry = _hook(secure, "esp", body, header)
    assert retry.status_code == 200, retry.text
    assert len(buffered(r)) == 8


# -------------------------------------------------------------------- IP truncation


def test_ip_truncation(start: Callable[..., str], r: redis.Redis) -> None:
    url = start(LIVEPROFILE_TRUNCATE_IP="on")
    batch = [
        track(1, context={"ip": "203.0.113.77", "userAgent": "ua"}),
        track(2, context={"ip": "2001:db8:abcd:12:1:2:3:4"}),
        track(3),  # gets the batch context
        track(4, context={"ip": "garbage"}),
        {"type": "track", "userId": "u5", "context": {"ip": "198.51.100.9"}},  # invalid: dead letter, truncated too
    ]
    resp = httpx.post(url + "/v1/batch", json={"batch": batch, "context": {"ip": "192.0.2.200"}}, headers=AUTH)
    assert resp.status_code == 200
    evs = {e["userId"]: e for e in buffered(r)}
    assert evs["u1"]["context"] == {"ip": "203.0.113.0", "userAgent": "ua"}
    assert evs["u2"]["context"]["ip"] == "2001:db8:abcd::"
    assert evs["u3"]["context"]["ip"] == "192.0.2.0"
    assert "ip" not in evs["u4"]["context"]
    (dl,) = dead(r)
    assert "198.51.100.0" in dl["raw"] and "198.51.100.9" not in dl["raw"]
    _pixel(signed_pixel_url(url, PIXEL_NEW, "p1", "c", "e"))
    (px,) = [e for e in buffered(r) if e["userId"] == "p1"]
    assert px["context"]["ip"] == "127.0.0.0"


def test_ip_kept_when_truncation_is_off(secure: str, r: redis.Redis) -> None:
    assert httpx.post(secure + "/v1/track", json=track(1, context={"ip": "203.0.113.77"}), headers=AUTH).status_code == 200
    assert buffered(r)[0]["context"]["ip"] == "203.0.113.77"


def test_bad_edge_config_exits_with_a_message(redis_url: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    for extra, needle in (
        ({"LIVEPROFILE_WEBHOOK_SECRETS": '{"esp": "short"}'}, "at least 16 bytes"),
        ({"LIVEPROFILE_WEBHOOK_SECRETS": "{not json, super-secret-value"}, "not valid JSON"),
        ({"LIVEPROFILE_RATE_LIMIT": "fast"}, "LIVEPROFILE_RATE_LIMIT"),
    ):
        env = base_env(redis_url, **extra)
        p = subprocess.run([sys.executable, "-m", "liveprofile.cli", "collector", "--port", "1"], env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and needle in p.stderr, p.stderr
        assert "super-secret-value" not in p.stderr

