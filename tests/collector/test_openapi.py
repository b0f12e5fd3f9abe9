"""The collector's OpenAPI document (``GET /openapi.json``) against the real routes of a running
collector process (real redis-server, HTTP over loopback).

What this proves:

* the document is valid OpenAPI 3.1 (``openapi-spec-validator``), and the process serves exactly
  :func:`liveprofile.collector.openapi.document_bytes`, without a write key;
* the documented operations (path + method) are exactly the routing table
  :data:`liveprofile.collector.app.ROUTES` that the router matches — nothing undocumented is
  routed, nothing documented is missing;
* every documented operation is answered by the running collector with one of its documented
  statuses, never the router's 404/405 ``not_found``; operations documented with a security
  scheme refuse a request without credentials (401), the others do not;
* real answers validate against the document's schemas (a 200 with rejected events, a plain 200,
  400/401/404/413 errors, ``/healthz``), and the request schemas accept exactly the events the
  collector accepts, for a table of valid and invalid events.
"""

from __future__ import annotations

import gzip
from typing import Any

import httpx
import jsonschema
import orjson
from openapi_spec_validator import validate

from liveprofile.collector.app import ROUTES
from liveprofile.collector.openapi import DOCUMENT, document_bytes
from liveprofile.collector.signing import sign_webhook
from tests.collector.conftest import HOOK_ESP, WRITE_KEY, basic

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
AUTH = basic(WRITE_KEY)


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (path template, METHOD) the document describes."""
    return {(path, m.upper()) for path, item in doc["paths"].items() for m in item if m in METHODS}


def routed() -> set[tuple[str, str]]:
    """Every (path template, METHOD) the collector's router takes."""
    return {(r.path, m) for r in ROUTES for m in r.methods}


def concrete(doc: dict[str, Any], path: str, method: str) -> str:
    """``path`` with each path parameter replaced by its documented example."""
    for p in doc["paths"][path][method.lower()].get("parameters", []):
        if p.get("in") == "path":
            path = path.replace("{" + p["name"] + "}", str(p["example"]))
    assert "{" not in path, f"{path}: a path parameter without an example"
    return path


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A JSON Schema 2020-12 validator of ``schema`` whose ``$ref``s resolve in ``doc``."""
    return jsonschema.Draft202012Validator({"components": doc["components"], **schema})


def response_schema(doc: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    resp = doc["paths"][path][method]["responses"][str(status)]
    return resp["content"]["application/json"]["schema"]


def check_answer(doc: dict[str, Any], path: str, method: str, resp: httpx.Response) -> None:
    """``resp`` has a documented status and its JSON body validates against that status's schema."""
    responses = doc["paths"][path][method]["responses"]
    assert str(resp.status_code) in responses, (path, method, resp.status_code, resp.text)
    validator(doc, response_schema(doc, path, method, resp.status_code)).validate(resp.json())


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT)  # raises on an invalid document
    assert DOCUMENT["openapi"].startswith("3.1.")
    assert orjson.loads(document_bytes()) == DOCUMENT


def test_the_documented_operations_are_exactly_the_routing_table() -> None:
    documented, routes = operations(DOCUMENT), routed()
    assert documented - routes == set(), "documented but not routed"
    assert routes - documented == set(), "routed but not documented"


def test_every_documented_operation_is_answered_by_the_running_collector(secure: str) -> None:
    served = httpx.get(secure + "/openapi.json")  # no write key
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    doc = served.json()
    assert doc == DOCUMENT
    assert operations(doc) == routed()
    with httpx.Client(base_url=secure) as c:
        for path, method in sorted(operations(doc)):
            op = doc["paths"][path][method.lower()]
            url = concrete(doc, path, method)
            content = b"{}" if method == "POST" else None
            resp = c.request(method, url, content=content)  # no credentials at all
            where = f"{method} {url}: {resp.status_code} {resp.text[:200]}"
            assert resp.status_code != 405, where
            if resp.headers.get("content-type") == "application/json" and resp.content:
                assert resp.json().get("error") != "not_found", where
            assert str(resp.status_code) in op["responses"], where
            assert (resp.status_code == 401) == bool(op["security"]), where
        # the control: what the router does not take is told apart by the checks above
        assert c.post("/v1/import", content=b"{}", headers=AUTH).json()["error"] == "not_found"
        assert c.get("/v1/track").status_code == 405


