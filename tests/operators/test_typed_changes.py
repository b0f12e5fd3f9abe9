"""A computed value that changes type but not ``==`` (``true`` -> ``1``) is a change: the
expression language compares within a type (``1 == true`` is false), so the audiences must be
evaluated again — by the per-event render's memo and by a window-exit timer alike."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from operators.definitions import DAY_MS, load_definitions
from operators.events import Event, Limits, parse_event
from operators.user import ProfileUpdate, UserConfig, UserState, next_deadline, on_timer, step

T0 = 1_715_000_000_000
DEFS = load_definitions("""\
version: 1
computed_traits:
  - {name: first_flag, kind: first, event: Flagged, value: properties.flag, window: 2d}
  - {name: last_flag, kind: last, event: Flagged, value: properties.flag}
audiences:
  - {name: first_true, when: computed.first_flag == true}
  - {name: last_true, when: computed.last_flag == true}
""")


def _ev(mid: str, ts: int, flag: object) -> Event:
    iso = datetime.fromtimestamp(ts / 1000, UTC).isoformat().replace("+00:00", "Z")
    ev = parse_event({"type": "track", "event": "Flagged", "messageId": mid, "timestamp": iso, "receivedAt": iso,
                      "userId": "u1", "properties": {"flag": flag}}, Limits(timestamp_min_ms=0))  # fmt: skip
    assert isinstance(ev, Event), ev
    return ev


def _auds(outs: list) -> list[list[str]]:
    return [orjson.loads(o.fields["audiences"]) for o in outs if type(o) is ProfileUpdate]


def test_true_then_one_leaves_the_audience_at_the_event_and_at_the_window_exit() -> None:
    cfg = UserConfig(definitions=DEFS)
    st, outs, _ = step(cfg, None, "u1", [_ev("a", T0, True)])
    assert isinstance(st, UserState) and _auds(outs)[-1] == ["first_true", "last_true"]
    # a later event with 1: the last value is now 1 (not true): last_true leaves at this event
    st, outs, _ = step(cfg, st, "u1", [_ev("b", T0 + DAY_MS, 1)])
    assert isinstance(st, UserState) and _auds(outs)[-1] == ["first_true"]
    # the first event's bucket leaves the 2-day window: the first value becomes 1, first_true leaves
    # (first, the session closes: nothing of the audiences changes)
    assert all(a == ["first_true"] for a in _auds(on_timer(cfg, st, T0 + DAY_MS + 3 * 3_600_000)))
    exit_ms = next_deadline(cfg, st)
    assert exit_ms is not None and exit_ms < T0 + 3 * DAY_MS  # the second event is still in the window
    outs = on_timer(cfg, st, exit_ms)
    assert _auds(outs) == [[]], outs
    assert orjson.loads(outs[-1].fields["computed"]) == {"first_flag": 1, "last_flag": 1}
