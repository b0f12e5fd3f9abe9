"""``liveprofile forget`` reaches the email platforms: profiles written by the dataflow's own profile
sink (``dataflows.sinks``, the real ``PROFILE_LUA``), erased by the real CLI
(``liveprofile.cli`` -> ``liveprofile.admin.privacy.forget``), deletions delivered by the real sync to
fake platforms that check the documented deletion shapes themselves."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
import redis

from dataflows.sinks import RedisProfileSink
from liveprofile import cli
from liveprofile.store.keys import Keys
from liveprofile.sync.model import SyncKeys
from operators.identity import anon_uid
from operators.user import ProfileUpdate, Retire
from tests.sync.fakes import FakeVendor
from tests.sync.helpers import Feed, SyncerThread, covered, dest, wait_until

Make = Callable[..., FakeVendor]
K = Keys("lp")


def _profile(uid: str, seq: int, **fields: str) -> tuple[str, ProfileUpdate]:
    return uid, ProfileUpdate(uid, seq, {"user_id": uid, **fields}, 1_714_564_800_000, None)


def _write(redis_url: str, items: list[tuple[str, ProfileUpdate | Retire]]) -> None:
    """One batch through the dataflow's profile sink partition (what a Bytewax worker runs)."""
    part = RedisProfileSink(redis_url, K).build("profiles", 0, 1)
    try:
        part.write_batch(items)
    finally:
        part.close()


def _versions(r: redis.Redis, feed: Feed, *uids: str) -> None:
    for uid in uids:
        feed.versions[uid] = int(r.hget(K.profile(uid), "version") or 0)


