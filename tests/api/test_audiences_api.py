"""The audience listings of the API (issue 14 item 5): GET /v1/audiences, /v1/audiences/{name}/members,
/v1/profiles/{id}/audiences and the profile's decoded ``computed`` / ``audiences`` — against a real
Redis and a real HTTP server, each answer checked against /openapi.json's schema."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import redis

from tests.api.conftest import ApiServer
from tests.api.test_openapi import check_answer

DEFS = """version: 1
computed_traits:
  - {name: views_7d, kind: count, event: Product Viewed, window: 7d}
audiences:
  - name: browsers
    description: viewed anything this week
    when: computed.views_7d >= 1
  - name: vip
    when: computed.views_7d >= 3 and audience.browsers
    sync: {klaviyo: {list_id: LVIP}}
"""


def test_audience_listings(make_api: Callable[..., ApiServer], r: redis.Redis, tmp_path: Path) -> None:
    defs = tmp_path / "defs.yaml"
    defs.write_text(DEFS)
    api = make_api(LIVEPROFILE_DEFINITIONS=str(defs))
    members = [f"u{i}" for i in range(300)]  # more than a listpack holds: SSCAN really pages
    r.sadd("lp:audience:browsers", *members)
    r.sadd("lp:audience:vip", "u1", "u2")
    r.hset("lp:profile:u1", mapping={"user_id": "u1", "email": "u1@x.co", "computed": '{"views_7d": 4}',
                                     "audiences": '["browsers", "vip"]'})  # fmt: skip
    doc = api.get("/openapi.json").json()

    listing = api.get("/v1/audiences")
    check_answer(doc, "/v1/audiences", listing)
    assert listing.json() == {"audiences": [
        {"name": "browsers", "description": "viewed anything this week", "when": "computed.views_7d >= 1", "size": 300},
        {"name": "vip", "description": "", "when": "computed.views_7d >= 3 and audience.browsers", "size": 2}]}  # fmt: skip

    seen: list[str] = []
    cursor, pages = "0", 0
    while True:
        page = api.get("/v1/audiences/browsers/members", params={"cursor": cursor, "count": 50})
        check_answer(doc, "/v1/audiences/{name}/members", page)
        body = page.json()
        assert body["audience"] == "browsers"
        seen += body["members"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor == "0":
            break
    assert pages > 1 and sorted(set(seen)) == sorted(members)  # SSCAN: every member at least once
    capped = api.get("/v1/audiences/browsers/members", params={"count": 100000})
    assert capped.status_code == 200 and len(capped.json()["members"]) <= 1100  # taken as 1000 (a hint)
    for bad in ({"count": "0"}, {"cursor": "nope"}, {"cursor": "0-0"}, {"cursor": "7-1"}):
        resp = api.get("/v1/audiences/browsers/members", params=bad)
        assert resp.status_code == 400 and resp.json()["error"] == "bad_query", bad
        check_answer(doc, "/v1/audiences/{name}/members", resp)
    unknown = api.get("/v1/audiences/nope/members")
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_audience"
    check_answer(doc, "/v1/audiences/{name}/members", unknown)

    prof = api.get("/v1/profiles/u1").json()
    assert prof["computed"] == {"views_7d": 4} and prof["audiences"] == ["browsers", "vip"]  # decoded JSON
    mine = api.get("/v1/profiles/u1/audiences")
    check_answer(doc, "/v1/profiles/{user_id}/audiences", mine)
    assert mine.json() == {"user_id": "u1", "audiences": ["browsers", "vip"], "computed": {"views_7d": 4}}
    r.hset("lp:profile:old", mapping={"user_id": "old", "merged_into": "u1"})  # a merged id: the survivor's
    assert api.get("/v1/profiles/old/audiences").json()["audiences"] == ["browsers", "vip"]
    r.hset("lp:profile:u9", mapping={"user_id": "u9", "email": "u9@x.co"})  # no definitions ran on it
    assert api.get("/v1/profiles/u9/audiences").json() == {"user_id": "u9", "audiences": [], "computed": {}}
    gone = api.get("/v1/profiles/nobody/audiences")
    assert gone.status_code == 404 and gone.json()["error"] == "unknown_user"

    anonymous = httpx.Client(base_url=f"http://127.0.0.1:{api.port}")
    for path in ("/v1/audiences", "/v1/audiences/vip/members", "/v1/profiles/u1/audiences"):
        assert anonymous.get(path).status_code == 401, path  # token-protected like the rest
    anonymous.close()


def test_no_definitions_no_audiences(api: ApiServer, r: redis.Redis) -> None:
    assert orjson.loads(api.get("/v1/audiences").content) == {"audiences": []}
    assert api.get("/v1/audiences/vip/members").status_code == 404
