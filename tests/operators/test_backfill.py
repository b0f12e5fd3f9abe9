"""Backfill seeds against the INDEPENDENT brute force of tests/operators/test_computed.py: a user's
stream is cut at a deployment point into history (received before it) and live; whichever order
the seeds and the live events reach the state in (seeds first, live first, seeds between live
events; the history source holding live events too, as the buffer does), the values equal the
brute force over history + live, and re-running the backfill (the same entries, a later run with a
new horizon and other chunking, another trait selection) changes nothing."""

from __future__ import annotations

import pickle
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.computed import ComputedState, Seed, plan_seeds
from operators.definitions import DAY_MS, HOUR_MS, load_definitions
from operators.events import Event
from tests.operators.test_computed import BASE, DEFS, assert_same, brute, streams

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True)
TRAITS = DEFS.computed_traits


def _received(events: list[Event], steps: list[int]) -> list[Event]:
    """The events with strictly increasing receipt times (spread over several days)."""
    out, r = [], BASE
    for i, e in enumerate(events):
        r += 1 + steps[i % len(steps)]
        out.append(Event(message_id=e.message_id, type=e.type, name=e.name, uid="u", user_id="u", anonymous_id=None,
                         ts=e.ts, received_at=r, properties=e.properties, traits={}, context={}))  # fmt: skip
    return out


def _apply(s: ComputedState, seeds: list[Seed]) -> bool:
    changed = False
    for seed in seeds:
        changed |= s.apply_seed(DEFS, seed) is not None
    return changed


def _now(events: list[Event], gap: int) -> int:
    return max((e.ts for e in events), default=BASE) + gap


steps = st.lists(st.integers(0, 20 * HOUR_MS), min_size=1, max_size=5)


@SETTINGS
@given(streams(), steps, st.data(), st.integers(0, 8 * DAY_MS))
def test_seed_then_live_equals_the_brute_force_over_history_and_live(events: list[Event], step: list[int], data: st.DataObject, gap: int) -> None:
    events = _received(events, step)
    k = data.draw(st.integers(0, len(events)))
    history, live = events[:k], events[k:]
    upto = live[0].received_at - 1 if live else (history[-1].received_at if history else BASE)
    s = ComputedState()
    _apply(s, plan_seeds("u", TRAITS, history, upto, max_events=data.draw(st.integers(1, 5))))
    for e in live:
        s.observe(DEFS, e)
    now = _now(events, gap)
    assert_same(s.values(DEFS, now), brute(events, now))


@SETTINGS
@given(streams(), steps, st.data(), st.integers(0, 8 * DAY_MS))
def test_live_then_seed_from_a_source_holding_live_events_too_equals_the_brute_force(
    events: list[Event], step: list[int], data: st.DataObject, gap: int
) -> None:
    events = _received(events, step)
    k = data.draw(st.integers(0, len(events)))
    j = data.draw(st.integers(k, len(events)))  # live events processed before the backfill reads the buffer
    history, live = events[:k], events[k:]
    s = ComputedState()
    for e in events[k:j]:
        s.observe(DEFS, e)
    upto = events[j - 1].received_at if j else BASE
    seeds = plan_seeds("u", TRAITS, events[:j], upto, max_events=data.draw(st.integers(1, 5)))  # the buffer: history and live
    _apply(s, seeds)
    for e in events[j:]:
        s.observe(DEFS, e)
    now = _now(events, gap)
    assert_same(s.values(DEFS, now), brute(history + live, now))
    # a re-run: the same entries again, then a later run (new horizon, other chunking) and a
    # run for a subset of the traits: nothing changes
    assert not _apply(s, seeds)
    later = plan_seeds("u", TRAITS, events, events[-1].received_at if events else BASE, max_events=7)
    assert not _apply(s, later)
    subset = plan_seeds("u", TRAITS[:5], events, events[-1].received_at if events else BASE)
    _apply(s, subset)
    assert_same(s.values(DEFS, now), brute(events, now))


