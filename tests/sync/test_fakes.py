"""The fake vendors check requests on their own: signatures, keys and shapes from the documented
scheme, never with the code under test (so a wrong signature or shape from the sync fails)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable

import httpx

from tests.sync.fakes import FakeVendor

Make = Callable[..., FakeVendor]


def _item(uid: str, version: int) -> dict[str, object]:
    return {"user_id": uid, "version": version, "from_version": version, "idempotency_key": f"{uid}:{version}",
            "changed": {"email": f"{uid}@x.co"}, "events": [], "deleted": False}  # fmt: skip


def _post(vendor: FakeVendor, body: bytes, *, secret: str = "whsec", ts: int | None = None, sig: str | None = None,
          key: str = "k1") -> int:  # fmt: skip
    """POST a webhook batch signed by hand: hex HMAC-SHA256(secret, "{ts}." + body), "v1=" prefix."""
    ts = int(time.time()) if ts is None else ts  # the scheme signs wall-clock Unix seconds
    if sig is None:
        sig = "v1=" + hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    headers = {"content-type": "application/json", "idempotency-key": key,
               "X-Liveprofile-Timestamp": str(ts), "X-Liveprofile-Signature": sig}  # fmt: skip
    return httpx.post(vendor.url, content=body, headers=headers).status_code


def test_webhook_fake_checks_the_signature_itself(make_vendor: Make) -> None:
    """A hand-signed batch is applied; a wrong secret, a changed body, a stale timestamp, a
    signature without the ``"."`` separator or over SHA-1 are refused 401 and recorded."""
    hook = make_vendor("webhook")
    body = json.dumps({"destination": "hook", "batch_key": "k1", "items": [_item("u1", 1)]}).encode()
    assert _post(hook, body) == 200
    assert [rec["key"] for rec in hook.applied] == ["u1:1"] and hook.violations == []

    now = int(time.time())
    assert _post(hook, body, secret="other") == 401
    assert _post(hook, body, sig=None, ts=now - 3600) == 401  # signed correctly, but an hour old
    good = "v1=" + hmac.new(b"whsec", f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    assert _post(hook, body + b" ", ts=now, sig=good) == 401  # body changed after signing
    no_dot = "v1=" + hmac.new(b"whsec", f"{now}".encode() + body, hashlib.sha256).hexdigest()
    assert _post(hook, body, ts=now, sig=no_dot) == 401
    sha1 = "v1=" + hmac.new(b"whsec", f"{now}.".encode() + body, hashlib.sha1).hexdigest()
    assert _post(hook, body, ts=now, sig=sha1) == 401
    assert _post(hook, body, ts=now, sig=good.removeprefix("v1=")) == 401
    assert hook.violations == ["bad webhook signature"] * 6
    assert len(hook.applied) == 1  # nothing refused was applied


def test_webhook_fake_checks_keys_and_shape(make_vendor: Make) -> None:
    """The batch key must equal the header and always name the same items; items carry exactly the
    documented keys with ``idempotency_key = user:version``; a deletion carries nothing else."""
    hook = make_vendor("webhook")

    def batch(key: str, *items: dict[str, object]) -> bytes:
        return json.dumps({"destination": "hook", "batch_key": key, "items": list(items)}).encode()

    assert _post(hook, batch("k1", _item("u1", 1)), key="k1") == 200
    assert _post(hook, batch("k1", _item("u1", 1)), key="k1") == 200  # a retry: same key, same items
    assert _post(hook, batch("k1", _item("u2", 1)), key="k1") == 400  # same key, other items
    assert _post(hook, batch("k2", _item("u1", 1)), key="k3") == 400  # header differs from the body
    assert _post(hook, batch("k4", {**_item("u1", 2), "idempotency_key": "u1:9"}), key="k4") == 400
    assert _post(hook, batch("k5", {**_item("u1", 3), "extra": 1}), key="k5") == 400
    assert _post(hook, batch("k6", {**_item("u1", 4), "deleted": True}), key="k6") == 400  # deletion with fields
    assert len(hook.violations) == 5
    assert [rec["key"] for rec in hook.applied] == ["u1:1", "u1:1"] and hook.duplicates == 1


def test_braze_and_klaviyo_fakes_check_deletion_shapes(make_vendor: Make) -> None:
    """Braze ``/users/delete`` takes one kind of identifier list per request (≤ 50 ids); Klaviyo's
    deletion job names the profile by exactly one of ``email``/``phone_number``/``id`` — never
    ``external_id`` — as Klaviyo's API reference says."""
    braze = make_vendor("braze")
    auth = {"authorization": "Bearer key-1"}
    assert httpx.post(braze.url + "/users/delete", json={"external_ids": ["u1"]}, headers=auth).status_code == 201
    assert httpx.post(braze.url + "/users/delete", json={"user_ids": ["u1"]}, headers=auth).status_code == 400
    assert httpx.post(braze.url + "/users/delete", json={"external_ids": [f"u{i}" for i in range(51)]},
                      headers=auth).status_code == 400  # fmt: skip
    assert httpx.post(braze.url + "/users/delete", json={"external_ids": ["u2"], "braze_ids": ["b2"]},
                      headers=auth).status_code == 400  # "Only one of ... can be included in a single request"  # fmt: skip
    assert [rec["user_id"] for rec in braze.applied] == ["u1"] and len(braze.violations) == 3

    def deletion(**ident: str) -> bytes:
        return json.dumps({"data": {"type": "data-privacy-deletion-job", "attributes": {
            "profile": {"data": {"type": "profile", "attributes": ident}}}}}).encode()  # fmt: skip

    hdrs = {"authorization": "Klaviyo-API-Key key-1", "revision": "2024-10-15", "content-type": "application/vnd.api+json"}
    klav = make_vendor("klaviyo")
    url = klav.url + "/api/data-privacy-deletion-jobs"
    assert httpx.post(url, content=deletion(email="a@b.co"), headers=hdrs).status_code == 202
    assert httpx.post(url, content=deletion(phone_number="+15005550006"), headers=hdrs).status_code == 202
    assert httpx.post(url, content=deletion(external_id="u1"), headers=hdrs).status_code == 400
    assert httpx.post(url, content=deletion(email="a@b.co", phone_number="+15005550006"), headers=hdrs).status_code == 400
    assert httpx.post(url, content=deletion(), headers=hdrs).status_code == 400
    assert [rec["identifier"] for rec in klav.applied] == ["email", "phone_number"] and len(klav.violations) == 3


