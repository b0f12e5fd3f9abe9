"""``liveprofile.admin.privacy.forget`` against a real redis-server: what it must find (issue 12 item 5).

Each store is filled the way its writer fills it (the collector's :func:`~liveprofile.buffer.ingest.prepare`
for buffer entries and dead letters, the sync's item JSON and key layout for its keys), then one
``forget`` must leave nothing of the user there and everything of another user."""

from __future__ import annotations

import orjson
import redis

from liveprofile.admin.privacy import forget
from liveprofile.buffer.ingest import prepare
from liveprofile.buffer.streams import SyncAppender
from liveprofile.store.deadletter import Stage, dead_letter_fields
from liveprofile.store.keys import Keys
from liveprofile.sync.model import Item, SyncKeys
from operators.events import Limits, Rejected
from operators.identity import anon_uid

K = Keys("lp")
AT = "2026-05-01T12:00:00.000Z"


def _event(n: int, **ids: object) -> dict:
    return {"type": "track", "event": "Viewed", "messageId": f"m{n}", "timestamp": AT, **ids}


def _append(r: redis.Redis, events: list[object], limits: Limits | None = None) -> None:
    prep = prepare(events, keys=K, shards=4, limits=limits or Limits(), received_at=AT, source="http:batch")
    SyncAppender(r).append(prep.appends)


def _everything(r: redis.Redis) -> bytes:
    """Every value of every key, concatenated (enough to search for an id)."""
    out = []
    for key in r.scan_iter():
        kind = r.type(key)
        if kind == b"stream":
            out += [v for _, f in r.xrange(key) for v in f.values()]
        elif kind == b"hash":
            out += [x for kv in r.hgetall(key).items() for x in kv]
        elif kind == b"set":
            out += [key + b"=" + m for m in r.smembers(key)]
        elif kind == b"string":
            out.append(r.get(key) or b"")
        out.append(key)
    return b"\n".join(out)


def test_buffered_events_are_matched_by_their_ids_as_the_dataflow_normalizes_them(r: redis.Redis) -> None:
    """``" carol"``, ``"carol\\t"`` and an anonymous id padded are the dataflow's ``carol`` /
    ``dev-c`` (``operators.events`` trims ids): on main only the exact spelling was deleted."""
    r.hset(K.profile("carol"), mapping={"user_id": "carol", "anonymous_ids": '["dev-c"]', "version": "1"})
    _append(r, [_event(1, userId=" carol"), _event(2, userId="carol\t"), _event(3, anonymousId=" dev-c "),
                _event(4, userId="dave"), _event(5, anonymousId="dev-c2")])  # fmt: skip
    stats = forget(r, K, 4, " carol ")
    assert stats["buffered_events"] == 3
    left = [orjson.loads(f[b"e"]) for s in range(4) for _, f in r.xrange(K.events(s)) if not f[b"e"].startswith(b'{"type":"_forget"')]
    assert sorted(ev["messageId"] for ev in left) == ["m4", "m5"]


