"""The collector's browser routes over real HTTP (a collector process, a real redis-server).

Each test failed on main before the browser routes existed (short paths and the Pixel API 404,
``OPTIONS`` 405 without CORS headers, no settings endpoints):

* the short paths ``/v1/t|i|p|s|g|a|b`` take ``text/plain`` bodies as the long paths do;
* CORS: a preflight from an allowed origin is granted (origin echoed, credentials, the SDKs'
  headers), every answer to it carries the grant, errors included; another origin gets no grant;
  the default (no ``LIVEPROFILE_CORS_ORIGINS``) grants nobody;
* the analytics.js settings and RudderStack source config send the SDKs to this collector, and
  an unknown write key is 401;
* Segment's Pixel API takes a base64 event with its write key and answers the GIF; a browser
  key's pixel event is stamped ``browser``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import orjson
import pytest
import redis

from liveprofile.collector.pixel import PIXEL_GIF
from tests.collector.conftest import SECURE_ENV, WRITE_KEY, basic, buffered, dead, launch
from tests.procs import base_env
from tests.redis_server import RedisServer

SHOP = "http://shop.example:8000"
EVIL = "http://evil.example:8000"
BROWSER_KEY = "browser-pub-0123456789abcdef"


@pytest.fixture(scope="module")
def cors(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One collector for the module (on the session's redis-server, which ``r`` flushes per test)."""
    env = base_env(redis_server.url, **{**SECURE_ENV, "LIVEPROFILE_CORS_ORIGINS": f"{SHOP}/, http://other.example",
                                        "LIVEPROFILE_BROWSER_WRITE_KEYS": BROWSER_KEY})  # fmt: skip
    proc, url = launch(env, tmp_path_factory.mktemp("cors"))
    yield url
    proc.stop()


def text_plain(key: str = WRITE_KEY, origin: str | None = SHOP) -> dict[str, str]:
    h = {**basic(key), "Content-Type": "text/plain"}
    if origin:
        h["Origin"] = origin
    return h


def test_short_paths_take_text_plain_bodies_like_the_long_paths(cors: str, r: redis.Redis) -> None:
    calls = {
        "t": {"userId": "u1", "event": "Product Viewed", "messageId": "m-t"},
        "i": {"userId": "u1", "traits": {"email": "u1@example.com"}, "messageId": "m-i"},
        "p": {"userId": "u1", "name": "Home", "messageId": "m-p"},
        "s": {"userId": "u1", "name": "Home", "messageId": "m-s"},
        "g": {"userId": "u1", "groupId": "g1", "messageId": "m-g"},
        "a": {"userId": "u1", "previousId": "anon-1", "messageId": "m-a"},
    }
    with httpx.Client(base_url=cors) as c:
        for letter, ev in calls.items():
            resp = c.post(f"/v1/{letter}", content=orjson.dumps(ev), headers=text_plain())
            assert resp.status_code == 200, (letter, resp.text)
        batch = {"batch": [{"type": "track", "userId": "u2", "event": "Order Completed", "messageId": "m-b1"},
                           {"type": "page", "userId": "u2", "messageId": "m-b2"}], "sentAt": "2026-01-01T00:00:00Z"}  # fmt: skip
        resp = c.post("/v1/b", content=orjson.dumps(batch), headers=text_plain())
        assert resp.status_code == 200 and resp.json() == {"success": True}
    got = {e["messageId"]: e["type"] for e in buffered(r)}
    assert got == {"m-t": "track", "m-i": "identify", "m-p": "page", "m-s": "screen", "m-g": "group",
                   "m-a": "alias", "m-b1": "track", "m-b2": "page"}  # fmt: skip
    assert dead(r) == []


def test_preflight_grants_an_allowed_origin_and_refuses_another(cors: str) -> None:
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    with httpx.Client(base_url=cors) as c:
        for path in ("/v1/t", "/v1/b", "/v1/batch", "/v1/track", "/sourceConfig/", f"/v1/projects/{BROWSER_KEY}/settings"):
            ok = c.options(path, headers={"Origin": SHOP, **ask})
            assert ok.status_code == 204, (path, ok.text)
            assert ok.headers["access-control-allow-origin"] == SHOP  # echoed, never *
            assert ok.headers["access-control-allow-credentials"] == "true"
            allowed = {h.strip().lower() for h in ok.headers["access-control-allow-headers"].split(",")}
            assert {"authorization", "content-type", "content-encoding"} <= allowed
            assert "Origin" in ok.headers["vary"]
            no = c.options(path, headers={"Origin": EVIL, **ask})
            assert no.status_code == 403 and no.json()["error"] == "cors_origin_not_allowed"
            assert not any(h.startswith("access-control-allow") for h in no.headers)
        assert c.options("/v1/t").status_code == 204  # no Origin: not a preflight


