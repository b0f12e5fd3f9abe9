"""Per-item outcomes the vendors report apart from the HTTP status (issue 12, delivery findings):
Braze's ``errors`` in a 201, Klaviyo import jobs' import-errors (polled, paged), Klaviyo deletions
with no identifier its API takes, anonymous tombstones — each through the real syncer against the
contract-checking fakes, each item dead-lettered with a reason while the rest is delivered."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import redis

from liveprofile.sync.model import SyncKeys
from tests.sync.fakes import FakeVendor
from tests.sync.helpers import Feed, SyncerThread, covered, dest, wait_until

Make = Callable[..., FakeVendor]


def _dead(r: redis.Redis, name: str) -> dict[str, tuple[str, str]]:
    """user -> (reason, status) of the destination's dead letters."""
    out = {}
    for _, f in r.xrange(SyncKeys("lp", name).dead_letter):
        out[orjson.loads(f[b"item"])["user_id"]] = (f[b"reason"].decode(), f[b"status"].decode())
    return out


def test_braze_per_object_errors_are_dead_lettered(redis_url: str, r: redis.Redis, feed: Feed, make_vendor: Make) -> None:
    """A 201 whose ``errors`` name one user's objects: that user is dead-lettered (``vendor_rejected``,
    Braze's error type), the others of the same request are delivered. On main the 201 counted as
    delivered for everyone: no dead letter."""
    braze = make_vendor("braze")
    braze.refuse_objects = {"bad"}
    for uid in ("a", "bad", "c"):
        feed.change(uid, {"email": f"{uid}@x.co"})
    with SyncerThread(redis_url, dest("braze", braze)):
        wait_until(lambda: covered(braze, feed, ["a", "c"]) and "bad" in _dead(r, "braze"), what="delivery")
    assert _dead(r, "braze") == {"bad": ("vendor_rejected", "invalid attributes object for bad")}
    assert braze.violations == [] and len([q for q in braze.log if q.path == "/users/track"]) == 1


def test_klaviyo_import_job_errors_are_polled_and_dead_lettered(redis_url: str, r: redis.Redis, feed: Feed,
                                                                 make_vendor: Make) -> None:  # fmt: skip
    """The import job is polled until complete, its import-errors read page by page (one error per
    page here), and each failed profile dead-lettered with Klaviyo's detail; while the first job is
    still processing a later batch is delivered (polling never blocks delivery); afterwards no job
    is left recorded. On main the job id was never read: no GET, no dead letter."""
    klav = make_vendor("klaviyo", job_polls=3, errors_page=1)
    klav.refuse_objects = {"bad1", "bad2"}
    for uid in ("a", "bad1", "bad2"):
        feed.change(uid, {"email": f"{uid}@x.co"})
    sk = SyncKeys("lp", "klav")
    with SyncerThread(redis_url, dest("klav", klav)):
        wait_until(lambda: covered(klav, feed, ["a"]), what="first job accepted")
        feed.change("later", {"email": "later@x.co"})
        wait_until(lambda: covered(klav, feed, ["later"]), what="a later batch")
        wait_until(lambda: len(_dead(r, "klav")) == 2 and r.hlen(sk.jobs) == 0, what="job errors dead-lettered")
    assert _dead(r, "klav") == {"bad1": ("vendor_rejected", "invalid: the profile bad1 is invalid"),
                                "bad2": ("vendor_rejected", "invalid: the profile bad2 is invalid")}  # fmt: skip
    assert any("/import-errors?page[cursor]=1" in p for p, _ in klav.gets)  # the second page was read
    assert klav.violations == []


def test_klaviyo_job_unknown_to_the_vendor_is_dead_lettered_not_dropped(redis_url: str, r: redis.Redis, feed: Feed,
                                                                        make_vendor: Make) -> None:  # fmt: skip
    """A job the vendor no longer knows (404 on the status GET) leaves its items re-drivable as
    ``job_unresolved``; a 5xx on a poll is retried on the next poll."""
    klav = make_vendor("klaviyo", job_polls=0)
    klav.get_script.extend([503, 404])
    feed.change("a", {"email": "a@x.co"})
    with SyncerThread(redis_url, dest("klav", klav)):
        wait_until(lambda: "a" in _dead(r, "klav"), what="dead letter")
    assert _dead(r, "klav") == {"a": ("job_unresolved", "")}
    assert [s for _, s in klav.gets][:2] == [503, 404]