@SETTINGS
@given(streams(), steps, st.data(), st.integers(0, 8 * DAY_MS))
def test_seed_between_live_events_and_a_pickle_round_trip(events: list[Event], step: list[int], data: st.DataObject, gap: int) -> None:
    events = _received(events, step)
    k = data.draw(st.integers(0, len(events)))
    s = ComputedState()
    seeds = plan_seeds("u", TRAITS, events[:k], events[k - 1].received_at if k else BASE, max_events=2)
    split = data.draw(st.integers(0, len(seeds)))
    live = events[k:]
    m = data.draw(st.integers(0, len(live)))
    if m == 0:
        # the user is untouched when the first seeds arrive: the slot boundary is the run's horizon + 1
        _apply(s, seeds[:split])
    for e in live[:m]:
        s.observe(DEFS, e)
    s = pickle.loads(pickle.dumps(s))
    _apply(s, seeds if m else seeds[split:])
    for e in live[m:]:
        s.observe(DEFS, e)
    now = _now(events, gap)
    assert_same(s.values(DEFS, now), brute(events, now))


def _view(mid: str, ts: int, received: int, cat: str = "shoes") -> Event:
    return Event(message_id=mid, type="track", name="Product Viewed", uid="u", user_id="u", anonymous_id=None, ts=ts,
                 received_at=received, properties={"category": cat}, traits={}, context={})  # fmt: skip


def test_a_messageid_twice_in_the_history_counts_once_and_a_changed_trait_takes_no_old_seed() -> None:
    text = "version: 1\ncomputed_traits:\n  - {name: n, kind: count, event: Product Viewed, window: %s}\n"
    d7, d30 = load_definitions(text % "7d"), load_definitions(text % "30d")
    hist = [_view("a", BASE, BASE), _view("b", BASE + 1, BASE + 1), _view("a", BASE, BASE + 2)]  # "a" re-sent
    seeds = plan_seeds("u", d7.computed_traits, hist, BASE + 10)
    s = ComputedState()
    s.observe(d7, _view("c", BASE + 20, BASE + 20))  # first live event: boundary BASE + 20
    assert s.traits["n"].boundary == BASE + 20
    for seed in seeds:
        s.apply_seed(d7, seed)
    assert s.values(d7, BASE + 20) == {"n": 3}, "a, b from history (a once) and c live"
    for seed in seeds:  # a run for the 7d definition does nothing for the 30d one
        assert s.apply_seed(d30, seed) is None
    assert s.values(d30, BASE + 20) == {"n": 0}


def test_live_skips_what_a_seed_made_slot_holds_as_history() -> None:
    d = load_definitions("version: 1\ncomputed_traits:\n  - {name: n, kind: count, event: Product Viewed}\n")
    s = ComputedState()
    s.apply_seed(d, plan_seeds("u", d.computed_traits, [_view("a", BASE, BASE)], BASE + 100)[0])
    assert s.traits["n"].boundary == BASE + 101
    assert not s.observe(d, _view("late", BASE + 50, BASE + 50)), "received before the horizon: history, not live"
    assert s.observe(d, _view("new", BASE + 200, BASE + 200))
    assert s.values(d, BASE + 200) == {"n": 2}


def test_merge_keeps_the_earlier_boundary_and_the_seeds_of_both() -> None:
    d = load_definitions("version: 1\ncomputed_traits:\n  - {name: n, kind: count, event: Product Viewed}\n")
    anon, user = ComputedState(), ComputedState()
    anon.observe(d, _view("a", BASE + 10, BASE + 10))
    user.observe(d, _view("u", BASE + 20, BASE + 20))
    user.merge(anon, d)
    assert user.traits["n"].boundary == BASE + 10
    seeds = plan_seeds("u", d.computed_traits, [_view("h", BASE, BASE), _view("a", BASE + 10, BASE + 10)], BASE + 30)
    for seed in seeds:
        user.apply_seed(d, seed)
    assert user.values(d, BASE + 30) == {"n": 3}


def test_a_v6_slot_unpickles_with_boundary_zero() -> None:
    from operators import computed

    slot: Any = computed._Trait.__new__(computed._Trait)
    slot.__setstate__((None, {"digest": "d", "agg": 3, "buckets": None}))  # the layout of snapshot version 6
    assert (slot.digest, slot.agg, slot.boundary, slot.seeded) == ("d", 3, 0, None)


