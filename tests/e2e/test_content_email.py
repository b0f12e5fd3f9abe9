"""Open-time content an email can call, end to end through real processes (collector -> buffer ->
dataflow -> Redis -> API): a stream of ``Product Viewed`` events alone — no catalogue loaded by
hand — makes the recommendations slot show those products through a signed URL that carries no
bearer token: as a PNG Pillow can open, and as a redirect to the product's url; a tampered or
expired URL is refused 403."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import redis
from PIL import Image

from liveprofile.api.signing import content_url
from tests.e2e.helpers import post_batches
from tests.procs import Proc, base_env, start_collector, start_dataflow, wait_for
from tests.redis_server import free_port

KEY = "e2e-content-key-0123456789"
TOKEN = "e2e-token"
T0 = 1767261600  # 2026-01-01T10:00:00Z


def views() -> list[dict]:
    shoes = [("s1", "Trail Shoe", 89, 5), ("s2", "Road Shoe", 99, 3), ("s3", "Court Shoe", 59, 1)]
    out = []
    n = 0
    for pid, name, price, times in shoes:
        for k in range(times):
            n += 1
            out.append({"type": "track", "event": "Product Viewed", "userId": f"v{k}", "messageId": f"m{n}",
                        "timestamp": f"2026-01-01T10:{n:02d}:00Z",
                        "properties": {"product_id": pid, "name": name, "category": "Shoes", "price": price,
                                       "url": f"https://shop.example/p/{pid}", "image_url": f"https://cdn.example/{pid}.jpg"}})  # fmt: skip
    out.append({"type": "track", "event": "Product Viewed", "userId": "u1", "messageId": "u1-1", "timestamp": "2026-01-01T11:00:00Z",
                "properties": {"product_id": "b1", "name": "Novel", "category": "Books", "price": 12}})  # fmt: skip
    out += [{"type": "track", "event": "Product Viewed", "userId": "u1", "messageId": f"u1-{i}", "timestamp": f"2026-01-01T11:0{i}:00Z",
             "properties": {"product_id": "s3", "category": "Shoes"}} for i in range(2, 5)]  # fmt: skip
    return out


def test_product_views_become_email_content_behind_signed_urls(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    env = base_env(redis_url, LIVEPROFILE_TIMESTAMP_MIN="2020-01-01T00:00:00Z", LIVEPROFILE_MAX_FUTURE_SKEW="3650d",
                   LIVEPROFILE_API_TOKENS=TOKEN, LIVEPROFILE_CONTENT_SIGNING_KEY=KEY, LIVEPROFILE_API_BESTSELLERS_TTL="0")  # fmt: skip
    coll, url = start_collector(env, tmp_path)
    df = start_dataflow(env, tmp_path)
    port = free_port()
    api_base = f"http://127.0.0.1:{port}"
    env_api = {**env, "LIVEPROFILE_CONTENT_BASE_URL": api_base}
    api = Proc([sys.executable, "-m", "liveprofile.cli", "api", "--port", str(port)], env_api, tmp_path / "api.log")
    try:
        post_batches(url, views())

        def caught_up() -> bool:
            assert df.alive(), df.output()
            top = r.zrevrange("lp:category-top:shoes", 0, -1)
            return top == [b"s1", b"s3", b"s2"] and r.hget("lp:profile:u1", "top_category") == b"shoes" and r.exists("lp:product:b1") == 1

        wait_for(caught_up, 90, what="the catalogue and u1's profile")
        assert r.hgetall("lp:product:s1") == {b"name": b"Trail Shoe", b"category": b"shoes", b"price": b"89.00",
                                              b"url": b"https://shop.example/p/s1", b"url_trusted": b"1", b"image_url": b"https://cdn.example/s1.jpg",
                                              b"popularity": b"5"}  # fmt: skip

        def api_up() -> bool:
            assert api.alive(), api.output()
            try:
                return httpx.get(api_base + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(api_up, 90, what="the API")
        minted = httpx.get(f"{api_base}/v1/content-urls/u1", params={"ttl": "1h"}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert minted.status_code == 200, minted.text
        doc = minted.json()
        with httpx.Client(timeout=60) as email_client:  # what a mail client has: the URL, no token
            data = email_client.get(doc["json"]).json()
            assert data["top_category"] == "shoes"
            assert [p["product_id"] for p in data["products"]] == ["s1", "s3", "s2"]  # by popularity (s3: 1 + 3 views of u1), from the stream alone
            png = email_client.get(doc["png"])
            assert png.status_code == 200 and png.headers["content-type"] == "image/png", png.text[:300]
            assert png.headers["cache-control"] == "private, no-store, max-age=0"
            img = Image.open(io.BytesIO(png.content))
            img.load()
            assert img.format == "PNG" and img.size[0] == 600
            click = email_client.get(doc["click"][1])
            assert click.status_code == 302 and click.headers["location"] == "https://shop.example/p/s3"
            tampered = doc["png"].replace("user=u1", "user=v0")
            refused = email_client.get(tampered)
            assert refused.status_code == 403 and refused.json()["error"] == "bad_signature"
            old = content_url(api_base, KEY.encode(), "u1", "recommendations", "png", int(time.time()) - 5)
            expired = email_client.get(old)
            assert expired.status_code == 403 and expired.json()["error"] == "expired"
            no_token = email_client.get(f"{api_base}/v1/content/u1/recommendations")
            assert no_token.status_code == 401
        assert urlsplit(doc["png"]).netloc == f"127.0.0.1:{port}"
    finally:
        api.stop()
        df.stop()
        coll.stop()
