"""Signed, expiring content URLs (/c/...): no bearer token, bound to one user, slot, format and
expiry; PNG and redirect answers a mail client needs; no shared caching. Real API over loopback,
real redis-server."""

from __future__ import annotations

import hashlib
import hmac
import io
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import redis
from PIL import Image

from liveprofile.api.signing import content_url
from tests.api.conftest import ApiServer
from tests.redis_server import RedisServer

KEY = "content-key-0123456789"
OLD = "old-content-key-abcdef"


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[ApiServer]:
    """One API for the module (its render workers take seconds to start); each test seeds Redis."""
    s = ApiServer(redis_server.url, LIVEPROFILE_CONTENT_SIGNING_KEY=f"{KEY},{OLD}", LIVEPROFILE_CONTENT_BASE_URL="https://content.example",
                  LIVEPROFILE_CONTENT_REDIRECT_HOSTS="shop.example")
    yield s
    s.stop()


@pytest.fixture
def signed_api(server: ApiServer, r: redis.Redis) -> ApiServer:
    r.hset("lp:profile:u1", mapping={"user_id": "u1", "top_category": "shoes", "email": "u1@example.com"})
    r.hset("lp:profile:u2", mapping={"user_id": "u2", "top_category": "books", "email": "u2@example.com"})
    r.zadd("lp:category-top:shoes", {"s1": 9, "s2": 5})
    r.hset("lp:product:s1", mapping={"name": "Trail Shoe", "category": "shoes", "price": "89.00", "url": "https://shop.example/s1"})
    r.hset("lp:product:s2", mapping={"name": "Road Shoe", "category": "shoes", "price": "99.00"})
    return server


def anon(api: ApiServer) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{api.port}")  # no Authorization header


