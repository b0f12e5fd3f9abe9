"""Events of forgotten (suppressed) users are refused at the collector (issue 12 item 5): the client
gets its 2xx (SDKs must not retry), nothing of the event is kept — neither in the buffer nor as a
dead letter — and it is counted; over loopback HTTP against a real collector process and redis-server.

An event is the user's when its ``userId`` or its ``anonymousId`` is suppressed, spelled as the
dataflow reads it (``" carol"`` is ``carol``); ``liveprofile forget`` records an anonymous id as
``operators.identity.anon_uid``. On main every one of these was appended."""

from __future__ import annotations

import httpx
import orjson
import redis

from liveprofile.collector.signing import sign_webhook, signed_pixel_url
from operators.identity import anon_uid
from tests.collector.conftest import HOOK_ESP, PIXEL_NEW, WRITE_KEY, K, basic, metric

AUTH = {**basic(WRITE_KEY), "content-type": "application/json"}


def _kept(r: redis.Redis) -> list[bytes]:
    out = [f[b"e"] for s in range(4) for _, f in r.xrange(K.events(s))]
    return out + [f[b"raw"] for _, f in r.xrange(K.dead_letter)]


def test_events_of_suppressed_users_are_answered_2xx_and_leave_nothing(secure: str, r: redis.Redis) -> None:
    r.sadd(K.suppressed, "carol", anon_uid("dev-c"))
    batch = {"batch": [
        {"type": "track", "event": "Viewed", "userId": " carol", "messageId": "m1"},  # padded: still carol
        {"type": "page", "anonymousId": "dev-c", "messageId": "m2"},  # a suppressed device
        {"type": "identify", "userId": "newbie", "anonymousId": "dev-c", "messageId": "m3", "traits": {"email": "n@x.co"}},
        {"type": "track", "userId": "carol", "messageId": "m4"},  # invalid: would be a dead letter
        {"type": "track", "event": "Viewed", "userId": "dave", "messageId": "m5"},
        {"type": "page", "anonymousId": "carol", "messageId": "m6"},  # an anonymous id spelled like the user: not theirs
    ]}  # fmt: skip
    res = httpx.post(secure + "/v1/batch", content=orjson.dumps(batch), headers=AUTH)
    assert res.status_code == 200 and res.json()["success"] is True
    one = httpx.post(secure + "/v1/track", content=orjson.dumps({"userId": "carol", "messageId": "m7"}), headers=AUTH)
    assert one.status_code == 200, one.text  # a suppressed user's bad event is no 400 either: nothing of it is kept
    body = orjson.dumps({"type": "track", "userId": "carol", "event": "Email Delivered", "properties": {"email_id": "e1"}})
    assert httpx.post(secure + "/v1/webhooks/esp", content=body, headers={"X-Liveprofile-Signature": sign_webhook(HOOK_ESP, body)}).status_code == 200
    assert httpx.get(signed_pixel_url(secure, PIXEL_NEW, "carol", "spring", "e-1")).status_code == 200

    kept = _kept(r)
    assert sorted(orjson.loads(e)["messageId"] for e in kept) == ["m5", "m6"]
    assert not any(b"carol" in e and b'"anonymousId":"carol"' not in e for e in kept)
    m = httpx.get(secure + "/metrics").text
    assert metric(m, "liveprofile_collector_events_suppressed_total") == 7
    assert metric(m, "liveprofile_collector_events_accepted_total") == 2


def test_the_atomic_append_leaves_out_a_user_suppressed_after_the_pre_check(redis_url: str, r: redis.Redis) -> None:
    """The race the pre-check leaves open (``forget`` suppresses the user after the collector's
    SMISMEMBER, and scans the buffer before its append) is closed on one Redis: the append script
    checks the suppressed set in the same atomic call. Here the user is suppressed after the
    request was prepared, before the append: nothing of theirs is written, the rest is. On main
    the appender took no suppression lists (TypeError) and wrote every item."""
    import asyncio

    import redis.asyncio as aioredis

    from liveprofile.buffer.ingest import prepare, suppression_lists
    from liveprofile.buffer.streams import AsyncAppender
    from operators.events import Limits

    events = [{"type": "track", "event": "Viewed", "userId": u, "messageId": f"m-{u}"} for u in ("carol", "dave")]
    events.append({"type": "page", "anonymousId": "dev-c", "messageId": "m-dev"})
    events.append({"type": "track", "userId": "carol", "messageId": "m-bad"})  # a dead letter of carol's
    prep = prepare(events, keys=K, shards=4, limits=Limits(), received_at="2026-05-01T00:00:00.000Z", source="http:batch")
    r.sadd(K.suppressed, "carol", anon_uid("dev-c"))  # forget ran in between

    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await AsyncAppender(client, keys=K, shards=4, max_backlog=1000).append(prep.appends, suppression_lists(prep))
        finally:
            await client.aclose()

    asyncio.run(run())
    assert sorted(orjson.loads(e)["messageId"] for e in _kept(r)) == ["m-dave"]
