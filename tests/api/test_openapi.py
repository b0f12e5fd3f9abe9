"""The API's OpenAPI document (``GET /openapi.json``) against the real routes of the running API
(uvicorn on loopback, real redis-server).

What this proves:

* the document is valid OpenAPI 3.1 (``openapi-spec-validator``), and the API serves exactly
  :func:`liveprofile.api.openapi.document_bytes`, without a token;
* the documented operations are exactly the routing table :data:`liveprofile.api.app.ROUTES`
  the router matches (GET on each template), and an operation is documented with the bearer
  scheme exactly when its route needs a token;
* every documented operation is answered by the running API with a documented status, never the
  router's 404 ``not_found`` or 405; without a token the secured ones answer 401 (with
  ``WWW-Authenticate``), the others do not;
* real answers validate against the document's schemas: a profile rendered by the real
  renderers (:func:`operators.user.render`, RFM and model fields, the store's bookkeeping), a
  segment page, content data, and the 400/401/404 errors.
"""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import orjson
import redis
from openapi_spec_validator import validate

from liveprofile.api.app import ROUTES
from liveprofile.api.openapi import DOCUMENT, document_bytes
from operators.events import Event, Limits, parse_event
from operators.models import model_fields
from operators.rfm import RfmEdges, RfmValues, rfm_fields
from operators.user import UserConfig, render, step
from tests.api.conftest import ApiServer

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
T0 = 1714564800000  # fixed event times: the profile does not depend on the wall clock


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, m.upper()) for path, item in doc["paths"].items() for m in item if m in METHODS}


def concrete(doc: dict[str, Any], path: str) -> str:
    for p in doc["paths"][path]["get"].get("parameters", []):
        if p.get("in") == "path":
            path = path.replace("{" + p["name"] + "}", str(p["example"]))
    assert "{" not in path, f"{path}: a path parameter without an example"
    return path


