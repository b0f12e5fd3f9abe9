"""Write-key trust levels through the real collector process (issue 12): browser keys
(``LIVEPROFILE_BROWSER_WRITE_KEYS``) are accepted like server keys, their events are stamped
``_trust: browser`` in the buffer, a client cannot forge or strip the stamp, and email engagement
from a browser key is a dead letter. Each assertion failed on main (no such setting: the browser
key got 401; a client's ``_trust`` was stored as sent; ``Email Opened`` from any key was accepted)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import redis

from tests.collector.conftest import WRITE_KEY, basic, buffered, dead

BROWSER_KEY = "browser-key-0123456789abcdef"


def test_browser_keys_are_stamped_and_the_stamp_cannot_be_forged(start: Callable[..., str], r: redis.Redis) -> None:
    url = start(LIVEPROFILE_BROWSER_WRITE_KEYS=BROWSER_KEY)
    ok = httpx.post(url + "/v1/track", json={"event": "Viewed", "userId": "u1", "messageId": "b1", "_trust": None}, headers=basic(BROWSER_KEY))
    assert ok.status_code == 200, ok.text
    srv = httpx.post(url + "/v1/batch", headers=basic(WRITE_KEY), json={"batch": [
        {"type": "track", "event": "Viewed", "userId": "u1", "messageId": "s1", "_trust": "browser"},  # a server key's: stamp removed
        {"type": "track", "event": "Email Opened", "userId": "u1", "messageId": "s2"},
    ]})  # fmt: skip
    assert srv.status_code == 200 and srv.json().get("rejected") in (None, [], 0), srv.text
    by_id = {e["messageId"]: e for e in buffered(r)}
    assert by_id["b1"]["_trust"] == "browser" and "_trust" not in by_id["s1"] and "s2" in by_id


def test_email_engagement_from_a_browser_key_is_refused_with_its_reason(start: Callable[..., str], r: redis.Redis) -> None:
    url = start(LIVEPROFILE_BROWSER_WRITE_KEYS=BROWSER_KEY)
    one = httpx.post(url + "/v1/track", json={"event": "Email Opened", "userId": "victim", "messageId": "o1"}, headers=basic(BROWSER_KEY))
    assert one.status_code == 400 and one.json()["error"] == "untrusted_engagement", one.text
    batch = httpx.post(url + "/v1/batch", headers=basic(BROWSER_KEY), json={"batch": [
        {"type": "track", "event": "Email Link Clicked", "userId": "victim", "messageId": "o2"},
        {"type": "page", "userId": "victim", "messageId": "p1"},
    ]})  # fmt: skip
    assert batch.status_code == 200, batch.text  # the other event of the batch is kept
    assert {e["messageId"] for e in buffered(r)} == {"p1"}
    assert sorted(d["reason"] for d in dead(r)) == ["untrusted_engagement", "untrusted_engagement"]