def test_klaviyo_deletions_name_the_profile_the_way_its_api_takes(redis_url: str, r: redis.Redis, feed: Feed,
                                                                  make_vendor: Make) -> None:  # fmt: skip
    """Klaviyo's deletion job takes exactly one of email, phone_number or its own id (never
    external_id): a deletion is sent by email when the erased profile had one; else Klaviyo's id is
    looked up by external_id (``GET /api/profiles?filter=...``) and the job names it; a profile
    Klaviyo never got needs no deletion; a lookup that keeps failing is a ``lookup_failed`` dead
    letter. On main every job named ``external_id`` and was refused."""
    klav = make_vendor("klaviyo")
    feed.change("has", {"email": "has@x.co"})
    feed.change("anon", {"cart_value": "1.00"})  # pushed under its external_id, no email
    with SyncerThread(redis_url, dest("klav", klav)):
        wait_until(lambda: covered(klav, feed), what="profiles")
        feed.delete("has")
        feed.delete("anon")
        feed.delete("never")  # nothing of it at Klaviyo
        wait_until(lambda: "never" in klav.lookups and {rec["user_id"] for rec in klav.applied if rec["deleted"]}
                   == {"anon", "has"}, what="deletions")  # fmt: skip
        klav.lookup_failures = 3
        feed.change("x", {"cart_value": "2.00"})
        wait_until(lambda: covered(klav, feed, ["x"]), what="x")
        feed.delete("x")
        wait_until(lambda: "x" in _dead(r, "klav"), what="x's lookup failing")
    # (sets: a batch taken over after a lost lease repeats its lookups and deletions, which is harmless)
    assert {orjson.dumps(i) for i in klav.deletion_identifiers} == {orjson.dumps({"email": "has@x.co"}),
                                                                    orjson.dumps({"id": FakeVendor.klaviyo_id("anon")})}  # fmt: skip
    assert set(klav.lookups) == {"anon", "never", "x"} and klav.lookups.count("x") >= 3
    assert _dead(r, "klav") == {"x": ("lookup_failed", "503")}
    assert klav.violations == []


def test_anonymous_tombstones_are_not_pushed(redis_url: str, r: redis.Redis, feed: Feed, make_vendor: Make) -> None:
    """An anonymous profile merged into a user (its change sets ``merged_into``) is not pushed as a
    profile to any platform; on main Braze got an ``anon-1`` profile carrying ``merged_into``."""
    braze, klav = make_vendor("braze"), make_vendor("klaviyo")
    feed.change("u1", {"email": "u1@x.co"})
    feed.change("anon-1", {"merged_into": "u1"})
    feed.change("u2", {"email": "u2@x.co"})
    with SyncerThread(redis_url, {**dest("braze", braze), **dest("klav", klav)}):
        wait_until(lambda: all(covered(v, feed, ["u1", "u2"]) for v in (braze, klav)), what="delivery")
    for v in (braze, klav):
        assert not [rec for rec in v.applied if rec["user_id"] == "anon-1"], v.kind
        assert v.violations == []


def test_braze_events_always_carry_the_required_time(redis_url: str, r: redis.Redis, feed: Feed, make_vendor: Make) -> None:
    """Braze requires an event ``time`` (ISO 8601): an event without ``ts`` is sent with one and
    accepted; on main it went out as ``"time": null``, which the contract-checking fake refuses."""
    braze = make_vendor("braze")
    feed.change("u1", {"email": "u1@x.co"}, {"name": "Cart Abandoned"})
    feed.change("u2", {"email": "u2@x.co"}, {"name": "Cart Abandoned", "ts": "2024-05-01T12:00:00.000Z"})
    with SyncerThread(redis_url, dest("braze", braze)):
        wait_until(lambda: covered(braze, feed), what="delivery")
    times = {rec["user_id"]: [e["time"] for e in rec["events"]] for rec in braze.applied}
    assert times["u2"] == ["2024-05-01T12:00:00.000Z"] and len(times["u1"]) == 1 and times["u1"][0].endswith("Z")
    assert braze.violations == [] and r.xlen(SyncKeys("lp", "braze").dead_letter) == 0
