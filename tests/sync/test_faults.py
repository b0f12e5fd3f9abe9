"""Faults at the vendor: throttling, errors, timeouts, outages, refusals — and dead letters with replay."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import orjson
import pytest
import redis

from liveprofile.settings import Settings
from liveprofile.sync import add_commands
from liveprofile.sync.model import SyncKeys
from liveprofile.sync.redrive import dead_letters
from tests.sync.fakes import FakeVendor
from tests.sync.helpers import (
    Feed,
    SyncerThread,
    assert_sent_once_in_order,
    covered,
    dest,
    wait_until,
)

Make = Callable[..., FakeVendor]


def wave(feed: Feed, users: int, tag: str) -> None:
    for i in range(users):
        feed.change(f"u{i}", {"cart_value": f"{tag}.{i}"})


def test_throttling_errors_and_timeouts(redis_url: str, feed: Feed, make_vendor: Make) -> None:
    """A mix of 429, 5xx, timeouts and a rate-limit window, several requests in flight: every fault
    is met and retried, and what the vendors accepted (raw, no de-duplication) carries each
    (user, version) once, in per-user order. (That the RateLimit-* headers are *obeyed* is
    :func:`test_ratelimit_headers_are_obeyed`; here in-flight requests may overrun the window.)"""
    hook = make_vendor("webhook", max_items=5)
    hook.ratelimit = (12, 1.0)  # RateLimit-* headers on every answer, 429 + Retry-After when exhausted
    hook.fail_next(429, 500, "timeout", 502, 503, "timeout", 500)
    braze = make_vendor("braze")
    braze.fail_next(500, 429, "timeout")
    wave(feed, 60, "a")
    cfg = {**dest("hook", hook, max_items=5, concurrency=3), **dest("braze", braze)}
    with SyncerThread(redis_url, cfg):
        wait_until(lambda: covered(hook, feed) and covered(braze, feed), timeout=60, what="delivery")
        wave(feed, 60, "b")
        wait_until(lambda: covered(hook, feed) and covered(braze, feed), timeout=60, what="second wave")
    statuses = [s for _, s in hook.requests]
    assert {429, 500, 502, 503, 0} <= set(statuses)  # every fault was met (0 = timed out)
    assert {429, 500, 0} <= {s for _, s in braze.requests}
    for v in (hook, braze):
        assert v.violations == []
        assert_sent_once_in_order(v, feed)
    assert hook.duplicates == 0


def test_ratelimit_headers_are_obeyed(redis_url: str, feed: Feed, make_vendor: Make) -> None:
    """``RateLimit-Remaining: 0`` + ``RateLimit-Reset`` and ``Retry-After`` hold the destination.

    One request in flight at a time (``concurrency`` 1), so every request starts after the previous
    answer was read: the fake marks a request ``early`` when it arrives before the reset (or
    Retry-After) it advertised has passed — there must be none, and so the fixed window never has
    to refuse (the only 429 is the injected one). The budget was exhausted several times (else
    the test would prove nothing), and everything still arrives once, in order."""
    hook = make_vendor("webhook", max_items=1)
    hook.ratelimit = (4, 1.0)  # 4 requests per 1 s window; Reset in whole seconds, rounded up
    hook.fail_next(429)  # the very first request: 429 with Retry-After: 1
    wave(feed, 12, "a")  # 12 requests of one item each: 3 windows' worth
    with SyncerThread(redis_url, dest("hook", hook, max_items=1, concurrency=1)):
        wait_until(lambda: covered(hook, feed), timeout=30, what="paced delivery")
    statuses = [q.status for q in hook.log]
    assert statuses.count(429) == 1 and statuses[0] == 429  # the injected one; the window never refused
    assert hook.exhausted >= 2  # the advertised budget ran out (and reset) more than once
    assert hook.early == 0, f"{hook.early} request(s) sent while told to wait: {statuses}"
    assert hook.violations == []
    assert_sent_once_in_order(hook, feed)


def test_outage_isolated_then_recovered(redis_url: str, feed: Feed, make_vendor: Make) -> None:
    """A destination down for a long time never delays another; once it is back it gets everything,
    raw exactly once per (user, version), in order."""
    down, healthy = make_vendor("webhook", max_items=50), make_vendor("braze")
    down.outage(3600)  # until we end it below: same code path as a timed multi-minute outage
    cfg = {**dest("down", down, max_attempts=100_000), **dest("healthy", healthy)}
    with SyncerThread(redis_url, cfg):
        for tag in ("a", "b", "c"):
            wave(feed, 30, tag)
            wait_until(lambda: covered(healthy, feed), what=f"healthy destination, wave {tag}")
        assert down.unique == {} and {s for _, s in down.requests} == {503}
        down.end_outage()
        wait_until(lambda: covered(down, feed), what="recovered destination")
    for v in (down, healthy):
        assert v.violations == []
        assert_sent_once_in_order(v, feed)
    assert down.duplicates == 0


def test_outage_503_retried_nothing_taken_then_delivered_once(redis_url: str, r: redis.Redis, feed: Feed,
                                                              make_vendor: Make) -> None:  # fmt: skip
    """During an outage every request is answered 503 and *retried with the same items* (same batch
    key), and nothing counts as delivered: no watermark, no acknowledgement. After the outage the
    first request is that same batch, accepted, and the raw deliveries hold each (user, version)
    once, in order — none of them before the outage ended."""
    hook = make_vendor("webhook")
    hook.outage(3600)  # ended below once the retries were seen, not after a guessed time
    wave(feed, 10, "a")
    with SyncerThread(redis_url, dest("hook", hook, max_attempts=100_000)):
        wait_until(lambda: len(hook.log) >= 4, what="retries during the outage")
        assert {q.status for q in hook.log} == {503}
        assert len({q.batch_key for q in hook.log}) == 1  # retried, not dropped or re-cut
        assert r.hlen(SyncKeys("lp", "hook").watermark) == 0  # nothing taken
        assert r.xpending("lp:profile-changes", SyncKeys("lp", "hook").group)["pending"] == 10  # nothing acknowledged
        hook.end_outage()
        wait_until(lambda: covered(hook, feed), what="delivery after the outage")
    ended = hook.outage_ended_at_seq
    assert ended is not None
    during = [q for q in hook.log if q.seq <= ended]
    after = [q for q in hook.log if q.seq > ended]
    assert len(during) >= 4 and all(q.status == 503 for q in during)
    assert after[0].status == 200 and after[0].batch_key == during[0].batch_key
    assert hook.applied and all(rec["seq"] > ended for rec in hook.applied)  # nothing got in during the outage
    assert hook.violations == []
    assert_sent_once_in_order(hook, feed)
    assert r.xpending("lp:profile-changes", SyncKeys("lp", "hook").group)["pending"] == 0


def _cli(argv: list[str], redis_url: str, cfg: dict, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("LIVEPROFILE_SYNC_DESTINATIONS", orjson.dumps(cfg).decode())
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(argv)
    return args.func(args, Settings.from_env({"LIVEPROFILE_REDIS_URL": redis_url}))


def test_dead_letters_and_replay(redis_url: str, r: redis.Redis, feed: Feed, make_vendor: Make,
                                 monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    hook = make_vendor("webhook")
    hook.refuse_users = {"u3"}  # 400 for any request holding u3: split until u3 is alone
    braze = make_vendor("braze")
    cfg = {**dest("hook", hook, max_items=8), **dest("braze", braze, max_attempts=2)}
    wave(feed, 10, "a")
    braze.fail_next(*[500] * 4)  # two requests of 2 attempts each: dead after max_attempts
    with SyncerThread(redis_url, cfg):
        wait_until(lambda: covered(hook, feed, [f"u{i}" for i in range(10) if i != 3]), what="the good ones")
        wait_until(lambda: r.xlen(SyncKeys("lp", "hook").dead_letter) == 1, what="hook dead letter")
        wait_until(lambda: r.xlen(SyncKeys("lp", "braze").dead_letter) >= 1, what="braze dead letters")
        (dl,) = dead_letters(r, "lp", "hook")
        assert dl["reason"] == "http_400" and dl["item"]["user_id"] == "u3"
        assert int(r.hget(SyncKeys("lp", "hook").watermark, "u3")) == 1  # taken: a redelivery will not resend
        feed.change("u3", {"cart_value": "newest"})  # newer version, still refused
        wait_until(lambda: r.xlen(SyncKeys("lp", "hook").dead_letter) == 2, what="second dead letter")
        wait_until(lambda: r.xlen(SyncKeys("lp", "braze").dead_letter) == 11, what="braze: 10 items, then u3 again")
        assert _cli(["sync", "dead-letters", "hook"], redis_url, cfg, monkeypatch) == 0
        assert capsys.readouterr().out.count("http_400") == 2

        hook.refuse_users = set()
        assert _cli(["sync", "replay", "hook"], redis_url, cfg, monkeypatch) == 0
        assert _cli(["sync", "replay", "braze"], redis_url, cfg, monkeypatch) == 0
        wait_until(lambda: covered(hook, feed) and covered(braze, feed), what="replayed")
        assert _cli(["sync", "replay", "nope"], redis_url, cfg, monkeypatch) == 2
    assert r.xlen(SyncKeys("lp", "hook").dead_letter) == 0 and r.xlen(SyncKeys("lp", "braze").dead_letter) == 0
    u3 = [rec for rec in hook.applied if rec["user_id"] == "u3"]
    assert all(rec["fields"]["cart_value"] == "newest" for rec in u3)  # current values, never stale ones
    assert hook.violations == [] and braze.violations == []
    braze_latest = {rec["user_id"]: rec["version"] for rec in braze.applied}
    assert braze_latest == feed.versions
