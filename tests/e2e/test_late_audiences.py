"""Audiences over RFM scores and model outputs ("late" fields, scored after the per-user step),
through the whole flow (real dataflow process, real Redis).

The brute-force stream of :mod:`tests.audiences_bruteforce` runs with its rich definitions plus
late audiences (an RFM segment, RFM scores mixed with computed traits and early audiences, the
models' flag/score/propensity). Once the buffer is read and the RFM refresher has converged, every
profile must hold the brute force's computed traits, and its ``audiences`` — early and late —
must be exactly what the audiences evaluate to over the profile's *stored* fields (so a late
audience agrees with the RFM scores and model outputs the profile holds), with the audience sets
to match and the change feed's transitions alternating. Then new customers with large recent
orders shift the population: idle customers' RFM scores move by the refresher's patches, and
their late audiences must follow with no event of theirs (transitions in the feed)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import redis

from bench.pipeline import load_buffer
from tests.audiences_bruteforce import DAY, PREFIX, RICH, Stream, _iso, load
from tests.e2e.chaos import FAST_WINDOWS, settled
from tests.e2e.test_audiences import STREAM, T_END, agree, check_feed
from tests.procs import base_env, start_dataflow

LATE = RICH + """\
  - name: champions
    when: rfm_segment in ["champions", "loyal"]
  - name: champions_big
    when: audience.champions and computed.spend_90d > 300
  - name: fresh_high_value
    when: rfm_r >= 4 and rfm_m >= 4 and not audience.big_spenders
  - name: not_champions_dormant
    when: audience.email_dormant and not audience.champions
  - name: model_flagged
    when: suspect or anomaly_score > 0.6 or purchase_propensity >= 0.3
"""
LATE_NAMES = ("champions", "champions_big", "fresh_high_value", "not_champions_dormant", "model_flagged")


def newcomers(n: int = 150) -> list[dict]:
    """``n`` new customers, each with three large orders in the day after the stream ends."""
    out: list[dict] = []
    for i in range(n):
        uid = f"new{i:03d}"
        t = T_END + DAY // 2 + i * 1000
        out.append({"messageId": f"n{i}-i", "timestamp": _iso(t), "type": "identify", "userId": uid, "traits": {"plan": "pro"}})
        for k in range(3):
            out.append({"messageId": f"n{i}-{k}", "timestamp": _iso(t + (k + 1) * 60_000), "type": "track", "userId": uid,
                        "event": "Order Completed", "properties": {"order_id": f"n{i}-{k}", "revenue": 400, "items": 2}})  # fmt: skip
    return out


def test_late_audiences_follow_rfm_and_models_with_no_event_of_the_user(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    defs = load(LATE)
    assert defs.late == set(LATE_NAMES)
    path = tmp_path / "definitions.yaml"
    path.write_text(LATE)
    df = start_dataflow(base_env(redis_url, LIVEPROFILE_DEFINITIONS=str(path), **FAST_WINDOWS), tmp_path)
    try:
        assert load_buffer(redis_url, STREAM.events, 4) == len(STREAM.events)
        settled(r)
        agree(r, defs, T_END)
        sets = {n: {m.decode() for m in r.smembers(f"{PREFIX}:audience:{n}")} for n in LATE_NAMES}
        assert sets["champions"] and sets["fresh_high_value"], sets  # the stream puts users in them
        before = r.xrevrange(f"{PREFIX}:profile-changes", count=1)[0][0]

        more = newcomers()
        assert load_buffer(redis_url, more, 4) == len(more)
        settled(r)
        stream2 = Stream(STREAM.events + more, STREAM.identified)
        t2 = max(stream2.ts(e) for e in more)
        agree(r, defs, t2, stream=stream2)
        check_feed(r, defs, stream2, t2, event_times=False)
        assert df.alive(), df.output()
    finally:
        df.interrupt()
    # idle customers (no event in the second part) moved in or out of the RFM audience: the
    # refresher's patches re-decided it in the profile script
    moved: set[str] = set()
    for _, f in r.xrange(f"{PREFIX}:profile-changes", min=f"({before.decode()}"):
        uid = f[b"user_id"].decode()
        if uid.startswith("new") or f.get(b"anonymous") == b"1":
            continue
        for k in (b"audiences_entered", b"audiences_exited"):
            if "champions" in orjson.loads(f.get(k, b"[]")):
                moved.add(uid)
    if not moved:
        pytest.fail("no idle customer's RFM audience moved with the population")
