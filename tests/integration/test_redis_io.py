"""Sinks and source against a real redis-server: version guard, change feed, resume."""

from __future__ import annotations

import orjson
import pytest
import redis

from dataflows.outputs import DeadLetter
from dataflows.sinks import RedisDeadLetterSink, RedisProfileSink
from dataflows.sources.streams import RedisStreamSource
from liveprofile.store.connection import RawPipeline
from liveprofile.store.keys import Keys
from operators.events import Rejected
from operators.rfm import RfmValues
from operators.user import ProfileUpdate, Retire

K = Keys("lp")


def fields(v: int, rfm: RfmValues | None = None, **kw: str) -> ProfileUpdate:
    f = {"user_id": "u1", "event_count": str(v), "email": "", **kw}
    return ProfileUpdate("u1", v, f, 0, rfm)


def test_upsert_seq_guard_and_change_feed(redis_url: str, r: redis.Redis) -> None:
    part = RedisProfileSink(redis_url, K).build("s", 0, 1)
    part.write_batch([("u1", fields(1)), ("u1", fields(3, email="a@b.co")), ("u1", fields(2))])
    assert r.hget(K.profile("u1"), "seq") == b"3" and r.hget(K.profile("u1"), "version") == b"1"
    assert r.hget(K.profile("u1"), "event_count") == b"3"
    assert r.xlen(K.changes) == 1  # coalesced: one write for the batch
    # replaying older or equal seqs with the same content changes nothing and adds no change entry
    part.write_batch([("u1", fields(3, email="a@b.co")), ("u1", fields(1))])
    part.write_batch([("u1", fields(1))])
    assert r.xlen(K.changes) == 1 and r.hget(K.profile("u1"), "version") == b"1"
    part.write_batch([("u1", fields(4, email="a@b.co"))])
    entries = r.xrange(K.changes)
    assert len(entries) == 2
    last = entries[-1][1]
    assert last[b"user_id"] == b"u1" and last[b"version"] == b"2"
    assert orjson.loads(last[b"changed"]) == {"event_count": "4"}  # only what changed
    first = orjson.loads(entries[0][1][b"changed"])
    assert first["email"] == "a@b.co" and first["rfm_segment"] == "" and first["user_id"] == "u1"


def test_segments_move_with_the_profile_and_tombstones_clear_them(redis_url: str, r: redis.Redis) -> None:
    from operators.rfm import Population

    pop = Population()
    pop.apply(None, RfmValues(10**12, 1, 500))
    r.set(K.rfm_edges, pop.edges().to_json())
    part = RedisProfileSink(redis_url, K).build("s", 0, 1)
    part.write_batch([("u1", fields(1, rfm=RfmValues(10**12, 1, 500), top_category="shoes", cart_abandoned="1"))])
    seg = r.hget(K.profile("u1"), "rfm_segment").decode()
    assert seg and r.sismember(K.segment(seg), "u1")
    assert r.sismember(K.segment("interest:shoes"), "u1") and r.sismember(K.segment("cart_abandoned"), "u1")
    assert r.sismember(K.rfm_customers, "u1")
    part.write_batch([("u1", fields(2, rfm=RfmValues(10**12, 1, 500), top_category="books", cart_abandoned="0"))])
    assert not r.sismember(K.segment("interest:shoes"), "u1") and r.sismember(K.segment("interest:books"), "u1")
    assert not r.sismember(K.segment("cart_abandoned"), "u1")
    part.write_batch([("u1", Retire("u1", "u9", 3))])
    prof = {k.decode(): v.decode() for k, v in r.hgetall(K.profile("u1")).items()}
    assert prof["merged_into"] == "u9" and "event_count" not in prof and "rfm_segment" not in prof
    assert not r.sismember(K.segment(seg), "u1") and not r.sismember(K.segment("interest:books"), "u1")
    assert not r.sismember(K.rfm_customers, "u1")
    part.write_batch([("u1", fields(2, top_category="books"))])  # a late replay cannot resurrect it
    assert "event_count" not in {k.decode() for k in r.hkeys(K.profile("u1"))}


def test_dead_letters_are_idempotent(redis_url: str, r: redis.Redis) -> None:
    part = RedisDeadLetterSink(redis_url, K).build("s", 0, 1)
    rej = Rejected("missing_event", "track calls need an event", b'{"type":"track"}', 1, "m1")
    batch = [DeadLetter(rej, "events:0", (100, 0)), DeadLetter(rej, "events:0", (100, 1)), DeadLetter(rej, "events:1", (5, 0))]
    part.write_batch(batch)
    part.write_batch(batch)  # at-least-once replay
    part.write_batch(batch[1:2])
    entries = r.xrange(K.dead_letter)
    assert len(entries) == 3
    e = entries[0][1]
    assert e[b"reason"] == b"missing_event" and e[b"raw"] == b'{"type":"track"}' and e[b"stage"] == b"dataflow"
    assert e[b"source"] == b"events:0:100-0"


