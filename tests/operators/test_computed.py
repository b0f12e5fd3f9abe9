"""Computed-trait state (operators/computed.py) against an INDEPENDENT brute-force evaluator: every
trait recomputed from the full event list at a given time with the documented bucket rule (an
event at ``ts`` counts at ``now`` iff ``(ts // R + 1) * R + W > now``, ``R`` = 1 h for ``W <= 48h``
else 1 d). Compared at sampled times in the middle of a sorted stream (including window exits
long after the user's last event), after shuffled input, after a merge of two users' states and
a pickle round trip; ``next_change_ms`` is the brute force's earliest future exit."""

from __future__ import annotations

import math
import pickle
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.computed import DISTINCT_CAP, ComputedState
from operators.definitions import DAY_MS, HOUR_MS, Definitions, TraitDef, load_definitions
from operators.events import Event
from operators.money import to_cents

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True)
KINDS = ["count", "sum", "avg", "min", "max", "most_frequent", "first", "last", "unique_list", "unique_count"]
WINDOWS = ["3h", "48h", "7d", "all"]


def _defs() -> Definitions:
    lines = ["version: 1", "computed_traits:"]
    for kind in KINDS:
        for w in WINDOWS:
            value = "" if kind == "count" else ", value: properties.v"
            lines.append(f"  - {{name: {kind}_{w}, kind: {kind}, event: Product Viewed, window: {w}{value}, where: 'properties.cat != \"hats\"'}}")
    lines.append("  - {name: pages, kind: count, event: page, window: 2h}")
    for kind in ("sum", "avg", "min", "max"):  # money: exact cents, numeric strings count
        lines.append(f"  - {{name: money_{kind}, kind: {kind}, event: Order Completed, value: properties.revenue, window: 7d}}")
    lines.append("  - {name: order_cats, kind: unique_list, event: Order Completed, value: properties.cat, window: 30d}")
    return load_definitions("\n".join(lines) + "\n")


DEFS = _defs()
BASE = 1_700_000_000_000 // DAY_MS * DAY_MS


# ------------------------------------------------------------------ the brute force


def _is_number(v: Any) -> bool:
    return type(v) in (int, float) and not math.isnan(v)


def _norm(v: Any) -> Any:
    if type(v) is bool:
        return ("bool", v)
    if type(v) is float and v == int(v):
        return int(v)
    return v


def _denorm(k: Any) -> Any:
    return k[1] if type(k) is tuple else k


def _order(k: Any) -> tuple[int, Any]:
    v = _denorm(k)
    return (0, v) if type(v) is bool else ((1, v) if type(v) in (int, float) else (2, v))


def _counts_for(t: TraitDef, e: Event) -> bool:
    if t.event in ("page", "screen", "identify", "group", "alias"):
        ok = e.type == t.event
    else:
        ok = e.type == "track" and e.name == t.event
    env = {"properties": e.properties, "context": e.context, "traits": e.traits}
    if not ok or (t.where is not None and not t.where.holds(env)):
        return False
    v = e.properties.get(t.value[1]) if t.value else None
    if t.value == ("properties", "revenue"):
        return v is not None
    if t.kind == "count":
        return True
    if t.kind in ("sum", "avg", "min", "max"):
        return _is_number(v)
    if t.kind in ("first", "last"):
        return v is not None
    return type(v) in (str, bool) or _is_number(v)


