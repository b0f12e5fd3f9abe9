"""Test helpers for the sync layer: a change-feed writer that follows the dataflow's contract
(profile hash + change entry in one script), an in-process syncer thread, a syncer process, and
the delivery checks: raw (:func:`assert_sent_once_in_order`: what the vendor accepted, no
de-duplication) and the webhook receiver's view (:func:`assert_exactly_once_in_order`), plus what
was in flight at a kill (:func:`unacknowledged`)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import redis

from liveprofile.settings import Settings
from liveprofile.store.keys import Keys
from liveprofile.sync.config import SyncConfig, parse_destinations
from liveprofile.sync.runner import Syncer
from tests.procs import Proc, base_env
from tests.sync.fakes import FakeVendor

K = Keys("lp")

#: the change-feed contract: write the changed fields and the version, append one entry naming them
UPSERT_LUA = """
-- KEYS[1] profile, KEYS[2] change feed; ARGV 1 version, 2 updated_at, 3 maxlen, 4 user, 5 event, 6.. pairs
local changed = {}
local n = 0
local set = {'version', ARGV[1], 'updated_at', ARGV[2]}
for i = 6, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then
    changed[ARGV[i]] = ARGV[i + 1]
    set[#set + 1] = ARGV[i]
    set[#set + 1] = ARGV[i + 1]
    n = n + 1
  end
end
redis.call('HSET', KEYS[1], unpack(set))
local payload = '{}'
if n > 0 then payload = cjson.encode(changed) end
local entry = {'user_id', ARGV[4], 'version', ARGV[1], 'changed', payload, 'updated_at', ARGV[2]}
if ARGV[5] ~= '' then entry[#entry + 1] = 'event'; entry[#entry + 1] = ARGV[5] end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(entry))
return 1
"""


class Feed:
    """Writes profile versions exactly as the dataflow does (UPSERT_LUA: hash + change entry),
    in the key layout ``keys`` (single Redis by default; a cluster's per-group keys)."""

    def __init__(self, r: redis.Redis, keys: Keys = K) -> None:
        self.r = r
        self.keys = keys
        self.script = r.register_script(UPSERT_LUA)
        self.versions: dict[str, int] = {}
        self.events: dict[str, list[str]] = {}

    def change(self, uid: str, fields: dict[str, str] | None = None, event: dict[str, Any] | None = None) -> int:
        v = self.versions.get(uid, 0) + 1
        self.versions[uid] = v
        f = {"user_id": uid, "event_count": str(v), **(fields or {})}
        args: list[object] = [v, "2024-05-01T12:00:00.000Z", 1_000_000, uid, orjson.dumps(event) if event else b""]
        for k, val in f.items():
            args += [k, val]
        self.script(keys=[self.keys.profile(uid), self.keys.changes_for(uid)], args=args)
        if event:
            self.events.setdefault(uid, []).append(f"{uid}:{v}")
        return v

    def delete(self, uid: str) -> int:
        """A deletion entry as the profile script writes it: ``identities`` from the profile it erases."""
        v = self.versions.get(uid, 0) + 1
        self.versions[uid] = v
        email, anon = self.r.hmget(self.keys.profile(uid), "email", "anonymous_ids")
        identities = orjson.dumps({"email": (email or b"").decode(), "anonymous_ids": (anon or b"[]").decode()})
        self.r.sadd(self.keys.suppressed_for(uid), uid)
        self.r.xadd(self.keys.changes_for(uid), {"user_id": uid, "version": v, "changed": "{}", "updated_at": "2024-05-01T12:00:00.000Z",
                                                 "deleted": "1", "identities": identities})  # fmt: skip
        return v


def dest(name: str, vendor: FakeVendor, **opts: Any) -> dict[str, Any]:
    """A destination config dict pointing at a fake vendor, with test-friendly timings."""
    base: dict[str, Any] = {"type": vendor.kind, "url": vendor.url, "flush_interval": 0.1, "timeout": 0.5,
                            "backoff_base": 0.05, "backoff_max": 0.3, "max_age": 120, "job_poll_interval": 0.05}  # fmt: skip
    if vendor.kind == "webhook":
        base["secret"] = vendor.secret
    else:
        base["api_key"] = vendor.api_key
    return {name: {**base, **opts}}


class SyncerThread:
    """The real :class:`Syncer` on its own event loop in a thread."""

    def __init__(self, redis_url: str, destinations: dict[str, Any], *, consumer: str = "t1", lease_ttl: float = 1.0,
                 settings: dict[str, str] | None = None) -> None:  # fmt: skip
        settings_ = Settings.from_env({"LIVEPROFILE_REDIS_URL": redis_url, **(settings or {})})
        config = SyncConfig(parse_destinations(orjson.dumps(destinations).decode(), {}), consumer, lease_ttl, 0)
        self.syncer = Syncer(settings_, config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self.syncer.run(self._stop)

        asyncio.run(run())

    def __enter__(self) -> SyncerThread:
        self.thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(15)
        assert not self.thread.is_alive()


def wait_until(pred: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            msg = f"timed out waiting for {what}"
            raise TimeoutError(msg)
        time.sleep(0.02)


def covered(vendor: FakeVendor, feed: Feed, users: list[str] | None = None) -> bool:
    """Whether the vendor has applied every version of every (given) user."""
    with vendor.lock:
        done: dict[str, int] = {}
        for rec in vendor.applied:
            if rec["version"] is not None:
                done[rec["user_id"]] = max(done.get(rec["user_id"], 0), rec["version"])
    return all(done.get(u, 0) >= feed.versions[u] for u in (users or feed.versions))


def _check_in_order(vendor: FakeVendor, feed: Feed, recs: list[dict[str, Any]], users: list[str] | None) -> None:
    per_user: dict[str, list[dict[str, Any]]] = {}
    for rec in recs:
        if rec["version"] is not None:
            per_user.setdefault(rec["user_id"], []).append(rec)
    for uid in users or list(feed.versions):
        seq = per_user.get(uid, [])
        versions = [r["version"] for r in seq]
        assert versions == sorted(set(versions)), f"{uid}: out of order or sent more than once {versions}"
        if vendor.kind == "webhook":
            expect = 1
            for r in seq:
                assert r["from_version"] == expect, f"{uid}: gap or overlap at {r['from_version']} (expected {expect})"
                expect = r["version"] + 1
            assert expect == feed.versions[uid] + 1, f"{uid}: delivered up to {expect - 1} of {feed.versions[uid]}"
        else:
            assert versions and versions[-1] == feed.versions[uid], f"{uid}: {versions}"


def assert_sent_once_in_order(vendor: FakeVendor, feed: Feed, users: list[str] | None = None) -> None:
    """What the vendor *accepted*, raw (no de-duplication): per user, every accepted request carried
    a new version range, strictly increasing; for the webhook the ranges ``from_version..version``
    are disjoint and cover 1..latest with no gap; for Braze/Klaviyo (which see only the newest
    version of an item, ``lp_version``) the versions strictly increase and end at the latest.
    So each (user, version) reached the vendor in exactly one accepted request."""
    with vendor.lock:
        recs = list(vendor.applied)
    _check_in_order(vendor, feed, recs, users)


def assert_exactly_once_in_order(vendor: FakeVendor, feed: Feed, users: list[str] | None = None) -> None:
    """The *receiver's* view: like :func:`assert_sent_once_in_order`, but for the webhook after
    de-duplicating on the per-item idempotency key (first arrival kept), as receivers are told to.
    Braze/Klaviyo have no such key: their accepted requests are checked raw. Use this only where
    re-sends are expected (after a crash); bound the re-sends separately (:func:`unacknowledged`)."""
    with vendor.lock:
        recs = list(vendor.unique.values()) if vendor.kind == "webhook" else list(vendor.applied)
    _check_in_order(vendor, feed, recs, users)


def unacknowledged(vendor: FakeVendor, r: redis.Redis, dest_name: str, keys: Keys = K) -> list[dict[str, Any]]:
    """Records the vendor applied above the destination's watermark (HASH ``sync-watermark``): taken
    by the vendor but never committed by the sender — after a kill, exactly what the next holder
    must send again (single-Redis layout)."""
    wm = {k.decode(): int(v) for k, v in r.hgetall(f"{keys.prefix}:sync-watermark:{dest_name}").items()}
    with vendor.lock:
        return [rec for rec in vendor.applied if rec["version"] is not None and rec["version"] > wm.get(rec["user_id"], 0)]


def times_applied(vendor: FakeVendor) -> Counter[tuple[str, int]]:
    """How many accepted requests carried each (user, version) (raw, as the vendor saw them)."""
    with vendor.lock:
        return Counter((rec["user_id"], rec["version"]) for rec in vendor.applied if rec["version"] is not None)


def start_syncer(redis_url: str, cfg: dict[str, Any], tmp: Path, name: str, lease_ttl: float = 1.0, **env_: str) -> Proc:
    """A real ``python -m liveprofile.sync`` process (consumer ``name``) for destinations ``cfg``
    (``env_``: more settings, e.g. ``LIVEPROFILE_DEFINITIONS``)."""
    env = base_env(redis_url, LIVEPROFILE_SYNC_DESTINATIONS=orjson.dumps(cfg).decode(),
                   LIVEPROFILE_SYNC_LEASE_TTL=str(lease_ttl), LIVEPROFILE_SYNC_METRICS_PORT="0",
                   LIVEPROFILE_SYNC_CONSUMER=name, **env_)  # fmt: skip
    return Proc([sys.executable, "-m", "liveprofile.sync"], env, tmp / f"{name}.log")