def _klaviyo_requests() -> list[tuple[str, bytes, dict[str, str]]]:
    """What the real Klaviyo adapter sends for a mixed batch: (path, body, headers)."""
    from liveprofile.sync.config import DestinationConfig
    from liveprofile.sync.destinations.klaviyo import KlaviyoDestination
    from liveprofile.sync.model import Item

    d = KlaviyoDestination(DestinationConfig("k", "klaviyo", "http://x", api_key="key-1"))
    ev = {"name": "Cart Abandoned", "ts": "2024-05-01T12:00:00.000Z", "properties": {"cart_value": 12.5}}
    items = [Item("u1", 3, 1, {"email": "u1@x.co", "cart_value": "12.50", "top_category": ""}, [ev]),
             Item("u2", 2, 2, deleted=True, identities={"email": "u2@x.co"}),
             Item("u3", 2, 2, deleted=True, identities={"klaviyo_id": FakeVendor.klaviyo_id("u3")})]  # fmt: skip
    return [(r.url.removeprefix("http://x"), r.body, {k.lower(): v for k, v in d.headers(r).items()}) for r in d.build(items)]


def test_klaviyo_fake_validates_requests_against_the_openapi_document(make_vendor: Make) -> None:
    """Every request is checked against Klaviyo's published OpenAPI document (tests/sync/contracts):
    the adapter's requests pass; a wrong type, a missing member, a wrong revision, content type or
    auth scheme, or an operation the API does not have are refused 400/401 and recorded."""
    from tests.sync.contracts import klaviyo

    contract = klaviyo()
    sent = _klaviyo_requests()
    assert sorted(p for p, _, _ in sent) == ["/api/data-privacy-deletion-jobs"] * 2 + ["/api/event-bulk-create-jobs",
                                             "/api/profile-bulk-import-jobs", "/api/profile-import"]  # fmt: skip
    for path, body, hdrs in sent:
        assert contract.request_errors("POST", path, hdrs, body) == [], path
    klav = make_vendor("klaviyo")
    for path, body, hdrs in sent:
        if json.loads(body)["data"]["attributes"].get("profile", {}).get("data", {}).get("id"):
            continue  # deletion by id: below, once the fake holds u3
        assert httpx.post(klav.url + path, content=body, headers=hdrs).status_code in (200, 202), path
    assert klav.violations == []
    # the lookup of a profile's Klaviyo id by external_id, answered in the documented shape, then deleted by id
    from liveprofile.sync.config import DestinationConfig
    from liveprofile.sync.destinations.klaviyo import KlaviyoDestination
    from liveprofile.sync.model import Item

    d = KlaviyoDestination(DestinationConfig("k", "klaviyo", klav.url, api_key="key-1"))
    imp = next(s for s in sent if s[0] == "/api/profile-bulk-import-jobs")
    u3 = json.loads(imp[1])
    u3["data"]["attributes"]["profiles"]["data"][0]["attributes"]["external_id"] = 'u"3'
    assert httpx.post(klav.url + imp[0], content=json.dumps(u3).encode(), headers=imp[2]).status_code == 202
    gone = Item('u"3', 2, 2, deleted=True)
    url = d.lookup(gone)
    assert url is not None and url.startswith(klav.url + "/api/profiles?filter=equals%28external_id%2C%22u%5C%223%22%29")
    resp = httpx.get(url, headers={k: v for k, v in imp[2].items() if k != "content-type"})
    assert resp.status_code == 200 and contract.response_errors("GET", "/api/profiles", 200, resp.content) == []
    assert d.found(gone, resp.content) and gone.identities["klaviyo_id"] == FakeVendor.klaviyo_id('u"3')
    (req,) = d.build([gone])
    assert contract.request_errors("POST", "/api/data-privacy-deletion-jobs", imp[2], req.body) == []
    assert httpx.post(req.url, content=req.body, headers=imp[2]).status_code == 202
    assert klav.lookups == ['u"3'] and klav.applied[-1]["user_id"] == 'u"3' and klav.violations == []

    path, body, hdrs = next(s for s in sent if s[0] == "/api/profile-bulk-import-jobs")
    doc = json.loads(body)
    wrong_type = json.loads(body)
    wrong_type["data"]["attributes"]["profiles"]["data"][0]["attributes"]["email"] = 5
    no_type = json.loads(body)
    del no_type["data"]["type"]
    cases = [
        (path, json.dumps(wrong_type).encode(), hdrs, 400),
        (path, json.dumps(no_type).encode(), hdrs, 400),
        (path, json.dumps(doc).encode(), {**hdrs, "revision": "2023-02-22"}, 400),
        (path, json.dumps(doc).encode(), {**hdrs, "content-type": "application/json"}, 400),
        (path, json.dumps(doc).encode(), {**hdrs, "authorization": "Bearer key-1"}, 401),
        ("/api/profile-bulk-import", json.dumps(doc).encode(), hdrs, 400),
    ]
    for p, b, h, want in cases:
        assert httpx.post(klav.url + p, content=b, headers=h).status_code == want, (p, h)
    assert len(klav.violations) == len(cases)
    assert "is not of type 'string', 'null'" in klav.violations[0] and "'type' is a required property" in klav.violations[1]


