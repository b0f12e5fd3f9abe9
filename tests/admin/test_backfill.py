"""``liveprofile definitions backfill`` against a real redis-server, before any dataflow reads the
entries: how it refuses, how it resolves identity offline (links in the history, the known profiles'
``anonymous_ids``, ``merged_into``), which events each user's ``_computed_seed`` entries hold (only
what the selected traits read, a messageId once, buffer and file together) and in which shard, and
that a re-run writes the same entry ids. The buffer is filled the way the collector fills it
(:func:`liveprofile.buffer.ingest.prepare`); the entries are read back with the flow's decoder."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest
import redis

from liveprofile.buffer.ingest import prepare
from liveprofile.buffer.streams import SyncAppender
from liveprofile.cli import main
from liveprofile.store.envelope import EntryKind, decode_seed, kind_of
from liveprofile.store.keys import Keys
from operators.events import Limits
from operators.identity import public_id
from operators.routing import shard_of

K = Keys("lp")
SHARDS = 4
DEFS = """\
version: 1
computed_traits:
  - name: shoe_views_7d
    kind: count
    event: Product Viewed
    where: properties.category == "shoes"
    window: 7d
  - name: spend
    kind: sum
    event: Order Completed
    value: properties.revenue
"""


def _at(minute: int) -> str:
    return f"2026-05-01T12:{minute:02d}:00.000Z"


def _ev(mid: str, minute: int, name: str = "Product Viewed", **kw: object) -> dict:
    props = {"category": "shoes", "colour": "red", "big": "x" * 50} if name == "Product Viewed" else {"revenue": 10, "noise": 1}
    return {"type": "track", "event": name, "messageId": mid, "timestamp": _at(minute), "receivedAt": _at(minute),
            "properties": props, **kw}  # fmt: skip


HISTORY = [
    _ev("v1", 1, anonymousId="a1"),  # before the link: the anonymous profile merges into u1
    {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "i1", "timestamp": _at(2), "receivedAt": _at(2)},
    _ev("v2", 3, anonymousId="a1"),  # after the link
    _ev("v2", 4, anonymousId="a1"),  # re-sent: counts once
    _ev("v3", 5, anonymousId="a2"),  # a2 is u2's (the profile's anonymous_ids)
    _ev("o1", 6, "Order Completed", userId="old"),  # old merged into u3
    _ev("v4", 7, anonymousId="a3"),  # never linked: its own anonymous profile
    _ev("x1", 8, "Something Else", userId="u1"),  # matches no trait
]


@pytest.fixture
def env(r: redis.Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    defs = tmp_path / "defs.yaml"
    defs.write_text(DEFS)
    for k, v in {"LIVEPROFILE_REDIS_URL": redis_url, "LIVEPROFILE_SHARDS": str(SHARDS), "LIVEPROFILE_DEFINITIONS": str(defs)}.items():
        monkeypatch.setenv(k, v)
    r.hset(K.profile("u2"), mapping={"user_id": "u2", "anonymous_ids": '["a2"]'})
    r.hset(K.profile("old"), mapping={"user_id": "old", "merged_into": "u3"})
    return tmp_path


def _fill(r: redis.Redis, events: list[dict]) -> None:
    prep = prepare(events, keys=K, shards=SHARDS, limits=Limits(), received_at=_at(59), source="http:batch", keep_received=True)
    SyncAppender(r).append(prep.appends)


def _seeds(r: redis.Redis) -> dict[str, tuple[str, list, int]]:
    """entry id -> (user, compact events, shard) of every seed entry in the buffer."""
    out = {}
    for shard in range(SHARDS):
        for _, f in r.xrange(K.events(shard)):
            if kind_of(f[b"e"]) is EntryKind.COMPUTED_SEED:
                s = decode_seed(f[b"e"])
                out[s.seed_id] = (s.uid, orjson.loads(f[b"e"])["events"], shard)
    return out


def _by_user(seeds: dict[str, tuple[str, list, int]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for uid, events, shard in seeds.values():
        assert shard == shard_of(public_id(uid), SHARDS), "a seed goes to its user's shard"
        out.setdefault(uid, []).extend(e["messageId"] for e in events)
    return {k: sorted(v) for k, v in sorted(out.items())}


WANT = {" anon:a3": ["v4"], "u1": ["v1", "v2"], "u2": ["v3"], "u3": ["o1"]}


def test_refuses_while_the_dataflow_has_not_read_the_buffer(env: Path, r: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(r, HISTORY)
    assert main(["definitions", "backfill", "--buffer"]) == 2
    err = capsys.readouterr().err
    assert "has not caught up" in err and "--force" in err
    assert _seeds(r) == {}
    assert main(["definitions", "backfill"]) == 2, "no history source given"


def test_buffer_history_resolved_offline_compacted_and_a_rerun_writes_the_same_ids(env: Path, r: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(r, HISTORY)
    assert main(["definitions", "backfill", "--buffer", "--force"]) == 0
    stats = orjson.loads(capsys.readouterr().out)
    assert (stats["users"], stats["events"], stats["invalid"]) == (4, 5, 0)
    first = _seeds(r)
    assert _by_user(first) == WANT
    compact = next(ev for uid, evs, _ in first.values() for ev in evs if ev["messageId"] == "v1")
    assert compact["properties"] == {"category": "shoes"}, "only the paths the traits read"
    assert set(compact) == {"ts", "receivedAt", "messageId", "type", "name", "properties"}
    assert main(["definitions", "backfill", "--buffer", "--force"]) == 0
    again = _seeds(r)
    assert len(again) == len(first) and all(sid in again for sid in first), "a re-run writes the same entry ids"


def test_file_and_buffer_together_count_a_messageid_once_and_traits_select(env: Path, r: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(r, HISTORY[4:])  # the buffer holds the newer half
    older = env / "old.jsonl.gz"
    with gzip.open(older, "wb") as f:  # the older half and an overlap, some lines without receivedAt
        for ev in HISTORY[:6]:
            f.write(orjson.dumps({k: v for k, v in ev.items() if k != "receivedAt" or ev["messageId"] != "v1"}) + b"\n")
        f.write(b"not json\n")
    assert main(["definitions", "backfill", "--buffer", "--file", str(older), "--force"]) == 0
    stats = orjson.loads(capsys.readouterr().out)
    assert stats["invalid"] == 1
    assert _by_user(_seeds(r)) == WANT
    for s in range(SHARDS):
        r.delete(K.events(s))
    assert main(["definitions", "backfill", "--file", str(older), "--traits", "spend", "--force"]) == 0
    assert _by_user(_seeds(r)) == {"u3": ["o1"]}
    assert main(["definitions", "backfill", "--file", str(older), "--traits", "nope", "--force"]) == 2
    assert "unknown computed trait(s) nope" in capsys.readouterr().err
