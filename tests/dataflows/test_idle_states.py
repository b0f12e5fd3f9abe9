"""Idle users' states packed (:class:`dataflows.logic.UserLogic`, ``LIVEPROFILE_STATE_IDLE``):
a user idle for the window keeps only compressed snapshot bytes, and every output is the one a
never-packed state gives — the same profile writes, session closes, cart abandonment and computed
window exits, at the same calls — on any schedule of events and wall-clock steps (Hypothesis); a
resumed key starts packed; and through the whole wiring with recovery, a flow that packs every
user at once writes what one that never packs writes."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge

import dataflows.logic
from dataflows.build import build_flow
from dataflows.clock import StreamClock
from dataflows.logic import UserLogic
from liveprofile.settings import Settings
from operators import snapshot
from operators.definitions import load_definitions
from operators.events import Event, Limits, parse_event
from operators.timeutil import iso
from operators.user import ProfileUpdate, UserConfig
from tests.dataflows.test_flow import FakeWall, Out, execute

T0 = 1_714_564_800_000  # FakeWall's default, in ms
DEFS = load_definitions(
    "version: 1\n"
    "computed_traits:\n"
    "  - {name: views_1h, kind: count, event: Product Viewed, window: 1h}\n"
    "  - {name: spend, kind: sum, event: Order Completed, value: properties.revenue, window: all}\n"
    "audiences:\n"
    "  - {name: browsing, when: 'computed.views_1h >= 2'}\n"
)
CFG = UserConfig(abandon_ms=1_800_000)
LIMITS = Limits(timestamp_min_ms=0)
NAMES = ("Product Viewed", "Product Added", "Product Removed", "Order Completed", "Checkout Started")


def event(i: int, name: str, ts: int, uid: str = "u1") -> Event:
    props: dict[str, Any] = {"product_id": f"p{i % 3}", "category": "shoes" if i % 2 else "bags", "price": 10 + i % 4,
                             "quantity": 1, "revenue": 20 + i % 5}  # fmt: skip
    if name == "Order Completed":
        props["order_id"] = f"o{i}"
    ev = parse_event({"type": "track", "event": name, "userId": uid, "messageId": f"m{i}", "timestamp": iso(ts),
                      "receivedAt": iso(ts), "properties": props}, LIMITS)  # fmt: skip
    assert isinstance(ev, Event), ev
    return ev


def drive(cfg: UserConfig, schedule: list[tuple[Any, ...]], idle_s: float | None) -> tuple[list[Any], UserLogic, int]:
    """Run ``schedule`` through one user's logic on a fake wall: ``("events", [(i, name, dt_ms)])``
    is a batch (event time = the wall + ``dt_ms``), ``("wait", s)`` moves the wall on and calls
    ``on_notify`` as Bytewax would (whenever ``notify_at`` has come); the end is ``on_eof``.
    Returns (every output, the logic, how many times it was packed)."""
    wall = FakeWall()
    clock = StreamClock(wall)
    logic = UserLogic(cfg, clock, None, recheck_s=30.0, idle_s=idle_s)
    outs: list[Any] = []
    packs = 0

    def notifies() -> None:
        nonlocal packs
        for _ in range(100):
            at = logic.notify_at()
            if at is None or at.timestamp() > wall.at:
                return
            was_packed = logic.state is None
            o, keep = logic.on_notify()
            assert keep == UserLogic.RETAIN
            outs.extend(o)
            packs += logic.state is None and not was_packed
        raise AssertionError("notify_at keeps asking at the same wall time")

    for step in schedule:
        if step[0] == "wait":
            wall.at += step[1]
            notifies()
        else:
            evs = [event(i, name, int(wall.at * 1000) + dt) for i, name, dt in step[1]]
            for e in evs:
                clock.observe(e.ts)
            o, keep = logic.on_batch([("u1", e) for e in evs])
            assert keep == UserLogic.RETAIN
            outs.extend(o)
            notifies()
    o, _ = logic.on_eof()
    outs.extend(o)
    return outs, logic, packs


@pytest.fixture
def gauge(monkeypatch: pytest.MonkeyPatch) -> Gauge:
    """``liveprofile_user_states`` in a registry of this test's own, patched into
    :mod:`dataflows.logic` (the process-wide one also counts other tests' logic objects, and
    worker threads a stopped test run may leave behind)."""
    g = Gauge("liveprofile_user_states", "test copy", ["form"], registry=CollectorRegistry())
    monkeypatch.setattr(dataflows.logic, "_RESIDENT", g.labels("resident"))
    monkeypatch.setattr(dataflows.logic, "_PACKED", g.labels("packed"))
    return g


def state_of(logic: UserLogic) -> Any:
    """The user's state as its snapshot restores it (compared by value: the bytes of two equal
    states can differ in how pickle shares equal strings)."""
    return snapshot.load(logic.snapshot())


batches = st.lists(st.tuples(st.integers(0, 40), st.sampled_from(NAMES), st.integers(-600_000, 0)), min_size=1, max_size=4)
waits = st.sampled_from([1, 20, 59, 61, 300, 1700, 1900, 3700, 7300])
schedules = st.lists(st.one_of(st.tuples(st.just("events"), batches), st.tuples(st.just("wait"), waits)), min_size=1, max_size=14)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules, st.sampled_from([0.0, 60.0, 1800.0]), st.booleans())
def test_packing_idle_users_changes_no_output(schedule: list[tuple[Any, ...]], idle_s: float, with_defs: bool) -> None:
    """Packed or not, the same outputs at the same calls and the same state at the end (session
    closes, cart abandonment at 30 min, a 1-hour window's exits and the audience it drives)."""
    cfg = dataclasses.replace(CFG, definitions=DEFS) if with_defs else CFG
    plain, a, _ = drive(cfg, schedule, None)
    packed, b, _ = drive(cfg, schedule, idle_s)
    assert packed == plain
    assert state_of(b) == state_of(a)


def test_an_idle_user_is_packed_and_unpacked_by_the_next_event(gauge: Gauge) -> None:
    """Idle for the window: only compressed bytes are kept (smaller than the state's snapshot),
    ``snapshot()`` hands them out as they are, the gauge counts the user as packed; a pending
    cart-abandonment deadline still fires (unpacking for it, then packing again); the next event
    unpacks and the profile counts every event."""
    resident, packed = gauge.labels("resident"), gauge.labels("packed")
    r0, p0 = resident._value.get(), packed._value.get()
    schedule: list[tuple[Any, ...]] = [("events", [(1, "Product Viewed", 0), (2, "Product Added", 0)]), ("wait", 61)]
    outs, logic, packs = drive(CFG, schedule[:1], 60.0)
    assert logic.state is not None and resident._value.get() == r0 + 1
    full = snapshot.dump(logic.state)
    outs, logic, packs = drive(CFG, schedule, 60.0)
    assert packs == 1 and logic.state is None
    raw = logic.snapshot()
    assert snapshot.is_compressed(raw) and len(raw) < len(full) and raw is logic.snapshot()
    assert snapshot.load(raw) == snapshot.load(full)  # by value: pickle may share equal strings differently
    assert packed._value.get() == p0 + 1 and resident._value.get() == r0 + 1  # the first drive's user stays resident
    # the cart (added at T0) is abandoned at T0 + 30 min, while the user is packed
    outs, logic, packs = drive(CFG, [*schedule, ("wait", 1800)], 60.0)
    assert [o.event["name"] for o in outs if type(o) is ProfileUpdate and o.event is not None] == ["Cart Abandoned"]
    assert logic.state is None and packs == 1  # unpacked for the deadline and packed again in that one call
    outs, logic, _ = drive(CFG, [*schedule, ("wait", 1800), ("events", [(3, "Product Viewed", 0)])], 60.0)
    assert logic.state is not None
    (last,) = [o for o in outs if type(o) is ProfileUpdate][-1:]
    assert last.fields["event_count"] == "3"


def test_off_never_packs_and_zero_packs_at_the_first_idle_check() -> None:
    schedule: list[tuple[Any, ...]] = [("events", [(1, "Product Viewed", 0)]), ("wait", 3700)]
    _, logic, packs = drive(CFG, schedule, None)
    assert packs == 0 and logic.state is not None
    _, logic, packs = drive(CFG, schedule[:1], 0.0)
    assert packs == 1 and logic.state is None


def test_a_resumed_key_starts_packed_unless_it_needs_a_re_render() -> None:
    wall = FakeWall()
    clock = StreamClock(wall)
    _, live, _ = drive(CFG, [("events", [(1, "Product Viewed", 0)])], None)
    raw = live.snapshot()
    resumed = UserLogic(CFG, clock, raw, idle_s=3600.0)
    assert resumed.state is None and snapshot.load(resumed.snapshot()) == snapshot.load(raw)
    assert UserLogic(CFG, clock, raw).state is not None  # packing off
    # the state was rendered with no definitions: under some it is re-rendered at start, so it stays resident
    assert UserLogic(dataclasses.replace(CFG, definitions=DEFS), clock, raw, idle_s=3600.0).state is not None


@pytest.mark.parametrize("workers", [1, 2])
def test_the_flow_packing_every_user_at_once_writes_what_it_writes_without(tmp_path: Path, workers: int, gauge: Gauge) -> None:
    """The whole wiring, recovery on, two runs (the second resumes: its keys start packed): with
    ``LIVEPROFILE_STATE_IDLE=0s`` (every idle check packs) the profile writes, dead letters and
    model patches are those of a flow with packing off."""

    def body(i: int, uid: str, name: str, t: int) -> tuple[int, bytes, bytes]:
        b = {"type": "track", "event": name, "userId": uid, "messageId": f"m{i}", "timestamp": iso(t), "receivedAt": iso(t),
             "properties": {"product_id": f"p{i % 4}", "category": "shoes", "price": 12, "revenue": 30, "order_id": f"o{i}"}}  # fmt: skip
        return (0, f"{t}-{i}".encode(), orjson.dumps(b))

    names = ("Product Viewed", "Product Added", "Order Completed")
    first = [body(i, f"u{i % 5}", names[i % 3], T0 + i * 1000) for i in range(40)]
    second = [body(i, f"u{i % 7}", names[i % 3], T0 + i * 1000) for i in range(40, 80)]

    packed_gauge = gauge.labels("packed")

    def run(idle: str) -> tuple[Out, float]:
        rec = tmp_path / idle
        rec.mkdir()
        init_db_dir(rec, 1)
        rc = RecoveryConfig(str(rec))
        s = Settings.from_env({"LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z", "LIVEPROFILE_STATE_IDLE": idle}, shards=1)
        out = Out()
        p0 = packed_gauge._value.get()
        for items in (first, first + second):  # TestingSource resumes at the index it reached
            wall = FakeWall(T0 / 1000 + 90)
            flow = build_flow(s, TestingSource([*items, TestingSource.EOF()], batch_size=7), out.sinks(), StreamClock(wall))
            execute(flow, workers, recovery_config=rc, epoch_interval=timedelta(0))
        return out, packed_gauge._value.get() - p0

    (plain, none), (packed, some) = run("off"), run("0s")
    assert none == 0 and some >= 7  # every user packed at least once (the 7 of the second run's end, at least)
    assert {u: p.fields for u, p in packed.final().items()} == {u: p.fields for u, p in plain.final().items()}  # type: ignore[union-attr]
    assert sorted(map(repr, packed.patches)) == sorted(map(repr, plain.patches))
    assert packed.dead == plain.dead
    assert int(plain.final()["u6"].fields["event_count"]) > 0  # type: ignore[union-attr]
