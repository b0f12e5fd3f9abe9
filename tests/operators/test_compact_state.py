"""The packed pickles of snapshot version 9 (issue 15, item 4) change nothing but their size.

A per-user state pickled the packed way (:func:`operators.snapshot.pack`: no field names, fields at
their defaults left out; dedupe times as offsets; the merge log compressed) restores *equal* to
the state it was made from, and the restored copy *behaves* like the original: over the rest of a
stream, every step and timer of the copy gives the same outputs as the original's. The streams
are the generator's (known users and anonymous visitors who buy later, through the identity
stage, merges folded back as the buffer would), with and without computed traits, cut at any
point by a Hypothesis property.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from liveprofile.devtools.generate import GenConfig, generate
from operators import snapshot
from operators.dedupe import DedupeConfig, SeenIds
from operators.definitions import load_definitions
from operators.events import Event, Limits, parse_event
from operators.identity import anonymous_key, route_once
from operators.user import (
    Forward,
    MergeExport,
    MergeIn,
    UserConfig,
    UserState,
    next_deadline,
    on_timer,
    step,
)

DEFS = load_definitions("""\
version: 1
computed_traits:
  - {name: opens, kind: count, event: Email Opened}
  - {name: views_1d, kind: count, event: Product Viewed, window: 1d}
  - {name: spend_7d, kind: sum, event: Order Completed, value: properties.revenue, window: 7d}
  - {name: cats, kind: unique_list, event: Product Viewed, value: properties.category, window: 7d}
  - {name: top_cat, kind: most_frequent, event: Product Viewed, value: properties.category}
audiences:
  - {name: openers, when: computed.opens >= 2}
""")
END = 1_764_000_000_000


def _items(seed: int, users: int, anonymous: bool) -> list[tuple[str, Any]]:
    """The generator's events as the user step receives them (through the identity stage); with
    ``anonymous`` each user's events before their first order are anonymous-only."""
    gen = generate(GenConfig(users=users, seed=seed, end_ms=END, days=4, duplicate_rate=0.05))
    lim = Limits(timestamp_min_ms=0)
    bought: set[str] = set()
    idn: dict[Any, Any] = {}
    cfg = DedupeConfig()
    out: list[tuple[str, Any]] = []
    for raw0 in sorted(gen.events, key=lambda e: e["timestamp"]):
        raw = dict(raw0, receivedAt=raw0["timestamp"])
        u = raw.get("userId")
        if anonymous and u is not None and u not in bought:
            raw["anonymousId"] = "a-" + u
            if raw.get("event") == "Order Completed":
                bought.add(u)
            else:
                del raw["userId"]
        ev = parse_event(raw, lim)
        if not isinstance(ev, Event):
            continue
        k = anonymous_key(ev)
        if k is None:
            out.append((ev.uid, ev))
            continue
        s, routed, _ = route_once(cfg, idn.get(k), ev)
        idn[k] = s
        out.extend(routed)
    return out


def _norm(o: Any) -> Any:
    """An output with its pickled states as the states (equal states may pickle to other bytes:
    which equal strings are one object is not part of a state)."""
    if type(o) is MergeExport:
        return ("export", o.from_uid, o.to_uid, o.merge_id, o.ts, pickle.loads(o.state))
    if type(o) is Forward:
        return ("forward", o.from_uid, o.to_uid, tuple(_norm(i) for i in o.items))
    if type(o) is MergeIn:
        return ("merge", o.merge_id, o.from_uid, o.ts, pickle.loads(o.state))
    return o


def _canon(states: dict[str, Any]) -> dict[str, Any]:
    """The states with their merge logs' pickled checkpoints as the states they hold (the bytes of
    equal states may differ: see :func:`_norm`)."""
    out = {}
    for u, s in states.items():
        log = s.merge_log if type(s) is UserState else None
        if log is None:
            out[u] = s
        else:
            load = lambda b: None if b is None else pickle.loads(b)  # noqa: E731
            out[u] = (replace(s, merge_log=None), log.items, load(log.base), load(log.mid))
    return out


@dataclass
class World:
    """Per-user states and everything their steps and timers wrote."""

    cfg: UserConfig
    states: dict[str, Any] = field(default_factory=dict)
    log: list[Any] = field(default_factory=list)

    def feed(self, items: list[tuple[str, Any]]) -> None:
        queue = list(reversed(items))
        while queue:
            uid, it = queue.pop()
            s, outs, dups = step(self.cfg, self.states.get(uid), uid, [it])
            if s is None:
                self.states.pop(uid, None)
            else:
                self.states[uid] = s
                self.log.append((uid, next_deadline(self.cfg, s)))
            self.log.append((uid, dups, [_norm(o) for o in outs]))
            for o in outs:
                if type(o) is MergeExport:
                    queue.append((o.to_uid, MergeIn(o.merge_id, o.from_uid, o.ts, o.state)))

    def timers(self, clock: int) -> None:
        for uid in sorted(self.states):
            self.log.append((uid, [_norm(o) for o in on_timer(self.cfg, self.states[uid], clock)]))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), anonymous=st.booleans(), computed=st.booleans(), cut=st.floats(0.05, 0.95))
