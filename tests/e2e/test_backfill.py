"""``liveprofile definitions backfill`` end to end: real redis-server, the real dataflow process
(``bytewax.run``, recovery on, run to the end of the buffer each phase) and the real command as a
process. A deployment under one definitions file; the next under another (a new 7d trait, a new
all-time sum, an audience over them) starts the new traits empty; ``--buffer`` then counts the
history the buffer still holds (values exact, the audience entered in the change feed with its
``event_at``); a second run changes nothing (same profile ``version``, no new change-feed entry);
``--file`` adds older history the buffer no longer has and counts an event it shares with the buffer
once, also when run twice."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import redis

from liveprofile.buffer.ingest import prepare
from liveprofile.buffer.streams import SyncAppender
from liveprofile.settings import Settings
from operators.timeutil import iso
from tests.e2e.chaos import init_recovery
from tests.procs import ROOT, base_env, start_dataflow

from .helpers import K

OLD = "version: 1\ncomputed_traits:\n  - {name: views, kind: count, event: Product Viewed}\n"
NEW = """\
version: 1
computed_traits:
  - {name: views, kind: count, event: Product Viewed}
  - {name: shoe_views_7d, kind: count, event: Product Viewed, where: 'properties.category == "shoes"', window: 7d}
  - {name: spend, kind: sum, event: Order Completed, value: properties.revenue}
audiences:
  - {name: shoe_fans, when: computed.shoe_views_7d >= 3}
"""
NOW = int(time.time() * 1000) // 1000 * 1000
HOUR = 3_600_000


def _ev(mid: str, user: str, at: int, name: str = "Product Viewed", **props: object) -> dict:
    return {"type": "track", "event": name, "userId": user, "messageId": mid, "timestamp": iso(at - 1000),
            "receivedAt": iso(at), "properties": props or {"category": "shoes"}}  # fmt: skip


def _append(r: redis.Redis, env: dict[str, str], events: list[dict]) -> None:
    s = Settings.from_env(env)
    prep = prepare(events, keys=K, shards=s.shards, limits=s.limits, received_at=iso(NOW), source="http:batch", keep_received=True)
    assert prep.accepted == len(events), prep.rejected
    SyncAppender(r).append(prep.appends)


def _flow(env: dict[str, str], tmp: Path, rec: Path, name: str) -> None:
    df = start_dataflow(env, tmp, recovery=rec, flow="dataflows.profiles:get_flow(stop_at_end=True)", name=name)
    assert df.wait(120) == 0, df.output()


def _backfill(env: dict[str, str], *args: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "liveprofile.cli", "definitions", "backfill", *args], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert p.returncode == 0, p.stderr
    return orjson.loads(p.stdout)


def _state(r: redis.Redis, uid: str) -> tuple[dict, list, str]:
    h = r.hgetall(K.profile(uid))
    return orjson.loads(h.get(b"computed", b"{}")), orjson.loads(h.get(b"audiences", b"[]")), h[b"version"].decode()


def _feed(r: redis.Redis, uid: str) -> list[dict]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in r.xrange(K.changes) if f.get(b"user_id") == uid.encode()]


def test_backfill_from_the_buffer_and_a_file_is_exact_and_a_rerun_changes_nothing(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    (tmp_path / "old.yaml").write_text(OLD)
    (tmp_path / "new.yaml").write_text(NEW)
    common = {"LIVEPROFILE_BUFFER_RETAIN": "off", "LIVEPROFILE_TIMESTAMP_MIN": "2020-01-01T00:00:00Z"}
    old_env = base_env(redis_url, LIVEPROFILE_DEFINITIONS=str(tmp_path / "old.yaml"), **common)
    env = base_env(redis_url, LIVEPROFILE_DEFINITIONS=str(tmp_path / "new.yaml"), **common)
    rec = init_recovery(tmp_path / "rec", 1)
    t0 = NOW - 2 * HOUR
    history = [_ev("h1", "u1", t0), _ev("h2", "u1", t0 + 1000), _ev("h3", "u1", t0 + 2000, category="hats"),
               _ev("h4", "u1", t0 + 3000, "Order Completed", revenue=12.5),
               _ev("h5", "u2", t0 + 4000), _ev("h6", "u2", t0 + 5000, "Order Completed", revenue=3)]  # fmt: skip
    _append(r, old_env, history)
    _flow(old_env, tmp_path, rec, "old")
    assert _state(r, "u1")[0] == {"views": 3}

    # the new definitions deployed: u1's next event starts the new traits empty
    _append(r, env, [_ev("l1", "u1", NOW - HOUR)])
    _flow(env, tmp_path, rec, "new")
    assert _state(r, "u1")[:2] == ({"views": 4, "shoe_views_7d": 1, "spend": 0}, [])

    stats = _backfill(env, "--buffer")
    assert (stats["users"], stats["events"]) == (2, 7), stats  # u1: h1 h2 h3 h4 and l1 (live: the boundary leaves it out); u2: h5 h6
    _flow(env, tmp_path, rec, "seeded")
    computed, audiences, version = _state(r, "u1")
    assert (computed, audiences) == ({"views": 4, "shoe_views_7d": 3, "spend": 12.5}, ["shoe_fans"])
    assert _state(r, "u2")[:2] == ({"views": 1, "shoe_views_7d": 1, "spend": 3}, [])
    entered = [e for e in _feed(r, "u1") if "audiences_entered" in e]
    assert [orjson.loads(e["audiences_entered"]) for e in entered] == [["shoe_fans"]]
    assert entered[0]["event_at"] == iso(t0 + 3000 - 1000), "the newest event time of the history that caused it"

    feed_len = r.xlen(K.changes)
    _backfill(env, "--buffer")  # a re-run
    _flow(env, tmp_path, rec, "rerun")
    assert _state(r, "u1")[2] == version and r.xlen(K.changes) == feed_len, "a re-run changes nothing"

    # older history, no longer in the buffer, in a file; h5 is in both
    older = tmp_path / "older.jsonl"
    day = 24 * HOUR
    older.write_bytes(b"\n".join(orjson.dumps(e) for e in [_ev("f1", "u2", NOW - 3 * day), _ev("f2", "u2", NOW - 3 * day + 1000),
                                                           _ev("h5", "u2", t0 + 4000)]) + b"\n")  # fmt: skip
    _backfill(env, "--file", str(older))
    # run twice before the dataflow reads either (--force: the first run's entries are unread): the second adds nothing
    _backfill(env, "--file", str(older), "--force")
    _flow(env, tmp_path, rec, "file")
    # f1, f2 and h5 once; views too: f1 and f2 were received before u2's first event under any definitions
    assert _state(r, "u2")[:2] == ({"views": 3, "shoe_views_7d": 3, "spend": 3}, ["shoe_fans"])
    assert [orjson.loads(e["audiences_entered"]) for e in _feed(r, "u2") if "audiences_entered" in e] == [["shoe_fans"]]
