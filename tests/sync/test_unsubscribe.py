"""Unsubscribes reach each email platform through its own mechanism, and the consent gate reads
the ``consent`` the dataflow writes (issue 12 item 3). Real redis-server, the real sync worker,
fake vendors over loopback HTTP that check the vendors' documented request shapes.

Failed on main (bed8741/8fe6588): Klaviyo got no unsubscribe job, Braze no ``email_subscribe``,
the webhook no ``Unsubscribed`` event; and the gate never saw a consent the dataflow wrote."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson
import redis

from operators.dedupe import DedupeConfig
from operators.events import Event, Limits, parse_event
from operators.profile import ProfileState, to_fields
from tests.sync.fakes import FakeVendor
from tests.sync.helpers import Feed, SyncerThread, covered, dest, wait_until

Make = Callable[..., FakeVendor]
T0 = 1_714_564_800_000


def _profile_after(raw_events: list[dict]) -> dict[str, str]:
    """The profile fields the dataflow's fold writes for these events (user u1)."""
    st = ProfileState("u1")
    for i, body in enumerate(raw_events):
        ev = parse_event(orjson.dumps({"userId": "u1", "messageId": f"m{i}", "receivedAt": T0 / 1000 + i, **body}), Limits())
        assert isinstance(ev, Event), ev
        st.apply(ev, DedupeConfig())
    return to_fields(st)


def test_unsubscribe_reaches_klaviyo_braze_and_webhooks_their_own_way(redis_url: str, feed: Feed, make_vendor: Make) -> None:
    hook, braze, klav = make_vendor("webhook"), make_vendor("braze"), make_vendor("klaviyo")
    feed.change("u1", {"email": "ann@example.com", "email_unsubscribed": "0"})
    feed.change("u2", {"email": "bob@example.com", "email_unsubscribed": "0"})
    unsub = _profile_after([{"type": "track", "event": "Unsubscribed", "timestamp": T0 / 1000, "properties": {"email_id": "e1"}}])
    assert (unsub["email_unsubscribed"], unsub["unsubscribed_at"]) == ("1", "2024-05-01T12:00:00.000Z")
    cfg = {**dest("hook", hook), **dest("braze", braze), **dest("klav", klav, fields=["cart_value"])}  # allow-list without it
    with SyncerThread(redis_url, cfg):
        wait_until(lambda: all(covered(v, feed) for v in (hook, braze)), what="first push")
        feed.change("u1", {"email_unsubscribed": "1", "unsubscribed_at": unsub["unsubscribed_at"]})  # the change alone
        wait_until(lambda: covered(hook, feed) and covered(braze, feed)
                   and any(rec.get("unsubscribed") for rec in klav.applied), what="unsubscribe")  # fmt: skip
    for v in (hook, braze, klav):
        assert v.violations == [], v.kind
    (ku,) = [rec for rec in klav.applied if rec.get("unsubscribed")]
    assert ku["email"] == "ann@example.com"  # the address the profile holds, though the change did not carry it
    bu = [rec for rec in braze.applied if rec["user_id"] == "u1" and "email_subscribe" in rec["fields"]]
    assert [rec["fields"]["email_subscribe"] for rec in bu] == ["unsubscribed"]
    assert not any("email_subscribe" in rec["fields"] for rec in braze.applied if rec["user_id"] == "u2")
    hu = [e for rec in hook.applied if rec["user_id"] == "u1" for e in rec["events"] if e["name"] == "Unsubscribed"]
    assert hu == [{"name": "Unsubscribed", "id": "u1:unsubscribed:2024-05-01T12:00:00.000Z",
                   "ts": "2024-05-01T12:00:00.000Z", "properties": {"channel": "email"}}]  # fmt: skip


def test_the_fake_klaviyo_refuses_an_unsubscribe_by_external_id() -> None:
    """The fake checks Klaviyo's shape itself (so the test above can fail on a wrong one)."""
    klav = FakeVendor("klaviyo")
    try:
        doc = {"data": {"type": "profile-subscription-bulk-delete-job", "attributes": {"profiles": {"data": [
            {"type": "profile", "attributes": {"external_id": "u1"}}]}}}}  # fmt: skip
        hdr = {"authorization": "Klaviyo-API-Key key-1", "revision": "2024-10-15", "content-type": "application/vnd.api+json"}
        res = httpx.post(klav.url + "/api/profile-subscription-bulk-delete-jobs", content=orjson.dumps(doc), headers=hdr)
        assert res.status_code == 400 and klav.violations
        braze = FakeVendor("braze")
        try:
            res = httpx.post(braze.url + "/users/track", json={"attributes": [{"external_id": "u1", "email_subscribe": "no"}]},
                             headers={"authorization": "Bearer key-1"})  # fmt: skip
            assert res.status_code == 400 and braze.violations
        finally:
            braze.close()
    finally:
        klav.close()


def test_the_consent_gate_honours_the_consent_the_dataflow_writes(redis_url: str, r: redis.Redis, feed: Feed, make_vendor: Make) -> None:
    """Consent from Segment's and RudderStack's fields, as the fold renders it, through the gate of a
    destination that requires consent for its channel."""
    seg_yes = _profile_after([{"type": "page", "context": {"consent": {"categoryPreferences": {"email": True, "ads": False}}}}])
    rudder_no = _profile_after([{"type": "page", "context": {"consentManagement": {
        "provider": "oneTrust", "allowedConsentIds": ["ads"], "deniedConsentIds": ["email"]}}}])  # fmt: skip
    assert orjson.loads(seg_yes["consent"]) == {"ads": False, "email": True}
    braze = make_vendor("braze")
    feed.change("yes", {"email": "y@x.co", "consent": seg_yes["consent"]})
    feed.change("no", {"email": "n@x.co", "consent": rudder_no["consent"]})
    feed.change("none", {"email": "z@x.co", "consent": _profile_after([{"type": "page"}])["consent"]})
    with SyncerThread(redis_url, dest("braze", braze, channel="email", require_consent=True)):
        wait_until(lambda: covered(braze, feed, ["yes"]), what="consented user")
        # the denied user grants later (an event with newer consent): now the whole profile goes
        later = _profile_after([
            {"type": "page", "timestamp": T0 / 1000, "context": {"consentManagement": {"deniedConsentIds": ["email"]}}},
            {"type": "page", "timestamp": T0 / 1000 + 60, "context": {"consent": {"categoryPreferences": {"email": True}}}},
        ])  # fmt: skip
        feed.change("no", {"consent": later["consent"]})
        wait_until(lambda: covered(braze, feed, ["no"]), what="consent granted")
    assert braze.violations == []
    users = {rec["user_id"] for rec in braze.applied}
    assert users == {"yes", "no"}  # "none" stated nothing: not pushed where consent is required
    last = [rec for rec in braze.applied if rec["user_id"] == "no"][-1]
    assert last["fields"]["email"] == "n@x.co" and last["fields"]["consent"] == {"email": True}