def test_a_packed_state_restores_equal_and_behaves_like_the_original(seed: int, anonymous: bool, computed: bool, cut: float) -> None:
    cfg = UserConfig(definitions=DEFS if computed else None)
    items = _items(seed, 3, anonymous)
    k = int(len(items) * cut)
    orig = World(cfg)
    orig.feed(items[:k])
    copy = World(cfg, {u: snapshot.load(snapshot.dump(s)) for u, s in orig.states.items()})
    assert copy.states == orig.states
    for u, s in orig.states.items():
        if type(s) is UserState and s.merge_log is not None:
            assert copy.states[u].merge_log.items == s.merge_log.items  # the log's events, field for field
    orig.log.clear()
    for w in (orig, copy):
        w.feed(items[k:])
        w.timers(END + 3_600_000)
    assert copy.log == orig.log
    assert _canon(copy.states) == _canon(orig.states)


def test_pack_keeps_a_value_of_another_type_than_its_default() -> None:
    """A field equal to its default but of another type (``0`` for ``0.0``, ``False`` for ``0``)
    is written, so it restores with its own type (a rendered ``"0"`` is not ``"0.0"``)."""
    from operators.interest import Interest

    i = Interest({"shoes": 1}, 0)
    back = pickle.loads(pickle.dumps(i))
    assert back == i and type(back.scores["shoes"]) is int and back.t_ref == 0
    weird = Interest({}, False)  # type: ignore[arg-type]
    import operators

    if "interest" in operators.compiled_modules():  # a native int attribute holds the int a bool equals
        assert type(weird.t_ref) is int and type(pickle.loads(pickle.dumps(weird)).t_ref) is int
    else:
        assert type(pickle.loads(pickle.dumps(weird)).t_ref) is bool


@settings(max_examples=200, deadline=None)
@given(times=st.lists(st.integers(-(2**62), 2**62), max_size=40), ids=st.lists(st.text(max_size=8), max_size=40))
def test_seen_ids_restore_equal_whatever_their_times(times: list[int], ids: list[str]) -> None:
    """Times within 2**32 ms below the newest pack as 32-bit offsets, others as int64: either way
    the ids restore equal and remember the same messageIds."""
    s = SeenIds()
    cfg = DedupeConfig(window_ms=2**63 - 1, max_ids=1000)
    for m, t in zip(ids, times, strict=False):
        s.first_sight(cfg, m, t)
    back = pickle.loads(pickle.dumps(s))
    assert back == s and back.newest == s.newest and all((m in back) == (m in s) for m in ids)


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), st.text(max_size=40)), min_size=1, max_size=12),
       seeds_at=st.lists(st.integers(0, 12), max_size=3))  # fmt: skip
def test_a_merge_log_restores_its_items_field_for_field(ids: list[str], seeds_at: list[int]) -> None:
    """The columns a :class:`~operators.user.MergeLog` pickles (times as differences, products as
    tuples) give back the very rows, and the seeds at their positions."""
    from operators.computed import Seed
    from operators.events import Product
    from operators.user import _EVENT_FIELDS, MergeLog, _row

    rows: list[Any] = []
    for i, m in enumerate(ids):
        raw = {"type": "track", "event": "Order Completed", "messageId": m or "x", "userId": "u1", "timestamp": 1_700_000_000 + i * 7,
               "receivedAt": 1_700_000_000 + i * 9, "properties": {"order_id": f"o{i}", "products": [{"product_id": f"p{i}", "price": 2}]}}  # fmt: skip
        ev = parse_event(raw, Limits(timestamp_min_ms=0))
        assert isinstance(ev, Event)
        rows.append(_row(None, ev, rows[-1] if rows else None))
    assert all(isinstance(p, Product) for r in rows for p in r[_EVENT_FIELDS.index("products")]) and rows[0][_EVENT_FIELDS.index("products")]
    items: list[Any] = list(rows)
    for k in seeds_at:
        items.insert(min(k, len(items)), Seed(f"s{k}", "u1", "r", 1, k, 5, (("t", "d"),), ()))
    log = MergeLog(items, b"base", None)
    back = pickle.loads(pickle.dumps(log))
    assert back.items == items and back.base == b"base" and back.mid is None
    assert [type(x) for x in back.items] == [type(x) for x in items]
