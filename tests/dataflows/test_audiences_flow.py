"""Computed traits and audiences through the real wiring (``build_flow`` with ``bytewax.testing``
sources and sinks, SPEC §6's example definitions file loaded from ``LIVEPROFILE_DEFINITIONS``), on
one worker and on a 2-worker cluster: three shoe views and no order enter
``shoe_browsers_no_order``; a later order takes the user out (the update's ``event_ms`` is the
order's time); a user who stops viewing leaves when the window (7 d + the day bucket) has passed
by stream time that OTHER users' events drive — the run stops without EOF, so only the event-time
timer can have fired; an anonymous visitor's views merge into the known user on identify."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource

from dataflows.build import build_flow
from dataflows.clock import StreamClock
from dataflows.sinks.merge import merge_entry
from liveprofile.settings import ConfigError, Settings
from operators.definitions import DAY_MS, SPEC_EXAMPLE
from operators.identity import anon_uid
from operators.timeutil import iso
from operators.user import MergeExport, ProfileUpdate
from tests.dataflows.test_flow import (
    WORKERS,
    FakeWall,
    Out,
    SteppedDone,
    SteppedSource,
    _caused_by,
    execute,
)

T0 = 1_714_564_800_000  # 2024-05-01T12:00:00Z
AUD = "shoe_browsers_no_order"
#: a view on day 0 (bucket 2024-05-01) leaves the 7-day window at the bucket's end + 7 d
EXIT = (T0 // DAY_MS + 1) * DAY_MS + 7 * DAY_MS


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    path = tmp_path / "definitions.yaml"
    path.write_text(SPEC_EXAMPLE)
    return Settings.from_env({"LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z", "LIVEPROFILE_DEFINITIONS": str(path)},
                             shards=1, timer_recheck_s=0.05)  # fmt: skip


def item(i: int, t: int, **ev: object) -> tuple[int, bytes, bytes]:
    body = {"type": "track", "event": "Product Viewed", "messageId": f"m{i}", "timestamp": iso(t), "receivedAt": iso(t),
            "properties": {"category": "shoes"}, **ev}  # fmt: skip
    return (0, f"{t}-{i}".encode(), orjson.dumps({k: v for k, v in body.items() if v is not None}))


def updates(out: Out, uid: str) -> list[ProfileUpdate]:
    return [p for u, p in out.profiles if u == uid and type(p) is ProfileUpdate]


def audiences(p: ProfileUpdate) -> list[str]:
    return orjson.loads(p.fields["audiences"])


@WORKERS
def test_three_views_enter_and_a_later_order_exits_at_its_event_time(settings: Settings, tmp_path: Path, workers: int) -> None:
    """The order arrives in a later run (resumed from the recovery store), so the views' batch has
    been rendered first whatever the engine batches together."""
    t_order = T0 + DAY_MS
    items: list = [item(1, T0, userId="u1"), item(2, T0 + 60_000, userId="u1"), item(3, T0 + 120_000, userId="u1"),
                   item(4, T0, userId="u2"), item(5, T0 + 1, userId="u2"), item(6, T0 + 2, userId="u2"), TestingSource.EOF()]  # fmt: skip
    (tmp_path / "rec").mkdir()
    init_db_dir(tmp_path / "rec", 1)
    rc = RecoveryConfig(str(tmp_path / "rec"))
    out = Out()
    flow = build_flow(settings, TestingSource(items), out.sinks(), StreamClock(FakeWall()))
    execute(flow, workers, recovery_config=rc, epoch_interval=timedelta(0))
    items += [item(7, t_order, userId="u2", event="Order Completed", properties={"revenue": 30, "order_id": "o1"}), TestingSource.EOF()]
    execute(flow, workers, recovery_config=rc, epoch_interval=timedelta(0))
    f = out.final()
    assert audiences(f["u1"]) == [AUD]  # type: ignore[arg-type]
    assert orjson.loads(f["u1"].fields["computed"]) == {"shoe_views_7d": 3, "orders_7d": 0, "spend_90d": 0}  # type: ignore[union-attr]
    u2 = updates(out, "u2")
    entered = [p for p in u2 if audiences(p) == [AUD]]
    assert entered and entered[0].event_ms == T0 + 2  # entered with the third view (the batch's newest event)
    last = u2[-1]
    assert audiences(last) == [] and last.event_ms == t_order  # the order took them out, at its event time
    assert orjson.loads(last.fields["computed"]) == {"shoe_views_7d": 3, "orders_7d": 1, "spend_90d": 30}


@WORKERS
def test_a_user_who_stops_viewing_leaves_by_stream_time_other_users_drive(settings: Settings, workers: int) -> None:
    """u3 views three times on day 0 and never again; u9's events (not shoes) move the stream clock
    day by day past u3's exit. The wall clock never moves and the run stops without EOF: u3's exit
    can only come from its event-time timer, with event_ms = the bucket exit."""
    wall, out = FakeWall(), Out()
    views = [item(i, T0 + i, userId="u3") for i in range(3)]
    days = [item(10 + d, T0 + d * DAY_MS, userId="u9", properties={"category": "books"}) for d in range(1, 10)]

    def u3_left() -> bool:  # in the audience (after the third view), then out of it
        entered = False
        for p in updates(out, "u3"):
            entered = entered or audiences(p) == [AUD]
            if entered and audiences(p) == []:
                return True
        return False

    steps = [*views, *days, ("advance", 0, u3_left, 30.0)]
    flow = build_flow(settings, SteppedSource(steps, wall), out.sinks(), StreamClock(wall))
    with pytest.raises(RuntimeError) as raised:
        execute(flow, workers)
    assert _caused_by(raised.value, SteppedDone)
    u3 = updates(out, "u3")
    assert audiences(u3[-1]) == [] and u3[-1].event_ms == EXIT, [(p.event_ms, p.fields.get("audiences")) for p in u3]
    assert any(audiences(p) == [AUD] for p in u3[:-1])
    assert orjson.loads(u3[-1].fields["computed"])["shoe_views_7d"] == 0
    assert u3[-1].seq == max(p.seq for p in u3)  # no event of u3's: the timer's update keeps its seq


@WORKERS
def test_an_anonymous_visitors_views_merge_into_the_known_user_on_identify(settings: Settings, tmp_path: Path, workers: int) -> None:
    anon = [item(i, T0 + i, anonymousId="a1") for i in range(2)]
    ident = item(10, T0 + 10, anonymousId="a1", userId="u5", type="identify", event=None, properties=None, traits={"email": "u5@x.co"})
    own = item(11, T0 + 11, userId="u5")
    (tmp_path / "rec").mkdir()
    init_db_dir(tmp_path / "rec", 1)
    rc = RecoveryConfig(str(tmp_path / "rec"))
    items: list = [*anon, ident, own, TestingSource.EOF()]
    out = Out()
    flow = build_flow(settings, TestingSource(items), out.sinks(), StreamClock(FakeWall()))
    execute(flow, workers, recovery_config=rc, epoch_interval=timedelta(0))
    assert audiences(updates(out, anon_uid("a1"))[-1]) == []  # two views: not yet
    assert orjson.loads(updates(out, "u5")[-1].fields["computed"])["shoe_views_7d"] == 1
    (m,) = out.merges
    assert isinstance(m, MergeExport)
    # the merge comes back from the buffer into u5's shard
    items += [(0, b"1714564800099-99", merge_entry(m)), TestingSource.EOF()]
    execute(flow, workers, recovery_config=rc, epoch_interval=timedelta(0))
    u5 = updates(out, "u5")[-1]
    assert orjson.loads(u5.fields["computed"])["shoe_views_7d"] == 3 and audiences(u5) == [AUD]


def test_definitions_with_intelligence_off_are_refused_at_start(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "definitions.yaml"
    with pytest.raises(ConfigError, match="LIVEPROFILE_INTELLIGENCE=off"):
        Settings.from_env({"LIVEPROFILE_DEFINITIONS": str(path), "LIVEPROFILE_INTELLIGENCE": "off"})
    with pytest.raises(ConfigError, match="LIVEPROFILE_INTELLIGENCE=off"):
        build_flow(dataclasses.replace(settings, intelligence=False), TestingSource([]), Out().sinks(), StreamClock(FakeWall()))


def test_an_idle_users_window_exit_costs_one_wake_on_live_traffic_not_one_per_recheck(settings: Settings) -> None:
    """UserLogic.notify_at on live traffic (stream time = the wall): a user whose only deadline is a
    window exit 7.5 days away sleeps until the exit, not LIVEPROFILE_TIMER_RECHECK (0.05 s here),
    then fires; (a deadline behind the wall, while a backlog is caught up, re-checks as before: the
    doctest of dataflows.logic.timer_wait); a user with only all-time traits arms no timer at all."""
    from dataflows.logic import UserLogic
    from operators.definitions import load_definitions
    from operators.events import Event, parse_event

    wall = FakeWall(T0 / 1000)
    clock = StreamClock(wall)
    logic = UserLogic(settings.user, clock, None, recheck_s=0.05)
    evs = [parse_event(orjson.loads(item(i, T0 + i, userId="u3")[2]), settings.limits) for i in range(3)]
    assert all(isinstance(e, Event) for e in evs)
    clock.observe(T0 + 2)
    logic.on_batch([("u3", e) for e in evs])
    wall.at = T0 / 1000 + 3600  # the session has ended; the stream follows the wall
    logic.on_notify()
    at = logic.notify_at()
    assert at is not None and at.timestamp() == pytest.approx(EXIT / 1000, abs=1)  # one wake, at the exit
    wall.at = EXIT / 1000 + 60  # the stream (following the wall) passed the exit: due now, and it fires
    at = logic.notify_at()
    assert at is not None and at.timestamp() == wall.at
    outs, _ = logic.on_notify()
    (u,) = [o for o in outs if type(o) is ProfileUpdate]
    assert u.event_ms == EXIT and audiences(u) == []
    alltime = dataclasses.replace(settings.user, definitions=load_definitions(
        "version: 1\ncomputed_traits:\n  - {name: views, kind: count, event: Product Viewed}\n"))  # fmt: skip
    wall.at = T0 / 1000
    other = UserLogic(alltime, clock, None, recheck_s=0.05)
    other.on_batch([("u3", e) for e in evs])
    wall.at = T0 / 1000 + 3600
    other.on_notify()  # the session closes
    assert other.notify_at() is None


@WORKERS
def test_a_changed_definitions_file_re_renders_idle_users_at_start(settings: Settings, tmp_path: Path, workers: int) -> None:
    """u1 viewed shoes twice: not in the audience (>= 3). The dataflow restarts (resumed from its
    recovery store) under a file whose audience needs 2 views, and u1 sends nothing more: u1
    enters at the restart, not at some next event (Bytewax builds every resumed key at start).
    Restarted again with no definitions at all, u1 leaves (``audiences`` ``[]``). Before, an idle
    user kept the memberships of the old file until their next event."""
    items: list = [item(1, T0, userId="u1"), item(2, T0 + 60_000, userId="u1"), TestingSource.EOF()]
    (tmp_path / "rec").mkdir()
    init_db_dir(tmp_path / "rec", 1)
    rc = RecoveryConfig(str(tmp_path / "rec"))
    out = Out()
    execute(build_flow(settings, TestingSource(items), out.sinks(), StreamClock(FakeWall())), workers,
            recovery_config=rc, epoch_interval=timedelta(0))  # fmt: skip
    assert audiences(updates(out, "u1")[-1]) == []
    changed = tmp_path / "changed.yaml"
    changed.write_text(SPEC_EXAMPLE.replace("computed.shoe_views_7d >= 3", "computed.shoe_views_7d >= 2"))
    s2 = dataclasses.replace(settings, user=dataclasses.replace(settings.user, definitions=Settings.from_env(
        {"LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z", "LIVEPROFILE_DEFINITIONS": str(changed)}).definitions))  # fmt: skip
    items += [TestingSource.EOF()]
    n = len(updates(out, "u1"))
    execute(build_flow(s2, TestingSource(items), out.sinks(), StreamClock(FakeWall())), workers, recovery_config=rc, epoch_interval=timedelta(0))
    u1 = updates(out, "u1")
    assert len(u1) == n + 1 and audiences(u1[-1]) == [AUD], [p.fields.get("audiences") for p in u1]
    assert orjson.loads(u1[-1].fields["computed"])["shoe_views_7d"] == 2 and u1[-1].seq == u1[-2].seq  # no event: same seq
    gone = dataclasses.replace(settings, user=dataclasses.replace(settings.user, definitions=None))
    items += [TestingSource.EOF()]
    execute(build_flow(gone, TestingSource(items), out.sinks(), StreamClock(FakeWall())), workers, recovery_config=rc, epoch_interval=timedelta(0))
    last = updates(out, "u1")[-1]
    assert audiences(last) == [] and last.fields["computed"] == "{}"