def test_a_version_6_user_state_restores_with_boundary_zero_and_takes_no_seed() -> None:
    """``snapshots/v6_user_state.bin``: a user state dumped by the code of e93eb84 (snapshot version
    6: computed traits without boundaries; 3 views of u1 under the definitions below)."""
    from pathlib import Path

    from operators import snapshot

    d = load_definitions("version: 1\ncomputed_traits:\n  - {name: views, kind: count, event: Product Viewed}\n"
                         "  - {name: views_7d, kind: count, event: Product Viewed, window: 7d}\n"
                         "audiences:\n  - {name: viewers, when: computed.views >= 1}\n")  # fmt: skip
    raw = (Path(__file__).parent.parent / "dataflows" / "snapshots" / "v6_user_state.bin").read_bytes()
    assert snapshot.version_of(raw) == 6
    st = snapshot.load(raw)
    c = st.computed
    assert {n: (s.boundary, s.seeded) for n, s in c.traits.items()} == {"views": (0, None), "views_7d": (0, None)}
    now = c.max_ts
    assert c.values(d, now) == {"views": 3, "views_7d": 3}
    old = _view("old", now - HOUR_MS, now - HOUR_MS)
    assert c.apply_seed(d, plan_seeds("u1", d.computed_traits, [old], now)[0]) is None, "everything it counted was live"
    assert c.observe(d, _view("new", now, now + 1))
    assert c.values(d, now) == {"views": 4, "views_7d": 4}
    assert snapshot.version_of(snapshot.dump(st)) == snapshot.VERSION == 10


# ------------------------------------------------------------------ the seed entry (a parser)

_keys = st.sampled_from(["a", "b", "category", "revenue", "x.y", ""])
_json = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3), max_leaves=8)  # fmt: skip
_paths = st.tuples(st.sampled_from(["properties", "context", "traits"]), _keys, st.lists(_keys, max_size=2)).map(lambda t: (t[0], t[1], *t[2]))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.dictionaries(_keys, _json, max_size=4), st.dictionaries(_keys, _json, max_size=3), st.dictionaries(_keys, _json, max_size=3),
       st.frozensets(_paths, max_size=4), st.integers(0, 2**50), st.text(min_size=1, max_size=8))  # fmt: skip
def test_a_seed_entry_reads_every_path_the_traits_read_as_the_event_does(props: dict, ctx: dict, traits: dict,
                                                                         paths: frozenset, ts: int, uid: str) -> None:  # fmt: skip
    """encode_seed -> decode_seed (the flow's parse step): every path in ``paths`` looks up the same
    value on the decoded event as on the original (missing stays missing), and the times, id, type
    and name survive."""
    from liveprofile.store.envelope import EntryKind, decode_seed, encode_seed, kind_of
    from operators.computed import event_env
    from operators.expr import lookup

    ev = Event(message_id="m1", type="track", name="N", uid=uid, user_id=uid, anonymous_id=None, ts=ts, received_at=ts + 1,
               properties=props, traits=traits, context=ctx)  # fmt: skip
    raw = encode_seed(Seed("seed:x", uid, "r", ts // DAY_MS, 0, ts + 1, (("t", "d"),), (ev,)), paths)
    assert kind_of(raw) is EntryKind.COMPUTED_SEED
    back = decode_seed(raw)
    assert back.uid == uid and back.traits == (("t", "d"),)
    got = back.events[0]
    assert (got.ts, got.received_at, got.message_id, got.type, got.name) == (ts, ts + 1, "m1", "track", "N")
    for p in paths:
        assert lookup(event_env(got), p) == lookup(event_env(ev), p), p


def test_a_rerun_after_a_backfilled_anonymous_visitor_merged_counts_nothing_twice() -> None:
    """The first run could not link the anonymous id, so its history was seeded into the anonymous
    profile; the visitor then identifies (the states merge); a re-run resolves the id to the user
    and plans the user's and the visitor's history together, in other parts of the same days."""
    d = load_definitions("version: 1\ncomputed_traits:\n  - {name: n, kind: count, event: Product Viewed}\n")
    user_hist = [_view(f"u{i}", BASE + i, BASE + i) for i in range(3)]
    anon_hist = [_view(f"a{i}", BASE + 10 + i, BASE + 10 + i) for i in range(3)]
    upto = BASE + 100
    user, anon = ComputedState(), ComputedState()
    for seed in plan_seeds("u", d.computed_traits, user_hist, upto, max_events=2):
        user.apply_seed(d, seed)
    for seed in plan_seeds(" anon:a", d.computed_traits, anon_hist, upto, max_events=2):
        anon.apply_seed(d, seed)
    user.merge(anon, d)
    assert user.values(d, upto) == {"n": 6}
    for seed in plan_seeds("u", d.computed_traits, user_hist + anon_hist, upto + 50, max_events=2):  # the re-run
        user.apply_seed(d, seed)
    assert user.values(d, upto) == {"n": 6}