def test_source_resumes_after_snapshot(redis_url: str, r: redis.Redis) -> None:
    for i in range(25):
        r.xadd(K.events(1), {"e": f"{i}"})
    src = RedisStreamSource(redis_url, [K.events(0), K.events(1)], count=10, stop_at_end=True, progress_key=K.buffer_progress)
    assert src.list_parts() == ["lp:events:0", "lp:events:1"]
    p = src.build_part("inp", "lp:events:1", None)
    first = p.next_batch()
    assert [x[2] for x in first] == [str(i).encode() for i in range(10)] and first[0][0] == 1
    snap = p.snapshot()
    p2 = src.build_part("inp", "lp:events:1", snap)
    rest = p2.next_batch() + p2.next_batch()
    assert [x[2] for x in rest] == [str(i).encode() for i in range(10, 25)]
    try:
        p2.next_batch()
        raise AssertionError("expected EOF")
    except StopIteration:
        pass
    assert r.hget(K.buffer_progress, "1") == b"25"


def test_source_read_ahead_is_not_the_position_and_an_empty_one_is_not_trusted(redis_url: str, r: redis.Redis) -> None:
    """While the next page is read ahead, the snapshot stays after the last entry returned; a
    read ahead that found nothing is read again before the partition reports the end."""
    ids = [r.xadd(K.events(0), {"e": f"{i}"}) for i in range(15)]
    src = RedisStreamSource(redis_url, [K.events(0)], count=10, stop_at_end=True, read_ahead=True)
    p = src.build_part("inp", K.events(0), None)
    assert [x[2] for x in p.next_batch()] == [str(i).encode() for i in range(10)]
    assert p._ahead is not None and len(p._ahead.result()) == 5  # entries 10-14 are read ahead, not returned
    assert p.snapshot() == (ids[9], 10)
    assert [x[2] for x in p.next_batch()] == [str(i).encode() for i in range(10, 15)]
    assert p._ahead is not None and p._ahead.result() == []  # the read ahead found the stream drained...
    r.xadd(K.events(0), {"e": "15"})  # ...and then an entry came
    assert [x[2] for x in p.next_batch()] == [b"15"]
    assert p.snapshot()[1] == 16
    with pytest.raises(StopIteration):
        p.next_batch()
    p.close()


def test_source_send_ahead_is_not_the_position_an_empty_one_is_not_trusted_and_a_lost_one_is_read_again(redis_url: str, r: redis.Redis) -> None:
    """The same with the read *sent* ahead (no thread): after each page the next page's XREAD
    is sent and its reply is taken at the next poll; an empty one is read again; a connection
    lost with the read pending costs one empty poll (backed off), then the page is read."""
    ids = [r.xadd(K.events(0), {"e": f"{i}"}) for i in range(15)]
    p = RedisStreamSource(redis_url, [K.events(0)], count=10, stop_at_end=True, send_ahead=True).build_part("inp", K.events(0), None)
    assert [x[2] for x in p.next_batch()] == [str(i).encode() for i in range(10)]
    assert p._sent is not None and p.snapshot() == (ids[9], 10)
    assert [x[2] for x in p.next_batch()] == [str(i).encode() for i in range(10, 15)]
    r.xadd(K.events(0), {"e": "15"})  # after the read sent ahead found the stream drained
    assert [x[2] for x in p.next_batch()] == [b"15"]
    r.xadd(K.events(0), {"e": "16"})
    p._sent.disconnect()  # the connection with the pending read is lost (its reply with it)
    assert p.next_batch() == [] and p.next_awake() is not None
    assert [x[2] for x in p.next_batch()] == [b"16"]
    assert p.snapshot()[1] == 17
    with pytest.raises(StopIteration):
        p.next_batch()
    p.close()