def check_answer(doc: dict[str, Any], path: str, resp: httpx.Response) -> None:
    """``resp`` has a documented status and its JSON body validates against that status's schema."""
    responses = doc["paths"][path]["get"]["responses"]
    assert str(resp.status_code) in responses, (path, resp.status_code, resp.text)
    documented = responses[str(resp.status_code)]
    if "$ref" in documented:
        documented = doc["components"]["responses"][documented["$ref"].rsplit("/", 1)[1]]
    schema = documented["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({"components": doc["components"], **schema}).validate(resp.json())


def rendered_profile(uid: str) -> dict[str, str]:
    """A profile hash as the dataflow writes it: identify + views + a cart + an order through the
    real per-user step and renderers, RFM and model fields, the profile script's bookkeeping."""
    raws = [
        {"type": "identify", "userId": uid, "traits": {"email": f"{uid}@example.com"}},
        {"type": "track", "event": "Product Viewed", "userId": uid, "properties": {"category": "shoes", "product_id": "s1"}},
        {"type": "track", "event": "Product Added", "userId": uid,
         "properties": {"product_id": "s2", "name": "Runner", "price": 60, "quantity": 1, "category": "shoes"}},
        {"type": "track", "event": "Order Completed", "userId": uid,
         "properties": {"order_id": "o1", "revenue": 80, "products": [{"product_id": "s1", "price": 80, "quantity": 1}]}},
    ]  # fmt: skip
    evs = []
    for i, raw in enumerate(raws):
        t = (T0 + i * 60_000) / 1000
        ev = parse_event(orjson.dumps({**raw, "messageId": f"m{i}", "timestamp": t, "receivedAt": t}), Limits())
        assert isinstance(ev, Event), ev
        evs.append(ev)
    st, _, _ = step(UserConfig(), None, uid, evs)  # type: ignore[arg-type]
    assert st is not None
    fields = render(st)
    fields.update(rfm_fields(RfmEdges.from_json(None), RfmValues(T0, 1, 8000)))
    fields.update(model_fields(0.5, False, 0.25))
    fields.update({"seq": "4", "version": "4", "updated_at": "2024-05-01T12:03:00.000Z", "consent": '{"email": true}'})
    return fields


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["openapi"].startswith("3.1.")
    assert orjson.loads(document_bytes()) == DOCUMENT


def test_the_documented_operations_are_exactly_the_routing_table() -> None:
    assert operations(DOCUMENT) == {(r.path, "GET") for r in ROUTES}
    for r in ROUTES:
        assert bool(DOCUMENT["paths"][r.path]["get"]["security"]) == r.auth, r.path


def test_every_documented_operation_is_answered_by_the_running_api(api: ApiServer, r: redis.Redis) -> None:
    r.hset("lp:profile:u1", mapping=rendered_profile("u1"))
    anonymous = httpx.Client(base_url=f"http://127.0.0.1:{api.port}")
    served = anonymous.get("/openapi.json")  # no token
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    doc = served.json()
    assert doc == DOCUMENT
    for path, _ in sorted(operations(doc)):
        op = doc["paths"][path]["get"]
        url = concrete(doc, path)
        bare = anonymous.get(url)
        assert (bare.status_code == 401) == bool(op["security"]), (url, bare.status_code)
        if bare.status_code == 401:
            assert bare.headers["www-authenticate"].startswith("Bearer")
            check_answer(doc, path, bare)
        resp = api.get(url)
        where = f"GET {url}: {resp.status_code} {resp.text[:200]}"
        assert resp.status_code not in (401, 405), where
        if resp.headers["content-type"] == "application/json":
            assert resp.json().get("error") != "not_found", where
        assert str(resp.status_code) in op["responses"], where
    # the control: what the router does not take is told apart by the checks above
    assert api.get("/v1/nothing").json()["error"] == "not_found"
    assert api.client.post("/v1/profiles/u1").status_code == 405
    anonymous.close()


def test_real_answers_match_the_documented_schemas(api: ApiServer, r: redis.Redis) -> None:
    stored = rendered_profile("u1")
    r.hset("lp:profile:u1", mapping=stored)
    r.sadd("lp:segment:interest:shoes", "u1", "u2")
    r.zadd("lp:category-top:shoes", {"s3": 5})
    r.hset("lp:product:s3", mapping={"name": "Trail", "category": "shoes", "price": "70.00"})
    doc = api.get("/openapi.json").json()
    prof = api.get("/v1/profiles/u1")
    assert prof.status_code == 200
    body = prof.json()
    assert isinstance(body["cart"], list) and isinstance(body["interests"], dict) and body["email"] == "u1@example.com"
    assert set(body) - {"experiments"} == set(stored) - {"seq"}  # every stored field but the hidden one
    check_answer(doc, "/v1/profiles/{user_id}", prof)
    check_answer(doc, "/v1/profiles/{user_id}", api.get("/v1/profiles/nobody"))  # 404 unknown_user
    page = api.get("/v1/segments/interest:shoes", params={"count": 10})
    assert sorted(page.json()["members"]) == ["u1", "u2"]
    check_answer(doc, "/v1/segments/{name}", page)
    r.sadd("lp:segment:brand:a/b", "u3")  # documented: a segment name may contain "/"
    assert api.get("/v1/segments/brand:a/b").json() == {"segment": "brand:a/b", "members": ["u3"], "next_cursor": "0"}
    bad = api.get("/v1/segments/interest:shoes", params={"count": 0})
    assert bad.status_code == 400
    check_answer(doc, "/v1/segments/{name}", bad)
    for user in ("u1", "nobody"):
        content = api.get(f"/v1/content/{user}/recommendations", params={"format": "json"})
        assert content.status_code == 200
        check_answer(doc, "/v1/content/{user_id}/{slot}", content)
    html = api.get("/v1/content/u1/recommendations")
    assert html.status_code == 200 and html.headers["content-type"].split(";")[0] in (
        doc["paths"]["/v1/content/{user_id}/{slot}"]["get"]["responses"]["200"]["content"]
    )
    check_answer(doc, "/v1/content/{user_id}/{slot}", api.get("/v1/content/u1/nope"))  # 404 unknown_slot
    check_answer(doc, "/v1/content/{user_id}/{slot}", api.get("/v1/content/u1/cart", params={"format": "pdf"}))
    check_answer(doc, "/healthz", api.get("/healthz"))
