"""The API over real HTTP against a real redis-server: auth, profiles, segments, content."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import redis

from tests.api.conftest import ApiServer
from tests.api.test_experiments import SUBJECT, reference_variant

CART = [
    {"product_id": "p1", "name": "<script>alert(1)</script> Boots", "category": "shoes", "price": "80.00", "quantity": 1},
    {"product_id": "s2", "name": "Runner & Co", "category": "shoes", "price": "60.00", "quantity": 2},
]


def catalogue(r: redis.Redis) -> None:
    for cat, products in {"shoes": {"s1": 90, "s2": 80, "s3": 70, "s4": 60, "s5": 50, "s6": 40},
                          "hats": {"h1": 100, "h2": 10}, "bags": {"b1": 85}}.items():  # fmt: skip
        r.zadd(f"lp:category-top:{cat}", products)
        for pid in products:
            r.hset(f"lp:product:{pid}", mapping={"name": f"Product {pid}", "category": cat, "price": "9.99",
                                                 "url": f"https://shop.example/{pid}?a=1&b=2"})  # fmt: skip


def profile(r: redis.Redis, uid: str, **fields: str) -> None:
    r.hset(f"lp:profile:{uid}", mapping={"user_id": uid, "event_count": "3", "revenue_total": "12.50", "version": "3",
                                         "seq": "9", **fields})  # fmt: skip


def test_auth(api: ApiServer, r: redis.Redis) -> None:
    profile(r, "u1")
    url = f"http://127.0.0.1:{api.port}/v1/profiles/u1"
    resp = httpx.get(url)
    assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Bearer")
    assert resp.json()["error"] == "unauthorized"
    assert httpx.get(url, headers={"Authorization": "Bearer tok-12"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Basic dG9rLTEyMzo="}).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer other-token"}).status_code == 200
    assert api.get("/v1/profiles/u1").status_code == 200
    assert httpx.get(f"http://127.0.0.1:{api.port}/v1/segments/x").status_code == 401
    assert httpx.get(f"http://127.0.0.1:{api.port}/v1/content/u1/cart").status_code == 401
    assert httpx.get(f"http://127.0.0.1:{api.port}/healthz").json() == {"status": "ok"}


def test_profile(api: ApiServer, r: redis.Redis) -> None:
    profile(r, "u1", interests='{"shoes": 2.5}', consent='{"email": true}', email="a@b.co")
    body = api.get("/v1/profiles/u1").json()
    assert body["revenue_total"] == "12.50" and body["event_count"] == "3"  # numbers stay strings as stored
    assert body["interests"] == {"shoes": 2.5} and body["consent"] == {"email": True}  # JSON fields decoded
    assert "seq" not in body  # dataflow bookkeeping hidden
    assert set(body["experiments"]) == {"subject", "hero"}
    missing = api.get("/v1/profiles/nobody")
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_user"
    profile(r, "old", merged_into="u1")
    assert api.get("/v1/profiles/old").json()["email"] == "a@b.co"
    # issue 12: merges of known users chain (A -> B -> u1), and are followed to the survivor
    profile(r, "A", merged_into="B")
    profile(r, "B", merged_into="u1")
    assert api.get("/v1/profiles/A").json()["user_id"] == "u1"
    # an anonymous profile named like a known user is another key family: never answered for them
    r.hset("lp:profile-anon:u1", mapping={"user_id": "u1", "email": "attacker@evil.example", "merged_into": "attacker"})
    assert api.get("/v1/profiles/u1").json()["email"] == "a@b.co"
    assert api.get("/v1/nothing").status_code == 404
    assert api.client.post("/v1/profiles/u1").status_code == 405


def test_segment_paging(api: ApiServer, r: redis.Redis) -> None:
    members = {f"u{i}" for i in range(2500)}
    r.sadd("lp:segment:interest:shoes", *members)
    seen: list[str] = []
    cursor = "0"
    pages = 0
    while True:
        page = api.get("/v1/segments/interest:shoes", params={"cursor": cursor, "count": 300}).json()
        assert page["segment"] == "interest:shoes"
        seen += page["members"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor == "0":
            break
    assert set(seen) == members and pages > 2
    assert api.get("/v1/segments/none").json() == {"segment": "none", "members": [], "next_cursor": "0"}
    assert api.get("/v1/segments/x", params={"count": 0}).status_code == 400
    assert api.get("/v1/segments/x", params={"cursor": "abc"}).status_code == 400


def test_cart_content_is_escaped(api: ApiServer, r: redis.Redis) -> None:
    catalogue(r)
    profile(r, "u1", cart=orjson.dumps(CART).decode(), cart_value="200.00", top_category="shoes")
    resp = api.get("/v1/content/u1/cart")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    html = resp.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Boots" in html and "<script>" not in html
    assert "Runner &amp; Co" in html and "Total: 200.00" in html
    data = api.get("/v1/content/u1/cart", params={"format": "json"}).json()
    assert [p["product_id"] for p in data["cart"]] == ["p1", "s2"] and data["fallback"] is False


def test_recommendations_exclude_the_cart(api: ApiServer, r: redis.Redis) -> None:
    catalogue(r)
    profile(r, "u1", cart=orjson.dumps(CART).decode(), top_category="shoes")
    data = api.get("/v1/content/u1/recommendations", params={"format": "json"}).json()
    assert [p["product_id"] for p in data["products"]] == ["s1", "s3", "s4", "s5"]  # s2 is in the cart
    html = api.get("/v1/content/u1/recommendations").text
    assert "Because you like shoes" in html and 'href="https://shop.example/s1?a=1&amp;b=2"' in html
    profile(r, "u2", interests='{"hats": 5, "shoes": 1}')  # no top_category: highest interest
    data = api.get("/v1/content/u2/recommendations", params={"format": "json"}).json()
    assert data["top_category"] == "hats" and [p["product_id"] for p in data["products"]] == ["h1", "h2"]


def test_fallback_bestsellers(api: ApiServer, r: redis.Redis) -> None:
    catalogue(r)
    for slot in ("recommendations", "cart"):
        data = api.get(f"/v1/content/stranger/{slot}", params={"format": "json"}).json()
        assert data["known"] is False and data["fallback"] is True
        assert [p["product_id"] for p in data["products"]] == ["h1", "s1", "b1", "s2"]  # across categories
        assert "Bestsellers" in api.get(f"/v1/content/stranger/{slot}").text
    profile(r, "nocat")  # known, but no category and an empty cart
    assert api.get("/v1/content/nocat/recommendations", params={"format": "json"}).json()["fallback"] is True
    assert api.get("/v1/content/u1/nope").status_code == 404
    assert api.get("/v1/content/u1/cart", params={"format": "xml"}).status_code == 400


def test_template_directory_and_sandbox(make_api: Callable[..., ApiServer], templates: Path, r: redis.Redis) -> None:
    (templates / "cart.html").write_text("custom cart of {{ user_id }}: {{ cart|length }} item(s)")
    (templates / "banner.html").write_text("{% if experiments.subject == 'urgent' %}HURRY{% else %}hello{% endif %} {{ profile.email }}")
    (templates / "evil.html").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    api = make_api(LIVEPROFILE_API_TEMPLATES=str(templates))
    profile(r, "u1", cart=orjson.dumps(CART).decode(), email="<b>@x.co")
    profile(r, "u0", email="c@d.co")
    assert api.get("/v1/content/u1/cart").text == "custom cart of u1: 2 item(s)"
    # Both branches, from fixed vectors (tests/api/test_experiments.py PINNED, computed by the
    # independent reference rule): subject assigns u0 "urgent" and u1 "control".
    assert reference_variant("subject", "", "u0", SUBJECT) == "urgent"
    assert reference_variant("subject", "", "u1", SUBJECT) == "control"
    assert api.get("/v1/content/u0/banner").text == "HURRY c@d.co"
    assert api.get("/v1/content/u1/banner").text == "hello &lt;b&gt;@x.co"
    evil = api.get("/v1/content/u1/evil")
    assert evil.status_code == 500 and evil.json()["error"] == "template_error"
    assert "subclasses" not in evil.text and "object" not in evil.text


def test_traits_in_the_profile_and_in_templates(make_api: Callable[..., ApiServer], templates: Path, r: redis.Redis) -> None:
    """The profile's ``traits`` are decoded by /v1/profiles and are ``traits`` in a template
    (escaped like every profile value); a user without traits renders an empty one."""
    (templates / "hi.html").write_text("Hi {{ traits.first_name or 'there' }}{% if traits.plan %} ({{ traits.plan }}){% endif %}")
    api = make_api(LIVEPROFILE_API_TEMPLATES=str(templates))
    profile(r, "u1", traits=orjson.dumps({"first_name": "Ann", "plan": "<pro>"}).decode())
    profile(r, "u2")
    assert api.get("/v1/profiles/u1").json()["traits"] == {"first_name": "Ann", "plan": "<pro>"}
    assert api.get("/v1/content/u1/hi").text == "Hi Ann (&lt;pro&gt;)"
    assert api.get("/v1/content/u2/hi").text == "Hi there"
    assert api.get("/v1/content/u1/hi", params={"format": "json"}).json()["traits"]["first_name"] == "Ann"


def test_metrics(api: ApiServer, r: redis.Redis) -> None:
    api.get("/v1/profiles/nobody")
    text = httpx.get(f"http://127.0.0.1:{api.port}/metrics").text
    assert 'liveprofile_api_requests_total{route="profile",status="404"} 1.0' in text