def test_every_answer_to_an_allowed_origin_carries_the_grant_errors_included(cors: str) -> None:
    with httpx.Client(base_url=cors) as c:
        answers = [
            c.post("/v1/t", content=b'{"userId":"u1","event":"X"}', headers=text_plain()),  # 200
            c.post("/v1/t", content=b"{not json", headers=text_plain()),  # 400
            c.post("/v1/t", content=b'{"userId":"u1","event":"X"}', headers=text_plain("no-such-key")),  # 401
            c.post("/v1/t", content=b'{"userId":"u1"}', headers=text_plain()),  # 400: a dead-lettered event
        ]
        assert [a.status_code for a in answers] == [200, 400, 401, 400]
        for a in answers:
            assert a.headers["access-control-allow-origin"] == SHOP and a.headers["vary"] == "Origin"
        evil = c.post("/v1/t", content=b'{"userId":"u1","event":"X"}', headers=text_plain(origin=EVIL))
        assert "access-control-allow-origin" not in evil.headers and evil.headers["vary"] == "Origin"


def test_no_origin_is_granted_by_default(secure: str) -> None:
    with httpx.Client(base_url=secure) as c:
        pre = c.options("/v1/t", headers={"Origin": SHOP, "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
        resp = c.post("/v1/t", content=b'{"userId":"u1","event":"X"}', headers=text_plain())
        assert resp.status_code == 200 and "access-control-allow-origin" not in resp.headers


def test_settings_endpoints_send_the_sdks_here(cors: str) -> None:
    host = cors.removeprefix("http://")
    with httpx.Client(base_url=cors) as c:
        seg = c.get(f"/v1/projects/{BROWSER_KEY}/settings", headers={"Origin": SHOP})
        assert seg.status_code == 200 and seg.headers["access-control-allow-origin"] == SHOP
        sio = seg.json()["integrations"]["Segment.io"]
        assert sio["apiHost"] == f"{host}/v1" and sio["protocol"] == "http" and sio["apiKey"] == BROWSER_KEY
        assert list(seg.json()["integrations"]) == ["Segment.io"]  # no device-mode destinations
        assert seg.json()["metrics"]["sampleRate"] == 0
        rs = c.get("/sourceConfig/", params={"p": "npm", "v": "3.34.1", "writeKey": BROWSER_KEY})
        assert rs.status_code == 200
        assert rs.json()["source"]["enabled"] is True and rs.json()["source"]["destinations"] == []
        for bad in (c.get("/v1/projects/no-such-key/settings"), c.get("/sourceConfig", params={"writeKey": "no-such-key"}),
                    c.get("/sourceConfig")):  # fmt: skip
            assert bad.status_code == 401 and bad.json()["error"] == "unauthorized"


def pixel_data(event: dict) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(event)).decode().rstrip("=")


def test_pixel_api_takes_the_event_and_answers_the_gif(cors: str, r: redis.Redis) -> None:
    with httpx.Client(base_url=cors) as c:
        ok = c.get("/v1/pixel/track", params={"data": pixel_data({"writeKey": BROWSER_KEY, "userId": "u9", "event": "Email Clicked", "messageId": "px-1", "_trust": None})})
        assert ok.status_code == 200 and ok.content == PIXEL_GIF and ok.headers["content-type"] == "image/gif"
        page = c.get("/v1/pixel/page", params={"data": pixel_data({"writeKey": WRITE_KEY, "anonymousId": "a9", "messageId": "px-2"})})
        assert page.status_code == 200 and page.content == PIXEL_GIF
        assert c.get("/v1/pixel/track", params={"data": "!!"}).json()["error"] == "malformed_data"
        nokey = c.get("/v1/pixel/track", params={"data": pixel_data({"userId": "u9", "event": "X"})})
        assert nokey.status_code == 401
        # the Basic header is not read: the key comes from data alone
        hdr = c.get("/v1/pixel/track", params={"data": pixel_data({"userId": "u9", "event": "X"})}, headers=basic(WRITE_KEY))
        assert hdr.status_code == 401
        assert c.get("/v1/pixel/purchase", params={"data": pixel_data({"writeKey": WRITE_KEY})}).status_code == 404
        invalid = c.get("/v1/pixel/track", params={"data": pixel_data({"writeKey": WRITE_KEY, "userId": "u9"})})
        assert invalid.status_code == 400  # no event name: dead-lettered, as POST /v1/track answers
    got = {e["messageId"]: e for e in buffered(r)}
    assert set(got) == {"px-1", "px-2"}
    assert got["px-1"]["type"] == "track" and got["px-2"]["type"] == "page"
    assert got["px-1"]["_trust"] == "browser" and "_trust" not in got["px-2"]  # the key in data decides the trust
    assert len(dead(r)) == 1