def test_real_answers_match_the_documented_schemas(secure: str) -> None:
    doc = httpx.get(secure + "/openapi.json").json()
    with httpx.Client(base_url=secure) as c:
        batch = {"batch": [{"type": "track", "userId": "u1", "event": "Product Viewed", "messageId": "ok1"},
                           {"type": "track", "userId": "u1", "messageId": "bad1"}]}  # fmt: skip
        # the valid event is a documented batch; the other is not, and is answered in `rejected`
        validator(doc, {"$ref": "#/components/schemas/Batch"}).validate({"batch": batch["batch"][:1]})
        assert not validator(doc, {"$ref": "#/components/schemas/Batch"}).is_valid(batch)
        mixed = c.post("/v1/batch", json=batch, headers=AUTH)
        assert mixed.status_code == 200 and mixed.json()["rejected"][0]["messageId"] == "bad1"
        check_answer(doc, "/v1/batch", "post", mixed)
        plain = c.post("/v1/batch", json={"batch": batch["batch"][:1]}, headers=AUTH)
        assert plain.json() == {"success": True}
        check_answer(doc, "/v1/batch", "post", plain)
        gz = c.post("/v1/track", content=gzip.compress(orjson.dumps(batch["batch"][0])),
                    headers={**AUTH, "Content-Encoding": "gzip"})  # fmt: skip
        assert gz.status_code == 200
        check_answer(doc, "/v1/track", "post", gz)
        for body, status in ((b"{not json", 400), (b"[1]", 400), (orjson.dumps({"batch": 1}), 400)):
            resp = c.post("/v1/batch", content=body, headers=AUTH)
            assert resp.status_code == status
            check_answer(doc, "/v1/batch", "post", resp)
        single = c.post("/v1/track", json={"userId": "u1"}, headers=AUTH)  # an event-level rejection
        assert single.status_code == 400 and single.json()["error"] == "missing_event"
        check_answer(doc, "/v1/track", "post", single)
        check_answer(doc, "/v1/identify", "post", c.post("/v1/identify", json={"userId": "u1"}))  # 401
        big = c.post("/v1/batch", content=b" " * (600 * 1024), headers=AUTH)
        assert big.status_code == 413
        check_answer(doc, "/v1/batch", "post", big)
        hook = orjson.dumps({"type": "track", "userId": "w1", "event": "Order Completed", "messageId": "w1"})
        sig = {"X-Liveprofile-Signature": sign_webhook(HOOK_ESP, hook)}
        check_answer(doc, "/v1/webhooks/{source}", "post", c.post("/v1/webhooks/esp", content=hook, headers=sig))
        replay = c.post("/v1/webhooks/esp", content=hook, headers=sig)
        assert replay.status_code == 401 and replay.json()["error"] == "replayed_signature"
        check_answer(doc, "/v1/webhooks/{source}", "post", replay)
        unknown = c.post("/v1/webhooks/nobody", content=hook, headers=sig)
        assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_source"
        check_answer(doc, "/v1/webhooks/{source}", "post", unknown)
        check_answer(doc, "/healthz", "get", c.get("/healthz"))
        pixel = c.get("/v1/pixel.gif")
        assert pixel.headers["content-type"] in doc["paths"]["/v1/pixel.gif"]["get"]["responses"]["200"]["content"]


#: (event, whether the collector accepts it); none has a timestamp, so no case depends on the clock
EVENTS: list[tuple[dict[str, Any], bool]] = [
    ({"type": "track", "userId": "u1", "event": "Product Viewed"}, True),
    ({"type": "track", "userId": 42, "event": "Product Viewed"}, True),
    ({"type": "track", "userId": "u1"}, False),
    ({"type": "track", "userId": "u1", "event": "   "}, False),
    ({"type": "identify", "anonymousId": "a1", "traits": {"plan": "pro"}}, True),
    ({"type": "identify", "userId": "  ", "anonymousId": "a1"}, True),
    ({"type": "identify", "userId": "  "}, False),
    ({"type": "identify", "traits": {}}, False),
    ({"type": "identify", "userId": True}, False),
    ({"type": "identify", "userId": "x" * 257}, False),
    ({"type": "page", "userId": "u1", "name": "Home", "properties": None}, True),
    ({"type": "page", "userId": "u1", "properties": []}, False),
    ({"type": "screen", "anonymousId": "a1", "context": "nope"}, False),
    ({"type": "group", "userId": "u1", "groupId": "g1"}, True),
    ({"type": "alias", "userId": "u1", "previousId": "a1"}, True),
    ({"type": "alias", "userId": "u1"}, False),
    ({"type": "alias", "anonymousId": "a2", "previousId": "a1"}, False),
    ({"type": "bogus", "userId": "u1"}, False),
    ({"userId": "u1", "event": "Product Viewed"}, False),
]


def test_the_request_schemas_accept_exactly_what_the_collector_accepts(secure: str) -> None:
    """Each event of the table goes into one real batch; the collector's ``rejected`` list is the
    truth the ``Event`` schema's verdict is compared with (both ways). Then the single-event
    endpoints: their answer (200 or 400) against their request body schema."""
    doc = httpx.get(secure + "/openapi.json").json()
    v = validator(doc, {"$ref": "#/components/schemas/Event"})
    batch = [{**ev, "messageId": f"case{i}"} for i, (ev, _) in enumerate(EVENTS)]
    resp = httpx.post(secure + "/v1/batch", json={"batch": batch}, headers=AUTH)
    assert resp.status_code == 200
    rejected = {r["messageId"] for r in resp.json()["rejected"]}
    for i, (ev, accepted) in enumerate(EVENTS):
        assert (f"case{i}" not in rejected) == accepted, (ev, "the collector's verdict changed: fix the table")
        assert v.is_valid(batch[i]) == accepted, (ev, "the documented schema disagrees with the collector")
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("track", {"userId": "u1", "event": "Signed Up"}, 200),
        ("track", {"type": "identify", "userId": "u1"}, 400),  # the path's type wins: a track without event
        ("alias", {"userId": "u1", "previousId": "a1"}, 200),
        ("alias", {"userId": "u1"}, 400),
        ("page", {"anonymousId": "a1"}, 200),
        ("screen", {}, 400),
    ]
    for kind, body, status in cases:
        resp = httpx.post(f"{secure}/v1/{kind}", json=body, headers=AUTH)
        assert resp.status_code == status, (kind, body, resp.text)
        schema = doc["paths"][f"/v1/{kind}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert validator(doc, schema).is_valid(body) == (status == 200), (kind, body)
        check_answer(doc, f"/v1/{kind}", "post", resp)