def _forget(uid: str, redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> dict:
    monkeypatch.setenv("LIVEPROFILE_REDIS_URL", redis_url)
    capsys.readouterr()
    assert cli.main(["forget", uid]) == 0
    return orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _deleted(v: FakeVendor, uid: str) -> list[dict]:
    with v.lock:
        return [rec for rec in v.applied if rec["user_id"] == uid and rec["deleted"]]


def test_forget_reaches_webhook_braze_and_klaviyo(redis_url: str, r: redis.Redis, feed: Feed, make_vendor: Make,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Each platform gets the user's deletion exactly once (their anonymous tombstone's is in the
    change feed, ``anonymous=1``, and never sent: anonymous profiles are no contacts, and an
    anonymous id may be spelled like another user's id — issue 12), in its
    documented shape — a webhook item ``deleted: true`` with nothing else and key ``user:version``,
    Braze ``/users/delete`` ``external_ids``, a Klaviyo deletion job naming the profile by its email
    (the anonymous tombstone has no email: it is looked up by ``external_id``, and Klaviyo, never
    sent a tombstone, holds nothing of it) — after which nothing more of
    the user is pushed: a late profile write is refused by the profile script (suppressed), while
    another user's later change still flows (the barrier that proves the late write had its chance)."""
    hook, braze, klav = make_vendor("webhook"), make_vendor("braze"), make_vendor("klaviyo")
    consent = '{"email": true}'
    _write(redis_url, [
        _profile("u1", 1, email="u1@x.co", consent=consent, cart_value="12.50", anonymous_ids='["anon-1"]'),
        _profile("u2", 1, email="u2@x.co", consent=consent, cart_value="3.00"),
        (anon_uid("anon-1"), Retire(anon_uid("anon-1"), "u1", 1)),  # the merged anonymous profile: a tombstone
    ])  # fmt: skip
    _versions(r, feed, "u1", "u2")
    assert feed.versions == {"u1": 1, "u2": 1}
    cfg = {**dest("hook", hook), **dest("braze", braze, channel="email", require_consent=True),
           **dest("klav", klav, channel="email")}  # fmt: skip
    with SyncerThread(redis_url, cfg):
        wait_until(lambda: all(covered(v, feed) for v in (hook, braze, klav)), what="profiles delivered")
        out = _forget("u1", redis_url, monkeypatch, capsys)
        assert out["forgotten"] == "u1" and out["profiles"] == 2 and out["anonymous_ids"] == ["anon-1"]
        wait_until(lambda: all(_deleted(v, "u1") for v in (hook, braze, klav)),
                   timeout=20, what="deletions at every platform")  # fmt: skip
        _write(redis_url, [_profile("u1", 2, email="u1@x.co", consent=consent, cart_value="99.00"),
                           _profile("u2", 2, email="u2@x.co", consent=consent, cart_value="4.00")])  # fmt: skip
        _versions(r, feed, "u2")
        assert feed.versions["u2"] == 2
        wait_until(lambda: all(covered(v, feed, ["u2"]) for v in (hook, braze, klav)), what="u2's later change")

    # Redis: the profile is gone, the user suppressed; once every destination took the deletions
    # the feed holds nothing of the user (the deletion entries carried the email) and no
    # destination's watermark names them
    assert not r.exists(K.profile("u1")) and not r.exists(K.profile_anon("anon-1"))
    assert r.sismember(K.suppressed, "u1")
    assert [f for _, f in r.xrange(K.changes) if f[b"user_id"] in (b"u1", b"anon-1")] == []
    for name in ("hook", "braze", "klav"):
        assert r.hmget(SyncKeys("lp", name).watermark, ["u1", "anon-1"]) == [None, None], name

    # webhook: one deletion item per id, after the profile, nothing after it
    for uid, version in (("u1", 2),):
        recs = [rec for rec in hook.applied if rec["user_id"] == uid]
        assert recs[-1]["deleted"] and [rec["deleted"] for rec in recs].count(True) == 1
        assert (recs[-1]["key"], recs[-1]["fields"], recs[-1]["events"]) == (f"{uid}:{version}", {}, [])
    # Braze: /users/delete with the external ids; Klaviyo: one deletion job per id
    deletes = [q for q in braze.log if q.path == "/users/delete" and q.status == 201]
    assert sorted(k for q in deletes for k in q.keys) == ["delete:u1"]
    assert [rec["deleted"] for rec in braze.applied if rec["user_id"] == "u1"] == [False, True]
    assert [rec for rec in braze.applied if rec["user_id"] == "anon-1"] == []  # anonymous: never pushed, never deleted
    assert braze.email_deletions == [("u1@x.co", ("unidentified",))]  # Braze's unidentified profile of the email
    for v in (hook, braze, klav):
        assert v.violations == []
        assert len(_deleted(v, "u1")) == 1, v.kind
        assert _deleted(v, "anon-1") == [] and not [rec for rec in v.applied if rec["user_id"] == "anon-1"], v.kind
        last_u1 = [rec for rec in v.applied if rec["user_id"] == "u1"][-1]
        assert last_u1["deleted"], (v.kind, last_u1)  # nothing of u1 after its deletion
        assert not any(rec["fields"].get("cart_value") in ("99.00", 99.0) for rec in v.applied)
    # what Klaviyo was sent to identify the profile: the email, the one identifier its API takes (issue 12);
    # the anonymous tombstone's deletion is never sent, so nothing is looked up for it
    assert klav.deletion_identifiers == [{"email": "u1@x.co"}] and klav.lookups == []
    assert r.xlen(SyncKeys("lp", "klav").dead_letter) == 0


def test_forget_reaches_klaviyo_in_its_documented_shape(redis_url: str, r: redis.Redis, feed: Feed, make_vendor: Make,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Against a fake that refuses what Klaviyo refuses (exactly one of email, phone_number, id; never
    external_id), the deletion is accepted: on main it was refused and dead-lettered (issue 12)."""
    klav = make_vendor("klaviyo")
    _write(redis_url, [_profile("u1", 1, email="u1@x.co", cart_value="1.00")])
    _versions(r, feed, "u1")
    with SyncerThread(redis_url, dest("klav", klav)):
        wait_until(lambda: covered(klav, feed), what="profile delivered")
        _forget("u1", redis_url, monkeypatch, capsys)
        wait_until(lambda: _deleted(klav, "u1") or r.xlen(SyncKeys("lp", "klav").dead_letter) > 0,
                   timeout=20, what="the deletion accepted or dead-lettered")  # fmt: skip
    assert _deleted(klav, "u1"), f"refused: {klav.violations}"
    assert klav.deletion_identifiers == [{"email": "u1@x.co"}] and klav.violations == []
