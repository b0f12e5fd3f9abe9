"""Traits reach the email platforms under each vendor's own field names, in shapes the fakes check
against the vendors' published contracts (Klaviyo's OpenAPI document, Braze's user attributes
object), over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import orjson

from liveprofile.sync.config import DestinationConfig
from liveprofile.sync.destinations.braze import BrazeDestination
from liveprofile.sync.destinations.klaviyo import KlaviyoDestination
from liveprofile.sync.destinations.webhook import WebhookDestination
from liveprofile.sync.model import Item
from tests.sync.fakes import FakeVendor

Make = Callable[..., FakeVendor]

TRAITS = {"first_name": "Ann", "last_name": "Lee", "phone": "+4712345678", "birthday": "1990-04-01T00:00:00.000Z",
          "gender": "female", "title": "CTO", "avatar": "https://img.example/ann.png",
          "address": {"street": "Karl Johans gate 1", "city": "Oslo", "postal_code": "0154", "country": "NO", "state": "Oslo"},
          "company": {"name": "Acme", "plan": "enterprise"}, "plan": "pro", "logins": 5}  # fmt: skip


def _items(traits: dict[str, object]) -> list[Item]:
    return [Item("u1", 3, 1, {"email": "ann@example.com", "traits": orjson.dumps(traits).decode(), "event_count": "4"})]


def _send(vendor: FakeVendor, dest: KlaviyoDestination | BrazeDestination | WebhookDestination, items: list[Item]) -> list[int]:
    out = []
    for r in dest.build(items):
        out.append(httpx.post(r.url, content=r.body, headers=dest.headers(r)).status_code)
    return out


def test_klaviyo_gets_its_standard_attributes_and_custom_properties(make_vendor: Make) -> None:
    klav = make_vendor("klaviyo", job_polls=0)
    d = KlaviyoDestination(DestinationConfig("k", "klaviyo", klav.url, api_key="key-1"))
    assert _send(klav, d, _items(TRAITS)) == [202]
    assert klav.violations == []
    (rec,) = klav.applied
    f = rec["fields"]
    assert f["first_name"] == "Ann" and f["last_name"] == "Lee" and f["phone_number"] == "+4712345678"
    assert f["title"] == "CTO" and f["organization"] == "Acme" and f["image"] == "https://img.example/ann.png"
    assert f["location"] == {"address1": "Karl Johans gate 1", "city": "Oslo", "zip": "0154", "country": "NO", "region": "Oslo"}
    assert f["plan"] == "pro" and f["logins"] == 5 and f["birthday"] == "1990-04-01T00:00:00.000Z"
    assert "traits" not in f and f["email"] == "ann@example.com"
    assert klav.jobs and all(not j["failed"] for j in klav.jobs.values())


def test_klaviyo_a_phone_that_is_not_e164_is_a_property_not_a_failed_profile(make_vendor: Make) -> None:
    """Klaviyo fails a whole profile in the import job for a phone_number that is not E.164: the
    adapter sends such a number as the custom property ``phone``, and the profile is imported."""
    klav = make_vendor("klaviyo", job_polls=0)
    d = KlaviyoDestination(DestinationConfig("k", "klaviyo", klav.url, api_key="key-1"))
    assert _send(klav, d, _items({"first_name": "Ann", "phone": "555-0100"})) == [202]
    (rec,) = klav.applied
    assert "phone_number" not in rec["fields"] and rec["fields"]["phone"] == "555-0100"
    assert all(not j["failed"] for j in klav.jobs.values()) and klav.violations == []


def test_klaviyo_fake_fails_a_profile_whose_phone_number_is_not_e164(make_vendor: Make) -> None:
    """The fake itself, not the adapter: a hand-written job with a bad phone_number fails that profile."""
    klav = make_vendor("klaviyo", job_polls=0)
    d = KlaviyoDestination(DestinationConfig("k", "klaviyo", klav.url, api_key="key-1"))
    (r,) = d.build(_items({"first_name": "Ann"}))
    doc = json.loads(r.body)
    doc["data"]["attributes"]["profiles"]["data"][0]["attributes"]["phone_number"] = "555-0100"
    assert httpx.post(r.url, content=json.dumps(doc).encode(), headers=d.headers(r)).status_code == 202
    (job,) = klav.jobs.values()
    assert [a["external_id"] for _, a in job["failed"]] == ["u1"]


def test_braze_gets_its_standard_attributes_and_custom_attributes(make_vendor: Make) -> None:
    braze = make_vendor("braze")
    d = BrazeDestination(DestinationConfig("b", "braze", braze.url, api_key="key-1"))
    assert _send(braze, d, _items(TRAITS)) == [201]
    assert braze.violations == []
    (rec,) = braze.applied
    f = rec["fields"]
    assert f["first_name"] == "Ann" and f["last_name"] == "Lee" and f["phone"] == "+4712345678"
    assert f["dob"] == "1990-04-01" and f["gender"] == "F" and f["home_city"] == "Oslo" and f["country"] == "NO"
    assert f["plan"] == "pro" and f["logins"] == 5 and f["company"] == {"name": "Acme", "plan": "enterprise"}
    assert "traits" not in f and "birthday" not in f and f["email"] == "ann@example.com"
    # values Braze's standard attributes cannot take stay custom attributes, accepted
    assert _send(braze, d, _items({"gender": "robot", "birthday": "April", "address": {"country": "Norway"}})) == [201]
    f2 = braze.applied[-1]["fields"]
    assert f2["gender_text"] == "robot" and f2["birthday"] == "April" and "country" not in f2 and "gender" not in f2
    assert braze.violations == []


def test_braze_fake_refuses_wrong_standard_attribute_shapes(make_vendor: Make) -> None:
    braze = make_vendor("braze")
    h = {"authorization": "Bearer key-1", "content-type": "application/json"}
    bad = [{"dob": "01/04/1990"}, {"gender": "female"}, {"country": "Norway"}, {"first_name": 5}, {"$x": 1}]
    for b in bad:
        body = json.dumps({"attributes": [{"external_id": "u1", **b}]}).encode()
        assert httpx.post(braze.url + "/users/track", content=body, headers=h).status_code == 400, b
    assert len(braze.violations) == len(bad)


def test_webhook_sends_traits_as_stored(make_vendor: Make) -> None:
    hook = make_vendor("webhook")
    d = WebhookDestination(DestinationConfig("h", "webhook", hook.url, secret="whsec"))
    assert _send(hook, d, _items(TRAITS)) == [200]
    assert hook.violations == []
    assert json.loads(hook.applied[-1]["fields"]["traits"]) == TRAITS