def _in_window(t: TraitDef, ts: int, now: int) -> bool:
    if t.window_ms is None:
        return True
    r = HOUR_MS if t.window_ms <= 48 * HOUR_MS else DAY_MS
    return (ts // r + 1) * r + t.window_ms > now


def brute(events: list[Event], now: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in DEFS.computed_traits:
        evs = [e for e in events if _counts_for(t, e) and _in_window(t, e.ts, now)]
        vs = [e.properties.get(t.value[1]) for e in evs] if t.value else []
        k = t.kind
        if t.value == ("properties", "revenue"):
            cents = [to_cents(v) for v in vs]
            got = {"sum": sum(cents) / 100, "avg": sum(cents) / 100 / len(cents) if cents else None,
                   "min": min(cents, default=None), "max": max(cents, default=None)}[k]
            out[t.name] = got / 100 if k in ("min", "max") and got is not None else (got if cents or k != "sum" else 0)
            continue
        if k == "count":
            out[t.name] = len(evs)
        elif k == "sum":
            out[t.name] = sum(vs) if vs else 0
        elif k == "avg":
            out[t.name] = sum(vs) / len(vs) if vs else None
        elif k in ("min", "max"):
            out[t.name] = (min(vs) if k == "min" else max(vs)) if vs else None
        elif k in ("first", "last"):
            pick = sorted(evs, key=lambda e: (e.ts, e.message_id))
            out[t.name] = None if not pick else pick[0 if k == "first" else -1].properties[t.value[1]]
        elif k == "most_frequent":
            tally: dict[Any, list[Any]] = {}
            for e, v in zip(evs, vs, strict=True):
                n, last = tally.get(_norm(v), [0, (-1, "")])
                tally[_norm(v)] = [n + 1, max(last, (e.ts, e.message_id))]
            out[t.name] = None if not tally else _denorm(max(tally, key=lambda x: (tally[x][0], tally[x][1], _order(x))))
        else:
            distinct = sorted({_norm(v) for v in vs}, key=_order)[:DISTINCT_CAP]
            out[t.name] = [_denorm(x) for x in distinct] if k == "unique_list" else len(distinct)
    return out


def brute_next_exit(events: list[Event], now: int) -> int | None:
    exits = []
    for t in DEFS.computed_traits:
        if t.window_ms is None:
            continue
        r = HOUR_MS if t.window_ms <= 48 * HOUR_MS else DAY_MS
        exits += [x for e in events if _counts_for(t, e) and (x := (e.ts // r + 1) * r + t.window_ms) > now]
    return min(exits, default=None)


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        g, w = got[name], want[name]
        if isinstance(w, float) or isinstance(g, float):
            # float sums depend on addition order in the last bits (buckets, merges)
            assert g is not None and w is not None and math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-9), (name, g, w)
        else:
            assert g == w and type(g) is type(w), (name, g, w)


# ------------------------------------------------------------------ generated streams

values = st.one_of(st.integers(-3, 9), st.sampled_from([0.5, 2.25, 3.0, -1.5]), st.sampled_from(["a", "b", "c"]),
                   st.booleans(), st.none(), st.just([1]))


@st.composite
def streams(draw: st.DrawFn) -> list[Event]:
    n = draw(st.integers(0, 30))
    out = []
    for i in range(n):
        kind = draw(st.sampled_from(["Product Viewed", "Product Viewed", "Order Completed", "page", "identify"]))
        # mostly within 12 days, in clusters, so windows both hold and lose events
        ts = BASE + draw(st.integers(0, 12 * DAY_MS)) if draw(st.booleans()) else BASE + draw(st.integers(0, 30)) * HOUR_MS
        props: dict[str, Any] = {"cat": draw(st.sampled_from(["shoes", "hats", "bags"]))}
        if kind == "Order Completed" and draw(st.booleans()):  # valid money, as parse_event lets through
            props["revenue"] = draw(st.sampled_from([0, 3, 19.99, "19.99", "0.10", 0.1, "1e2", 120]))
        v = draw(values)
        if v is not None:
            props["v"] = v
        typ = kind if kind in ("page", "identify") else "track"
        # one receipt time: shuffled event times are out of order, the receipt (the live/history boundary) is not
        out.append(Event(message_id=f"m{i:03d}", type=typ, name="" if typ != "track" else kind, uid="u", user_id="u",
                         anonymous_id=None, ts=ts, received_at=BASE, properties=props, traits={}, context={}))
    return out


@settings(max_examples=60, deadline=None, derandomize=True)
@given(streams(), st.lists(st.integers(0, 20 * DAY_MS), min_size=1, max_size=4))
def test_sorted_stream_matches_brute_force_at_sampled_times_including_exits(events: list[Event], gaps: list[int]) -> None:
    events = sorted(events, key=lambda e: e.ts)
    s = ComputedState()
    seen: list[Event] = []
    for i, e in enumerate(events):
        s.observe(DEFS, e)
        seen.append(e)
        if i % 5 == 4 or i == len(events) - 1:
            for gap in [0, *gaps]:  # later times with no further events: windows exit by themselves
                now = e.ts + gap
                assert_same(s.values(DEFS, now), brute(seen, now))
                nxt = s.next_change_ms(DEFS, now)
                assert nxt == brute_next_exit(seen, now)
                if nxt is not None:
                    assert_same(s.values(DEFS, nxt - 1), s.values(DEFS, now))


@SETTINGS
@given(streams(), st.randoms(use_true_random=False), st.integers(0, 10 * DAY_MS))
def test_shuffled_input_gives_the_sorted_result(events: list[Event], rnd: random.Random, gap: int) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    s = ComputedState()
    for e in shuffled:
        s.observe(DEFS, e)
    end = max((e.ts for e in events), default=BASE)
    assert_same(s.values(DEFS, end + gap), brute(events, end + gap))
    assert s.next_change_ms(DEFS, end + gap) == brute_next_exit(events, end + gap)


@SETTINGS
@given(streams(), st.randoms(use_true_random=False), st.integers(0, 10 * DAY_MS))
def test_merging_two_users_states_equals_one_user_with_all_events(events: list[Event], rnd: random.Random, gap: int) -> None:
    a, b = ComputedState(), ComputedState()
    for e in events:
        (a if rnd.random() < 0.5 else b).observe(DEFS, e)
    b_before = pickle.dumps(b)
    a.merge(b, DEFS)
    assert pickle.dumps(b) == b_before, "merge leaves the other state alone"
    end = max((e.ts for e in events), default=BASE)
    a = pickle.loads(pickle.dumps(a))
    assert_same(a.values(DEFS, end + gap), brute(events, end + gap))


def _view(i: int, ts: int, v: Any) -> Event:
    return Event(message_id=f"m{i:04d}", type="track", name="Product Viewed", uid="u", user_id="u", anonymous_id=None,
                 ts=ts, received_at=ts, properties={"cat": "shoes", "v": v}, traits={}, context={})


def test_memory_is_bounded_by_buckets_and_the_distinct_cap() -> None:
    s = ComputedState()
    events = [_view(i, BASE + i * 17 * 60_000, f"v{i % 150:03d}") for i in range(1200)]  # 1200 events over ~14 days
    for e in events:
        s.observe(DEFS, e)
    assert len(s.traits["count_48h"].buckets) <= 49
    assert len(s.traits["count_7d"].buckets) <= 8
    assert len(s.traits["unique_list_all"].agg) == DISTINCT_CAP
    assert len(s.traits["most_frequent_all"].agg) == DISTINCT_CAP
    now = events[-1].ts
    got = s.values(DEFS, now)
    assert got["unique_count_all"] == DISTINCT_CAP and got["unique_list_all"][0] == "v000" and got["unique_list_all"][-1] == "v099"
    assert_same({k: got[k] for k in ("count_7d", "unique_list_7d", "count_all")}, {k: brute(events, now)[k] for k in ("count_7d", "unique_list_7d", "count_all")})


def test_a_changed_trait_starts_empty_and_removed_ones_are_pruned() -> None:
    text = "version: 1\ncomputed_traits:\n  - {name: n, kind: count, event: Product Viewed, window: %s}\n"
    d1, d2 = load_definitions(text % "7d"), load_definitions(text % "30d")
    s = ComputedState()
    s.observe(d1, _view(1, BASE, 1))
    assert s.values(d1, BASE) == {"n": 1}
    assert s.values(d2, BASE) == {"n": 0}, "a changed definition is not fed by the old one's state"
    s.observe(d2, _view(2, BASE + 1, 1))
    assert s.values(d2, BASE + 1) == {"n": 1}
    s.prune(load_definitions("version: 1\n"))
    assert s.traits == {}


def test_spec_example_by_hand() -> None:
    from operators.definitions import SPEC_EXAMPLE

    d = load_definitions(SPEC_EXAMPLE)
    s = ComputedState()
    for i in range(3):
        s.observe(d, Event(message_id=f"v{i}", type="track", name="Product Viewed", uid="u", user_id="u", anonymous_id=None,
                           ts=BASE + i * HOUR_MS, received_at=0, properties={"category": "shoes"}, traits={}, context={}))
    vals = s.values(d, BASE + 3 * HOUR_MS)
    assert vals == {"shoe_views_7d": 3, "orders_7d": 0, "spend_90d": 0}
    assert d.memberships({}, vals) == ("shoe_browsers_no_order",)
    leave = s.next_change_ms(d, BASE + 3 * HOUR_MS)
    assert leave == BASE + DAY_MS + 7 * DAY_MS, "day bucket of the views ends, plus 7 days"
    assert d.memberships({}, s.values(d, leave)) == ()


def test_next_exit_asked_after_the_exits_then_a_new_bucket() -> None:
    """The timers' slow path (no bucket left to drop: an idle user asked again after the exits)
    remembers the sorted exits; an event that adds a bucket without dropping one must be seen."""

    def view(i: int, ts: int) -> Event:
        return Event(message_id=f"m{i}", type="track", name="Product Viewed", uid="u", user_id="u", anonymous_id=None,
                     ts=ts, received_at=BASE, properties={"cat": "shoes", "v": 1}, traits={}, context={})  # fmt: skip

    s = ComputedState()
    seen = [view(0, BASE + 50 * 60_000)]
    s.observe(DEFS, seen[0])
    for now in (BASE + 9 * DAY_MS, BASE + 4 * HOUR_MS + 1):  # after every exit, then after the soonest
        assert s.next_change_ms(DEFS, now) == brute_next_exit(seen, now)
        assert s.last_change_ms(DEFS, BASE, now) == max((x for x in _exits(seen) if BASE < x <= now), default=None)
    # before the soonest exit (4h: the 3h window's first hour), so nothing is dropped, in a new hour
    seen.append(view(1, BASE + HOUR_MS + 10 * 60_000))
    s.observe(DEFS, seen[1])
    for now in (BASE + 4 * HOUR_MS + 1, BASE + 5 * HOUR_MS, BASE + 9 * DAY_MS):
        assert s.next_change_ms(DEFS, now) == brute_next_exit(seen, now)
        assert s.last_change_ms(DEFS, BASE, now) == max((x for x in _exits(seen) if BASE < x <= now), default=None)


def _exits(events: list[Event]) -> list[int]:
    out = []
    for t in DEFS.computed_traits:
        if t.window_ms is not None:
            r = HOUR_MS if t.window_ms <= 48 * HOUR_MS else DAY_MS
            out += [(e.ts // r + 1) * r + t.window_ms for e in events if _counts_for(t, e)]
    return out


def test_slot_pickled_state_is_packs() -> None:
    """``_Trait.__getstate__`` (spelled out for speed) is exactly :func:`operators.snapshot.pack`
    for every combination of defaulted and set fields, so the snapshot bytes are the same."""
    from itertools import product

    from operators.computed import _Trait
    from operators.snapshot import pack

    n = 0
    for agg, buckets, boundary, seeded, fluid in product((None, 0, 3, [1.5, 2]), (None, {}, {5: 1}), (0, 7, -1),
                                                         (None, {}, {("r", 1): {2: 1}}), (False, True)):  # fmt: skip
        slot = _Trait("d", agg, buckets, boundary, seeded, fluid)
        assert slot.__getstate__() == pack(slot), slot
        back = pickle.loads(pickle.dumps(slot, protocol=pickle.HIGHEST_PROTOCOL))
        assert (back.digest, back.agg, back.buckets, back.boundary, back.seeded, back.fluid) == ("d", agg, buckets, boundary, seeded, fluid)
        n += 1
    assert n == 4 * 3 * 3 * 3 * 2