def local(url: str) -> str:
    """A minted https://content.example/... URL as a path + query for the loopback server."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def sign(user: str, slot: str, fmt: str, exp: int, key: str = KEY) -> str:
    return content_url("https://content.example", key.encode(), user, slot, fmt, exp)


def test_a_signed_url_needs_no_token_and_is_private(signed_api: ApiServer) -> None:
    c = anon(signed_api)
    exp = int(time.time()) + 3600
    html = c.get(local(sign("u1", "recommendations", "html", exp)))
    assert html.status_code == 200, html.text
    assert "Trail Shoe" in html.text and "Because you like shoes" in html.text
    assert html.headers["cache-control"] == "private, no-store, max-age=0"
    assert html.headers["referrer-policy"] == "no-referrer"
    data = c.get(local(sign("u1", "recommendations", "json", exp))).json()
    assert [p["product_id"] for p in data["products"]] == ["s1", "s2"] and data["user_id"] == "u1"
    # a key of the rotation list verifies too
    assert c.get(local(sign("u1", "recommendations", "html", exp, OLD))).status_code == 200
    # the bearer route stays token-protected, and is private as well
    assert c.get("/v1/content/u1/recommendations").status_code == 401
    assert signed_api.get("/v1/content/u1/recommendations").headers["cache-control"].startswith("private, no-store")


def test_png_is_a_real_image_of_the_slot(signed_api: ApiServer) -> None:
    resp = anon(signed_api).get(local(sign("u1", "recommendations", "png", int(time.time()) + 60)))
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(resp.content))
    img.load()
    assert img.format == "PNG" and img.width == 600 and img.height > 100
    assert len(set(img.convert('L').tobytes())) > 2  # text was drawn, not a blank canvas
    assert resp.headers["cache-control"] == "private, no-store, max-age=0"


def test_click_redirects_to_the_product_url(signed_api: ApiServer) -> None:
    c = anon(signed_api)
    base = local(sign("u1", "recommendations", "click", int(time.time()) + 60))
    resp = c.get(base + "&i=0")
    assert resp.status_code == 302 and resp.headers["location"] == "https://shop.example/s1"
    assert resp.headers["cache-control"] == "private, no-store, max-age=0" and resp.headers["referrer-policy"] == "no-referrer"
    nourl = c.get(base + "&i=1")  # s2 has no url
    assert nourl.status_code == 404 and nourl.json()["error"] == "no_product"
    assert c.get(base + "&i=x").status_code == 400
    # a content signature does not open the redirect, nor the other way round
    html_sig = dict(parse_qsl(urlsplit(sign("u1", "recommendations", "html", int(time.time()) + 60)).query))["sig"]
    q = dict(parse_qsl(base.split("?", 1)[1]))
    assert c.get("/c/recommendations/click", params={**q, "sig": html_sig, "i": "0"}).json()["error"] == "bad_signature"


def test_click_follows_a_browser_sent_url_only_to_an_allowed_host(server: ApiServer, r: redis.Redis) -> None:
    """A product url from a browser (public) write key (``url_trusted=0``, operators.catalogue) is
    not an open redirect for whoever holds that key: only hosts in LIVEPROFILE_CONTENT_REDIRECT_HOSTS
    (and their subdomains) are followed; a url from a server key always is."""
    r.hset("lp:profile:u3", mapping={"user_id": "u3", "top_category": "hats"})
    r.zadd("lp:category-top:hats", {"h1": 9, "h2": 8, "h3": 7})
    r.hset("lp:product:h1", mapping={"name": "Evil", "category": "hats", "url": "https://evil.test/phish", "url_trusted": "0"})
    r.hset("lp:product:h2", mapping={"name": "Sub", "category": "hats", "url": "https://eu.shop.example/h2", "url_trusted": "0"})
    r.hset("lp:product:h3", mapping={"name": "Feed", "category": "hats", "url": "https://feed.example/h3", "url_trusted": "1"})
    c = anon(server)
    base = local(sign("u3", "recommendations", "click", int(time.time()) + 60))
    evil = c.get(base + "&i=0")
    assert evil.status_code == 404 and evil.json()["error"] == "untrusted_url" and "location" not in evil.headers
    assert c.get(base + "&i=1").headers["location"] == "https://eu.shop.example/h2"
    assert c.get(base + "&i=2").headers["location"] == "https://feed.example/h3"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"user": "u2"}, "bad_signature"),  # another user's content: the signature binds the user id
        ({"format": "png"}, "bad_signature"),
        ({"exp": "9999999999"}, "bad_signature"),  # stretching the expiry
        ({"sig": "0" * 64}, "bad_signature"),
        ({"sig": "zz"}, "signature_missing"),
        ({"user": ""}, "signature_missing"),
    ],
)
def test_tampered_urls_are_refused(signed_api: ApiServer, change: dict[str, str], reason: str) -> None:
    url = local(sign("u1", "recommendations", "html", int(time.time()) + 3600))
    path, query = url.split("?", 1)
    q = {**dict(parse_qsl(query)), **change}
    resp = anon(signed_api).get(path, params=q)
    assert resp.status_code == 403 and resp.json()["error"] == reason, resp.text
    assert "message" in resp.json()


def test_other_slot_and_expiry_and_foreign_key_are_refused(signed_api: ApiServer) -> None:
    c = anon(signed_api)
    exp = int(time.time()) + 3600
    url = local(sign("u1", "recommendations", "html", exp))
    assert c.get(url.replace("/c/recommendations?", "/c/cart?")).json()["error"] == "bad_signature"
    expired = c.get(local(sign("u1", "recommendations", "html", int(time.time()) - 1)))
    assert expired.status_code == 403 and expired.json()["error"] == "expired"
    foreign = c.get(local(sign("u1", "recommendations", "html", exp, "attacker-key-0123456789")))
    assert foreign.status_code == 403 and foreign.json()["error"] == "bad_signature"


def test_signing_off_refuses_every_signed_url(make_api: Callable[..., ApiServer]) -> None:
    api = make_api()
    resp = anon(api).get(local(sign("u1", "recommendations", "html", int(time.time()) + 60)))
    assert resp.status_code == 403 and resp.json()["error"] == "signing_not_configured"
    assert api.get("/v1/content-urls/u1").status_code == 409


def test_minted_urls_work_and_are_bounded(signed_api: ApiServer) -> None:
    resp = signed_api.get("/v1/content-urls/u1", params={"slot": "recommendations", "ttl": "1h"})
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    now = time.time()
    assert now < doc["exp"] <= now + 3601 and doc["png"].startswith("https://content.example/c/recommendations?")
    c = anon(signed_api)
    assert c.get(local(doc["png"])).headers["content-type"] == "image/png"
    assert c.get(local(doc["click"][0])).headers["location"] == "https://shop.example/s1"
    assert signed_api.get("/v1/content-urls/u1", params={"ttl": "400d"}).status_code == 400
    assert anon(signed_api).get("/v1/content-urls/u1").status_code == 401


def test_braze_liquid_recipe_builds_the_same_signature() -> None:
    """docs/content.md's Braze recipe: ``{{ msg | hmac_sha256_hex: key }}`` over the capture
    ``lpc1|{slot}|{format}|{exp}|{user_id}`` — hex HMAC-SHA256 of the string, as Braze documents it."""
    exp = 2000000000
    liquid_msg = f"lpc1|recommendations|png|{exp}|u 1"
    braze_hex = hmac.new(KEY.encode(), liquid_msg.encode(), hashlib.sha256).hexdigest()
    q = dict(parse_qsl(urlsplit(sign("u 1", "recommendations", "png", exp)).query))
    assert q["sig"] == braze_hex and q["user"] == "u 1"


def test_cli_mints_a_url_the_api_accepts(signed_api: ApiServer) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "LIVEPROFILE_CONTENT_SIGNING_KEY": KEY, "LIVEPROFILE_CONTENT_BASE_URL": "https://content.example"}
    out = subprocess.run([sys.executable, "-m", "liveprofile.cli", "content-url", "u1", "--format", "png", "--ttl", "1h"],
                         env=env, capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    url = out.stdout.strip()
    assert url.startswith("https://content.example/c/recommendations?user=u1&format=png&exp=")
    assert anon(signed_api).get(local(url)).headers["content-type"] == "image/png"