def test_klaviyo_fake_jobs_answer_in_the_documented_shape(make_vendor: Make) -> None:
    """An import job's POST, status GET and import-errors pages (followed by ``links.next``) validate
    against the response schemas of the same document, and name each failed profile."""
    from tests.sync.contracts import klaviyo

    contract = klaviyo()
    klav = make_vendor("klaviyo", job_polls=1, errors_page=1)
    klav.refuse_objects = {"u1", "u9"}
    path, body, hdrs = next(s for s in _klaviyo_requests() if s[0] == "/api/profile-bulk-import-jobs")
    doc = json.loads(body)
    doc["data"]["attributes"]["profiles"]["data"].append({"type": "profile", "attributes": {"external_id": "u9", "email": "u9@x.co"}})
    resp = httpx.post(klav.url + path, content=json.dumps(doc).encode(), headers=hdrs)
    assert resp.status_code == 202 and contract.response_errors("POST", path, 202, resp.content) == []
    job = resp.json()["data"]["id"]
    get = {k: v for k, v in hdrs.items() if k != "content-type"}
    status = [httpx.get(f"{klav.url}{path}/{job}", headers=get) for _ in range(2)]
    for s in status:
        assert contract.response_errors("GET", f"{path}/{job}", 200, s.content) == []
    assert [s.json()["data"]["attributes"]["status"] for s in status] == ["processing", "complete"]
    assert status[1].json()["data"]["attributes"]["failed_count"] == 2
    url, failed = f"{klav.url}{path}/{job}/import-errors", []
    while url:
        page = httpx.get(url, headers=get)
        assert contract.response_errors("GET", f"{path}/{job}/import-errors", 200, page.content) == []
        failed += [e["attributes"]["original_payload"]["external_id"] for e in page.json()["data"]]
        url = page.json()["links"].get("next")
    assert failed == ["u1", "u9"] and klav.violations == []
    assert httpx.get(f"{klav.url}{path}/{job}", headers={**get, "revision": "2020-01-01"}).status_code == 400


