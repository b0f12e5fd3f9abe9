"""The dataflow wiring with bytewax.testing: routing, dead letters, dedupe, merges, recovery."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import orjson
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from dataflows.profiles import Sinks, build_flow
from dataflows.redis_sinks import DeadLetter, EdgesOut, ModelOut, encode_merge
from liveprofile.settings import Settings
from operators.user import MergeExport, ProfileUpdate, Retire

SETTINGS = Settings.from_env({"LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z"}, shards=1)
REC = "2024-05-02T00:00:00.000Z"


def item(i: int, **ev: object) -> tuple[int, bytes, bytes]:
    body = {"type": "track", "event": "Product Viewed", "messageId": f"m{i}", "receivedAt": REC, "timestamp": 1714564000 + i, **ev}
    body = {k: v for k, v in body.items() if v is not None}
    return (0, f"1714564800000-{i}".encode(), orjson.dumps(body))


class Out:
    def __init__(self) -> None:
        self.profiles: list = []
        self.patches: list = []
        self.edges: list = []
        self.merges: list = []
        self.dead: list = []

    def sinks(self) -> Sinks:
        return Sinks(TestingSink(self.profiles), TestingSink(self.patches), TestingSink(self.edges), TestingSink(self.merges), TestingSink(self.dead))

    def final(self) -> dict[str, ProfileUpdate | Retire]:
        """The last update per user, its fields folded over all updates (they carry only
        what changed), as the Redis sink applies them."""
        out: dict = {}
        for uid, p in self.profiles:
            prev = out.get(uid)
            if prev is not None and p.seq < prev.seq:
                continue
            if prev is not None and type(p) is ProfileUpdate and type(prev) is ProfileUpdate:
                p = dataclasses.replace(p, fields={**prev.fields, **p.fields})
            out[uid] = p
        return out


def run(items: list, batch_size: int = 100, out: Out | None = None, **kw: object) -> Out:
    out = out or Out()
    run_main(build_flow(SETTINGS, TestingSource(items, batch_size=batch_size), out.sinks()), **kw)  # type: ignore[arg-type]
    return out


def test_profiles_dead_letters_and_dedupe() -> None:
    items = [
        item(1, userId="u1"),
        item(2, userId="u2", event="Order Completed", properties={"revenue": 5.5}),
        item(3, userId="u1", event="Order Completed", properties={"revenue": 1.25}),
        item(3, userId="u1", event="Order Completed", properties={"revenue": 1.25}),  # duplicate
        item(4, userId="u1", event=None),  # invalid
        (0, b"1714564800000-5", b"{not json"),
    ]
    out = run(items)
    f = out.final()
    assert set(f) == {"u1", "u2"}
    assert f["u1"].fields["event_count"] == "2" and f["u1"].fields["revenue_total"] == "1.25"  # type: ignore[union-attr]
    assert f["u2"].fields["revenue_total"] == "5.50"  # type: ignore[union-attr]
    assert sorted(d.rejected.reason for d in out.dead) == ["malformed_json", "missing_event"]
    assert {d.position for d in out.dead} == {(1714564800000, 4), (1714564800000, 5)}
    assert all(isinstance(d, DeadLetter) for d in out.dead)
    assert len(out.profiles) == 2  # one emission per user per batch
    assert out.patches == []  # sessions under 8 events are not scored
    assert out.edges and isinstance(out.edges[-1], EdgesOut) and out.edges[-1].edges.n == 2  # type: ignore[union-attr]


def test_interest_sessions_and_models() -> None:
    items = [item(i, userId="u1", properties={"category": "Shoes" if i % 3 else "Books", "product_id": f"p{i}", "price": 3}) for i in range(9)]
    items.append(item(20, userId="u1", timestamp=1714564000 + 3 * 3600))  # a later session
    out = run(items, batch_size=1)
    f = out.final()["u1"].fields  # type: ignore[union-attr]
    assert f["top_category"] == "shoes"
    assert set(orjson.loads(f["interests"])) == {"shoes", "books"}
    assert f["session_count"] == "2"
    # scored at 8 session events, and when that session (9 events) closed
    assert [p.uid for p in out.patches] == ["u1", "u1"]
    assert all(isinstance(p, ModelOut) and set(p.fields) >= {"anomaly_score", "suspect"} for p in out.patches)


def test_anonymous_history_merges_into_the_identified_user_either_order(tmp_path: Path) -> None:
    anon = [item(i, anonymousId="a1", event="Product Added", properties={"product_id": "p1", "price": 2}) for i in range(3)]
    ident = item(10, anonymousId="a1", userId="u1", type="identify", event=None, traits={"email": "u1@example.com"})
    later = item(11, anonymousId="a1", event="Product Viewed")
    # identify after the anonymous events: a merge goes out through the buffer
    init_db_dir(tmp_path, 1)
    rc = RecoveryConfig(str(tmp_path))
    items: list = [*anon, ident, later, TestingSource.EOF()]
    out = Out()
    flow = build_flow(SETTINGS, TestingSource(items, batch_size=100), out.sinks())
    run_main(flow, recovery_config=rc, epoch_interval=timedelta(0))
    f = out.final()
    assert isinstance(f["a1"], Retire) and f["a1"].into == "u1"
    assert len(out.merges) == 1 and isinstance(out.merges[0], MergeExport)
    m = out.merges[0]
    assert f["u1"].fields["event_count"] == "2"  # type: ignore[union-attr]
    # the merge comes back from the buffer into u1's shard (the same state, resumed)
    items += [(0, b"1714564800000-99", encode_merge(m)), TestingSource.EOF()]
    run_main(flow, recovery_config=rc, epoch_interval=timedelta(0))
    u1 = out.final()["u1"]
    assert isinstance(u1, ProfileUpdate)
    assert (u1.fields["event_count"], u1.fields["cart_items"], u1.fields["email"]) == ("5", "3", "u1@example.com")
    # a duplicate merge delivery is a no-op
    n = len(out.profiles)
    items.append((0, b"1714564800000-100", encode_merge(m)))
    run_main(flow, recovery_config=rc, epoch_interval=timedelta(0))
    assert out.final()["u1"].seq == u1.seq and len(out.profiles) == n
    # identify first: nothing to merge, anonymous events land on u1 directly
    o3 = run([ident, *anon, later])
    assert o3.merges == [] and "a1" not in o3.final()
    assert o3.final()["u1"].fields["event_count"] == "5"  # type: ignore[union-attr]
    assert o3.final()["u1"].fields["cart_items"] == "3"  # type: ignore[union-attr]


def test_recovery_resumes_without_double_counting(tmp_path: Path) -> None:
    init_db_dir(tmp_path, 1)
    rc = RecoveryConfig(str(tmp_path))
    items = [item(i, userId=f"u{i % 3}", event="Order Completed", properties={"revenue": 1}) for i in range(30)]
    items.insert(17, TestingSource.ABORT())
    out = Out()
    flow = build_flow(SETTINGS, TestingSource(items, batch_size=4), out.sinks())
    run_main(flow, recovery_config=rc, epoch_interval=timedelta(seconds=10))
    partial = out.final()
    assert sum(int(p.fields["purchase_count"]) for p in partial.values()) < 30  # type: ignore[union-attr]
    run_main(flow, recovery_config=rc, epoch_interval=timedelta(seconds=10))
    f = out.final()
    assert {u: p.fields["purchase_count"] for u, p in f.items()} == {"u0": "10", "u1": "10", "u2": "10"}  # type: ignore[union-attr]
    assert {u: p.fields["revenue_total"] for u, p in f.items()} == {"u0": "10.00", "u1": "10.00", "u2": "10.00"}  # type: ignore[union-attr]
