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
    """Braze ``/users/delete`` takes identifier lists only (≤ 50 ids); Klaviyo's deletion job names the
    profile by exactly one identifier — in strict mode only by ``email``/``phone_number``/``id``, as
    Klaviyo's API reference says (the lenient default also takes ``external_id``: issue 12)."""
    braze = make_vendor("braze")
    auth = {"authorization": "Bearer key-1"}
    assert httpx.post(braze.url + "/users/delete", json={"external_ids": ["u1"]}, headers=auth).status_code == 201
    assert httpx.post(braze.url + "/users/delete", json={"user_ids": ["u1"]}, headers=auth).status_code == 400
    assert httpx.post(braze.url + "/users/delete", json={"external_ids": [f"u{i}" for i in range(51)]},
                      headers=auth).status_code == 400  # fmt: skip
    assert [rec["user_id"] for rec in braze.applied] == ["u1"] and len(braze.violations) == 2

    def deletion(**ident: str) -> dict[str, object]:
        return {"data": {"type": "data-privacy-deletion-job", "attributes": {
            "profile": {"data": {"type": "profile", "attributes": ident}}}}}  # fmt: skip

    hdrs = {"authorization": "Klaviyo-API-Key key-1", "revision": "2024-10-15"}
    strict = make_vendor("klaviyo", klaviyo_strict_deletion=True)
    url = strict.url + "/api/data-privacy-deletion-jobs"
    assert httpx.post(url, json=deletion(email="a@b.co"), headers=hdrs).status_code == 202
    assert httpx.post(url, json=deletion(external_id="u1"), headers=hdrs).status_code == 400
    assert httpx.post(url, json=deletion(email="a@b.co", id="01H"), headers=hdrs).status_code == 400
    lenient = make_vendor("klaviyo")
    ok = httpx.post(lenient.url + "/api/data-privacy-deletion-jobs", json=deletion(external_id="u1"), headers=hdrs)
    assert ok.status_code == 202 and lenient.applied[0]["identifier"] == "external_id"