def test_source_survives_redis_outage(redis_server, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    src = RedisStreamSource("redis://127.0.0.1:1/0", ["lp:events:0"])
    p = src.build_part("inp", "lp:events:0", None)
    assert p.next_batch() == []  # connection refused: backs off instead of crashing
    assert p.next_awake() is not None


def test_trimming_removes_only_durably_processed_entries(redis_url: str, r: redis.Redis) -> None:
    for i in range(30):
        r.xadd(K.events(0), {"e": f"{i}"})
    src = RedisStreamSource(redis_url, [K.events(0)], count=10, progress_key=K.buffer_progress, trim_retain_ms=0)
    p = src.build_part("inp", K.events(0), None)
    p.next_batch()  # 0..9
    p.snapshot()  # epoch 1 ends after 9
    p.next_batch()  # 10..19
    p._trimmed_at = 0.0
    p.next_batch()  # 20..29: one snapshot only, nothing is durable yet
    assert r.xlen(K.events(0)) == 30
    p.snapshot()  # epoch 2 ends after 29: epoch 1 (<= 9) is now certainly committed
    p._trimmed_at = 0.0
    p.next_batch()
    left = [int(f[b"e"]) for _, f in r.xrange(K.events(0))]
    assert left == list(range(10, 30))  # exactly what epoch 1 covered went; nothing unsnapshotted
    assert r.xinfo_stream(K.events(0))["entries-added"] == 30  # the backlog arithmetic still holds


def test_no_trimming_without_a_retention(redis_url: str, r: redis.Redis) -> None:
    for i in range(20):
        r.xadd(K.events(0), {"e": f"{i}"})
    p = RedisStreamSource(redis_url, [K.events(0)], count=10).build_part("inp", K.events(0), None)
    for _ in range(3):
        p.next_batch()
        p.snapshot()
        p._trimmed_at = 0.0
    assert r.xlen(K.events(0)) == 20


def test_raw_pipeline_replies_in_order_with_errors_in_place(r: redis.Redis) -> None:
    pipe = RawPipeline(r)
    pipe.command("SET", "k", "v")
    pipe.command("INCR", "k")  # not an integer: its error comes back in its place
    pipe.command("GET", "k")
    ok, err, val = pipe.execute()
    assert ok in (b"OK", "OK", True) and isinstance(err, redis.ResponseError) and val == b"v"
    assert len(pipe) == 0 and pipe.execute() == []


def test_raw_pipeline_raises_noscript_after_reading_every_reply(r: redis.Redis) -> None:
    pipe = RawPipeline(r)
    pipe.command("EVALSHA", "0" * 40, 0)
    pipe.command("SET", "after", "1")
    try:
        pipe.execute()
        raise AssertionError("expected NoScriptError")
    except redis.exceptions.NoScriptError:
        pass
    assert r.get("after") == b"1"
    pipe.command("PING")  # the pooled connection is still in step
    assert pipe.execute()[0] in (b"PONG", "PONG", True)


def test_async_client_packs_with_hiredis_the_bytes_redis_py_packs(redis_url: str, r: redis.Redis) -> None:
    """connect_async's connections pack in C (hiredis) and send exactly the RESP that redis-py's
    Python packer sends (a command name with a space split, str/bytes/int/float, args past the
    6,000-byte chunking cutoff), and a pipeline of them runs against a real server."""
    import asyncio

    from redis.asyncio.connection import Connection

    from liveprofile.store.connection import connect_async

    big = b"x" * 9000
    cmds = [("EVALSHA", "0" * 40, 2, "k1", "k2", b"raw", 7, -1, 2.5, "\u00e9t\u00e9"), ("CONFIG GET", "maxmemory"), ("XADD", "s", "*", "e", big)]
    client = connect_async(redis_url)
    packing = client.connection_pool.connection_class()
    assert type(packing).pack_commands is not Connection.pack_commands  # hiredis, not the Python loop
    python = Connection()
    assert b"".join(packing.pack_commands(cmds)) == b"".join(python.pack_commands(cmds))
    for cmd in cmds:
        assert b"".join(packing.pack_command(*cmd)) == b"".join(python.pack_command(*cmd))

    async def run() -> list[object]:
        pipe = client.pipeline(transaction=False)
        pipe.xadd("hiredis-packed", {"e": big, "n": 3})
        pipe.xlen("hiredis-packed")
        out = await pipe.execute()
        await client.aclose()
        return out

    _, n = asyncio.run(run())
    assert n == 1 and r.xrange("hiredis-packed")[0][1] == {b"e": big, b"n": b"3"}


def _freshness_count() -> float:
    from dataflows import metrics

    return next(s.value for m in metrics.FRESHNESS.collect() for s in m.samples if s.name.endswith("_count"))


def test_freshness_samples_only_writes_that_carry_a_receipt(redis_url: str, r: redis.Redis) -> None:
    """A timer's write (session close, abandonment, window exit: ``last_received_ms`` 0) is not a
    freshness sample: measured from the user's last receipt it would record minutes of
    "staleness" for a profile that was fresh, and fire the freshness alert on quiet users."""
    import time

    part = RedisProfileSink(redis_url, K).build("s", 0, 1)
    now_ms = int(time.time() * 1000)
    before = _freshness_count()
    part.write_batch([("u1", fields(1))])  # a timer's write: written, not sampled
    assert r.hget(K.profile("u1"), "seq") == b"1" and _freshness_count() == before
    received = ProfileUpdate("u1", 2, {"user_id": "u1", "event_count": "2", "email": ""}, now_ms, None)
    timer = ProfileUpdate("u1", 2, {"user_id": "u1", "event_count": "2", "email": "", "cart_abandoned": "1"}, 0, None)
    part.write_batch([("u1", received), ("u1", timer)])  # coalesced: the receipt the batch carries is kept
    assert r.hget(K.profile("u1"), "cart_abandoned") == b"1" and _freshness_count() == before + 1
