"""The dataflow wiring with bytewax.testing: routing, dead letters, dedupe, recovery."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from dataflows.profiles import build_flow
from dataflows.redis_sinks import DeadLetter, ProfileOut
from liveprofile.settings import Settings

SETTINGS = Settings.from_env({}, shards=1)
REC = "2024-05-01T12:00:00.000Z"


def item(i: int, **ev: object) -> tuple[int, bytes, bytes]:
    body = {"type": "track", "event": "Product Viewed", "messageId": f"m{i}", "receivedAt": REC, **ev}
    return (0, f"1714564800000-{i}".encode(), orjson.dumps(body))


def run(items: list, batch_size: int = 100, **kw: object) -> tuple[list[tuple[str, ProfileOut]], list[DeadLetter]]:
    profiles: list = []
    dead: list = []
    flow = build_flow(SETTINGS, TestingSource(items, batch_size=batch_size), TestingSink(profiles), TestingSink(dead))
    run_main(flow, **kw)  # type: ignore[arg-type]
    return profiles, dead


def final(profiles: list[tuple[str, ProfileOut]]) -> dict[str, ProfileOut]:
    out: dict[str, ProfileOut] = {}
    for uid, p in profiles:
        if uid not in out or p.version > out[uid].version:
            out[uid] = p
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
    profiles, dead = run(items)
    f = final(profiles)
    assert set(f) == {"u1", "u2"}
    assert f["u1"].fields["event_count"] == "2" and f["u1"].fields["revenue_total"] == "1.25"
    assert f["u2"].fields["revenue_total"] == "5.50"
    assert sorted(d.rejected.reason for d in dead) == ["malformed_json", "missing_event"]
    assert {d.position for d in dead} == {(1714564800000, 4), (1714564800000, 5)}
    # one emission per user per batch: the batch held everything
    assert len(profiles) == 2


def test_small_batches_emit_monotonic_versions() -> None:
    items = [item(i, userId="u1") for i in range(10)]
    profiles, _ = run(items, batch_size=3)
    versions = [p.version for _, p in profiles]
    assert versions == sorted(versions) and versions[-1] == 10


def test_recovery_resumes_without_double_counting(tmp_path: Path) -> None:
    init_db_dir(tmp_path, 1)
    rc = RecoveryConfig(str(tmp_path))
    items = [item(i, userId=f"u{i % 3}", event="Order Completed", properties={"revenue": 1}) for i in range(30)]
    items.insert(17, TestingSource.ABORT())
    profiles: list = []
    dead: list = []
    flow = build_flow(SETTINGS, TestingSource(items, batch_size=4), TestingSink(profiles), TestingSink(dead))
    run_main(flow, recovery_config=rc, epoch_interval=timedelta(seconds=10))
    partial = final(profiles)
    assert sum(int(p.fields["purchase_count"]) for p in partial.values()) < 30
    run_main(flow, recovery_config=rc, epoch_interval=timedelta(seconds=10))
    f = final(profiles)
    assert {u: p.fields["purchase_count"] for u, p in f.items()} == {"u0": "10", "u1": "10", "u2": "10"}
    assert {u: p.fields["revenue_total"] for u, p in f.items()} == {"u0": "10.00", "u1": "10.00", "u2": "10.00"}