def test_dead_letters_of_every_stage_and_the_sync_keys_are_erased(r: redis.Redis) -> None:
    """The collector's oversize dead letter (raw cut before its ``userId``: no longer JSON), a
    dataflow-stage and a re-driven dead letter, the sync's dead letters, redrive entries,
    watermarks and recorded vendor jobs of every destination: on main all of them stayed."""
    r.hset(K.profile("carol"), mapping={"user_id": "carol", "email": "carol@example.com", "version": "3"})
    _append(r, [{**_event(1), "properties": {"blob": "x" * 400}, "userId": "carol"},  # oversize
                {"type": "track", "messageId": "m2", "userId": " carol"},  # missing_event
                {**_event(3), "properties": {"blob": "y" * 400}, "userId": "dave"}], Limits(max_event_bytes=200))  # fmt: skip
    raws = [f[b"raw"] for _, f in r.xrange(K.dead_letter)]
    assert len(raws) == 3 and b"carol" not in raws[0]  # the cut raw does not name the user
    rej = Rejected("malformed_json", "x", b'{"type":"track","userId":"carol","event":')
    r.xadd(K.dead_letter, dead_letter_fields(rej, Stage.DATAFLOW, "events:0:1-0"))
    r.xadd(K.dead_letter_redriven, dead_letter_fields(Rejected("missing_event", "x", b'{"userId": "carol"}'), Stage.REDRIVE, "x"))
    for dest in ("hook", "klav"):
        sk = SyncKeys("lp", dest)
        r.hset(sk.watermark, mapping={"carol": 3, "dave": 2})
        for stream in (sk.dead_letter, sk.redrive):
            r.xadd(stream, {"item": Item("carol", 3, 1, {"email": "carol@example.com"}).to_json(), "reason": "http_400"})
            r.xadd(stream, {"item": Item("dave", 2, 1, {"email": "dave@example.com"}).to_json(), "reason": "http_400"})
    jobs = SyncKeys("lp", "klav").jobs
    items = [Item(u, 3, 1, {"email": f"{u}@example.com"}).to_json().decode() for u in ("carol", "dave")]
    r.hset(jobs, mapping={"job-1": orjson.dumps({"at": 1, "items": items}), "job-2": orjson.dumps({"at": 1, "items": items[:1]})})

    forget(r, K, 4, "carol")
    assert b"carol" not in _everything(r).replace(b"lp:suppressed=carol", b"").replace(b'"userId":"carol","at"', b"")
    assert r.xlen(K.dead_letter) == 1 and r.hget(SyncKeys("lp", "hook").watermark, "dave") == b"2"
    assert [orjson.loads(f[b"item"])["user_id"] for _, f in r.xrange(SyncKeys("lp", "klav").dead_letter)] == ["dave"]
    assert r.hkeys(jobs) == [b"job-1"] and orjson.loads(r.hget(jobs, "job-1"))["items"] == items[1:]


def test_exposures_are_erased(r: redis.Redis) -> None:
    """Experiment exposures keep the user with their revenue: on main they stayed."""
    for exp in ("subject", "hero"):
        r.hset(K.exposures_in(0, exp), mapping={"carol": '{"v": "a"}', "dave": '{"v": "b"}'})
    forget(r, K, 4, "carol")
    assert all(r.hkeys(K.exposures_in(0, exp)) == [b"dave"] for exp in ("subject", "hero"))


def test_forget_by_email_finds_every_profile_with_it_and_the_users_merged_into_them(r: redis.Redis) -> None:
    """By email (trimmed, any case, as stored): the known profile, an anonymous profile holding
    the email, and the tombstones merged into the user (transitively); each suppressed, each
    gone; another user untouched. On main ``forget`` took a user id only."""
    r.hset(K.profile("carol"), mapping={"user_id": "carol", "email": "Carol@Example.com", "anonymous_ids": '["dev-c"]'})
    r.hset(K.profile("carol-old"), mapping={"user_id": "carol-old", "merged_into": "carol"})
    r.hset(K.profile("carol-older"), mapping={"user_id": "carol-older", "merged_into": "carol-old"})
    r.hset(K.profile_anon("dev-x"), mapping={"email": "carol@example.com"})
    r.hset(K.profile("dave"), mapping={"user_id": "dave", "email": "dave@example.com"})
    _append(r, [_event(1, userId="carol-older"), _event(2, anonymousId="dev-x"), _event(3, userId="dave")])
    stats = forget(r, K, 4, email=" CAROL@example.com")
    assert stats["users"] == ["carol", "carol-old", "carol-older"] and stats["anonymous_ids"] == ["dev-c", "dev-x"]
    assert {m.decode() for m in r.smembers(K.suppressed)} == {"carol", "carol-old", "carol-older", anon_uid("dev-c"), anon_uid("dev-x")}
    assert sorted(k.decode() for k in r.scan_iter("lp:profile*") if k != K.changes.encode()) == ["lp:profile:dave"]
    assert r.xlen(K.changes) == 0  # no destination reads the feed: the deletion entries went at once
    left = [f[b"e"] for s in range(4) for _, f in r.xrange(K.events(s)) if not f[b"e"].startswith(b'{"type":"_forget"')]
    assert len(left) == 1 and b'"dave"' in left[0]
