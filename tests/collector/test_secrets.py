"""Secrets never appear in logs, metrics or stored data.

A collector at ``--log-level debug`` is driven through every path — accepted and
refused ingest (each auth failure, rate limit), pixel (valid, duplicate, forged,
expired, malformed, HEAD), webhooks (accepted, replayed, forged, stale, unsigned,
unknown source, dead letters) — first with Redis up, then with Redis killed (the
warning and error paths). Then its whole log, its /metrics, every value in Redis
and ``liveprofile config`` output are searched for the write keys (raw and
base64), the pixel and webhook secrets, and every signature that was presented.
"""

from __future__ import annotations

import base64
import gzip
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import redis

from liveprofile.collector.signing import sign_webhook, signed_pixel_url
from tests.collector.conftest import (
    HOOK_ESP,
    HOOK_ESP_OLD,
    HOOK_SHOP,
    OTHER_KEY,
    PIXEL_NEW,
    PIXEL_OLD,
    SECURE_ENV,
    WRITE_KEY,
    basic,
    launch,
)
from tests.procs import base_env
from tests.redis_server import RedisServer

WRONG_KEY = "presented-wrong-key-0123456789"
FORGED_PIXEL_KEY = "forged-pixel-key-0123456789"


def _redis_dump(client: redis.Redis) -> bytes:
    out = []
    for key in client.scan_iter(count=1000):
        out.append(key)
        kind = client.type(key)
        if kind == b"stream":
            for _, fields in client.xrange(key):
                out += [*fields.keys(), *fields.values()]
        elif kind == b"string":
            out.append(client.get(key) or b"")
        elif kind == b"hash":
            for k, v in client.hgetall(key).items():
                out += [k, v]
        elif kind == b"set":
            out += list(client.smembers(key))
    return b"\n".join(out)


def _exercise(url: str, sigs: list[str], *, redis_up: bool) -> None:
    c = httpx.Client(base_url=url, timeout=30)
    ev = {"type": "track", "userId": "u1", "event": "Product Viewed", "context": {"ip": "203.0.113.9"}}
    c.post("/v1/track", json=ev, headers=basic(WRITE_KEY))
    c.post("/v1/identify", json={"userId": "u1", "traits": {"email": "a@b.co"}, "writeKey": OTHER_KEY})
    c.post("/v1/batch", json={"batch": [{**ev, "writeKey": WRITE_KEY}, {"type": "track", "userId": "u2", "writeKey": WRITE_KEY}], "writeKey": WRITE_KEY})
    c.post("/v1/track", json={"userId": "u1", "writeKey": WRITE_KEY})  # invalid event: dead letter
    c.post("/v1/track", json=ev, headers=basic(WRONG_KEY))
    c.post("/v1/track", json={**ev, "writeKey": WRONG_KEY})
    c.post("/v1/track", json=ev, headers={"Authorization": "Basic " + WRONG_KEY})  # malformed base64
    c.post("/v1/track", json=ev)
    c.post("/v1/track", content=b'{"writeKey": "' + WRITE_KEY.encode() + b'", ', headers=basic(WRITE_KEY))  # malformed JSON
    for _ in range(3):  # over the rate limit
        c.post("/v1/batch", json={"batch": [ev] * 15}, headers=basic(WRITE_KEY))
    now = int(time.time())
    for u in (
        signed_pixel_url(url, PIXEL_NEW, "p1", "c", "e"),
        signed_pixel_url(url, PIXEL_OLD, "p2", "c", "e"),
        signed_pixel_url(url, FORGED_PIXEL_KEY, "p3", "c", "e"),
        signed_pixel_url(url, PIXEL_NEW, "p4", "c", "e", ts=now - 86400),
        signed_pixel_url(url, PIXEL_NEW, "p5", "c", "e") + "&user=x",
    ):
        sigs.append(u.rsplit("sig=", 1)[1][:64])
        c.get(u)
        c.get(u)
        c.head(u)
    body = orjson.dumps({"type": "track", "userId": "w1", "event": "Email Delivered"})
    batch = orjson.dumps({"batch": [{"type": "track", "userId": "w2"}, 3]})
    for source, secret, payload, ts, enc in (
        ("esp", HOOK_ESP, body, now, None),
        ("esp", HOOK_ESP, body, now, None),  # replay
        ("esp", HOOK_ESP_OLD, batch, now, "gzip"),
        ("shop", HOOK_SHOP, body, now - 3600, None),  # stale
        ("shop", HOOK_ESP, body, now, None),  # wrong secret
        ("nope", HOOK_SHOP, body, now, None),
    ):
        header = sign_webhook(secret, payload, ts)
        sigs.append(header.split("v1=")[1])
        headers = {"X-Liveprofile-Signature": header}
        content = payload
        if enc:
            headers["Content-Encoding"] = enc
            content = gzip.compress(payload)
        c.post(f"/v1/webhooks/{source}", content=content, headers=headers)
    c.post("/v1/webhooks/esp", content=body)
    c.post("/v1/webhooks/esp", content=body, headers={"X-Liveprofile-Signature": f"t={now},v1={sigs[-1]}"})
    assert c.get("/healthz").status_code == (200 if redis_up else 503)
    c.close()


def test_secrets_never_appear_in_logs_metrics_or_redis(tmp_path: Path) -> None:
    srv = RedisServer(tmp_path / "redis").start()
    env = base_env(srv.url, **SECURE_ENV, LIVEPROFILE_RATE_LIMIT="1", LIVEPROFILE_RATE_BURST="20", LIVEPROFILE_TRUNCATE_IP="on")
    proc, url = launch(env, tmp_path, log_level="debug")
    sigs: list[str] = []
    try:
        _exercise(url, sigs, redis_up=True)
        client = redis.Redis.from_url(srv.url)
        stored = _redis_dump(client)
        client.close()
        assert b"Email Opened" in stored and b"webhook:esp" in stored  # the paths did run
        srv.kill()
        _exercise(url, sigs, redis_up=False)
        metrics = httpx.get(url + "/metrics").text
    finally:
        proc.stop()
        srv.stop()
    log = proc.log.read_text(errors="replace")
    config = subprocess.run([sys.executable, "-m", "liveprofile.cli", "config"], env=env, capture_output=True, text=True, timeout=60)
    assert config.returncode == 0, config.stderr
    assert "buffer_unavailable" in metrics and "rate_limited" in metrics and "pixel_invalid_signature" in metrics
    assert "replayed_signature" in metrics and "unknown_write_key" in metrics
    assert "append failed" in log  # the warning path was logged
    secrets = [WRITE_KEY, OTHER_KEY, WRONG_KEY, PIXEL_NEW, PIXEL_OLD, FORGED_PIXEL_KEY, HOOK_ESP, HOOK_ESP_OLD, HOOK_SHOP]
    secrets += [base64.b64encode(f"{k}:".encode()).decode() for k in (WRITE_KEY, OTHER_KEY, WRONG_KEY)]
    assert len(sigs) >= 20
    for where, text in (("log", log), ("/metrics", metrics), ("liveprofile config", config.stdout + config.stderr)):
        leaked = [s for s in secrets + sigs if s in text]
        assert not leaked, f"{where} contains secrets/signatures: {leaked}"
    leaked = [s for s in secrets + sigs if s.encode() in stored]
    assert not leaked, f"Redis contains secrets/signatures: {leaked}"