def test_braze_fake_checks_the_documented_track_rules(make_vendor: Make) -> None:
    """/users/track: at most 75 objects of each kind, every object names a user, an event has a
    name and an ISO 8601 ``time``; JSON content type, Bearer auth. Objects of users the vendor
    refuses one by one come back in ``errors`` of a 201 while the rest is applied."""
    braze = make_vendor("braze")
    h = {"authorization": "Bearer key-1", "content-type": "application/json"}

    def track(**body: object) -> httpx.Response:
        return httpx.post(braze.url + "/users/track", content=json.dumps(body).encode(), headers=h)

    ev = {"external_id": "u1", "name": "Cart Abandoned", "time": "2024-05-01T12:00:00.000Z"}
    assert track(events=[ev]).status_code == 201
    assert track(events=[{**ev, "time": None}]).status_code == 400
    assert track(events=[{k: v for k, v in ev.items() if k != "name"}]).status_code == 400
    assert track(attributes=[{"first_name": "x"}]).status_code == 400  # no user identifier
    assert track(events=[ev] * 76).status_code == 400
    assert track(attributes=[{"external_id": f"u{i}"} for i in range(75)], events=[ev] * 75).status_code == 201
    assert track().status_code == 400
    assert httpx.post(braze.url + "/users/track", content=json.dumps({"events": [ev]}).encode(),
                      headers={**h, "content-type": "text/plain"}).status_code == 400  # fmt: skip
    assert len(braze.violations) == 6
    braze.refuse_objects = {"bad"}
    resp = track(attributes=[{"external_id": "ok", "x": 1}, {"external_id": "bad", "x": 2}])
    assert resp.status_code == 201
    assert resp.json()["errors"] == [{"type": "invalid attributes object for bad", "input_array": "attributes", "index": 1}]
    assert [rec["user_id"] for rec in braze.applied][-1] == "ok"
