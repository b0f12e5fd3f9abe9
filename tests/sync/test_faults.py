"""Faults at the vendor: throttling, errors, timeouts, outages, refusals — and dead letters with replay."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson
import pytest
import redis

from liveprofile.settings import Settings
from liveprofile.sync import add_commands
from liveprofile.sync.model import SyncKeys
from liveprofile.sync.replay import dead_letters
from tests.sync.fakes import FakeVendor
from tests.sync.helpers import (
    Feed,
    SyncerThread,
    assert_exactly_once_in_order,
    covered,
    dest,
    wait_until,
)

Make = Callable[..., FakeVendor]


def wave(feed: Feed, users: int, tag: str) -> None:
    for i in range(users):
        feed.change(f"u{i}", {"cart_value": f"{tag}.{i}"})


def test_throttling_errors_and_timeouts(redis_url: str, feed: Feed, make_vendor: Make) -> None:
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
    for v in (hook, braze):
        assert v.violations == []
        assert_exactly_once_in_order(v, feed)


def test_outage_isolated_then_recovered(redis_url: str, feed: Feed, make_vendor: Make) -> None:
    down, healthy = make_vendor("webhook", max_items=50), make_vendor("braze")
    down.outage(3600)  # until we end it below: same code path as a timed multi-minute outage
    cfg = {**dest("down", down, max_attempts=100_000), **dest("healthy", healthy)}
    with SyncerThread(redis_url, cfg):
        for tag in ("a", "b", "c"):
            wave(feed, 30, tag)
            wait_until(lambda: covered(healthy, feed), what=f"healthy destination, wave {tag}")
        assert down.unique == {} and {s for _, s in down.requests} == {503}
        down.outage_until = 0.0  # recovery
        wait_until(lambda: covered(down, feed), what="recovered destination")
    for v in (down, healthy):
        assert v.violations == []
        assert_exactly_once_in_order(v, feed)
    assert down.duplicates == 0


def test_timed_outage(redis_url: str, feed: Feed, make_vendor: Make) -> None:
    hook = make_vendor("webhook")
    hook.outage(2.0)
    wave(feed, 10, "a")
    t0 = time.monotonic()
    with SyncerThread(redis_url, dest("hook", hook, max_attempts=100_000)):
        wait_until(lambda: covered(hook, feed), what="delivery after the outage")
    assert time.monotonic() - t0 > 1.5 or hook.unique  # delivered, after retrying through it
    assert_exactly_once_in_order(hook, feed)


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
