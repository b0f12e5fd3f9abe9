"""Per-user computed-trait state (SPEC §6): bounded memory, event-time windows, mergeable.

Contract
--------
``ComputedState.observe(defs, ev)`` folds one :class:`~operators.events.Event` into every trait
it matches (``TraitDef.matches``: event type/name and ``where`` over ``{properties, context,
traits}``) and returns whether it counted for any (a late event for a bucket already out of the
window, or a value of the wrong type, does not). ``values(defs, now_ms)`` gives every
trait's value at stream time ``now_ms``; ``next_change_ms(defs, now_ms)`` the earliest time after
``now_ms`` at which a windowed value may change with no new event (``None``: none will) — the
wiring arms an event-time timer for it. ``merge(other)`` folds another user's state in (identity
merge). No clock reads: time is always passed in.

Values (SPEC §6): ``count``/``sum`` are 0 when empty; ``avg``/``min``/``max``/``first``/``last``/
``most_frequent`` are ``None`` when empty; ``unique_list`` is sorted (numbers before strings,
booleans first), ``unique_count`` its length. An event counts for ``count`` whenever it matches;
for the other kinds only when its ``value`` field is present: ``sum``/``avg``/``min``/``max``
take numbers only (``true`` is not a number; a string ``"12"`` is skipped) — except a money
property (:func:`is_money`: ``properties.revenue``, ``total``, ``price``, ...), which is read as
the collector validated it (numbers and numeric strings, :func:`operators.money.to_cents`), summed
exactly in integer cents and reported in currency units (``19.99``; whole amounts as integers);
``most_frequent``
and ``unique_*`` take scalars (string, number, boolean), ``first``/``last`` any non-null value.
``first``/``last`` order by event time, ties by ``messageId``; ``most_frequent`` ties go to the
value seen most recently (event time, then ``messageId``, then the value's sort order).

Windows and their resolution. A window ``W`` is bucketed by hour when ``W <= 48h`` and by day
above: an event at ``ts`` falls in bucket ``b = ts // R`` (``R`` = 1 h or 1 d, UTC) and **counts
at time ``now`` iff ``(b + 1) * R + W > now``** — it leaves the window at the end of its bucket
plus ``W``. So a value is exact at bucket resolution: an event is kept up to ``R`` longer than
``W`` exactly, never shorter. Memory per windowed trait is at most ``W / R + 1`` buckets
(7d: 8 day buckets; 48h: 49 hour buckets; 400d: 401 day buckets).

Values are exact for ``now_ms`` at or after the latest event time the state has seen (the stream
clock's guarantee): buckets are dropped as soon as the latest event time passes their exit, and
an event arriving late for a bucket that has already left the window is ignored (it would
count at no such ``now``). Hence out-of-order input gives the same values as sorted input.

Distinct values: ``most_frequent`` and ``unique_*`` keep at most :data:`DISTINCT_CAP` (100)
distinct values per bucket (all-time: in total). ``unique_*`` keep the 100 *smallest* in sort
order — still independent of arrival order, and ``unique_count`` then saturates at 100.
``most_frequent`` over the cap keeps the 100 most frequent seen so far and forgets the rest's
counts (approximate, and only then order-dependent).

Definitions change: a trait's state carries the trait's ``digest``; a changed or new trait
starts empty from its first event after deployment, and states of removed traits are dropped
by :meth:`ComputedState.prune`.

Boundary and backfill (``liveprofile definitions backfill``, docs/audiences.md "Changing
definitions and backfill"). Every slot has a receipt-time **boundary** ``B`` (ms): events
*received* before ``B`` are history, counted only through a :class:`Seed`; events received at or
after ``B`` are live, counted by :meth:`ComputedState.observe` — the two never overlap, so a
backfill never counts an event twice whatever order seed and live events arrive in. A slot made
live (:meth:`ComputedState.touch`, run for every defined trait on each event, whether it matches
or not) gets ``B`` = that event's ``received_at``; a slot made by a seed (the user had no event
since the trait appeared) gets ``B`` = the seed's ``upto_ms + 1``. A slot of a user the flow
first sees under the trait is **fluid**: nothing of theirs was processed before, so a live event
received before ``B`` is live too and lowers ``B`` to its receipt — until a seed is applied. Slots from before boundaries
existed (snapshot version 6) have ``B = 0``: everything counts live, a seed adds nothing.
:meth:`ComputedState.apply_seed` folds a seed's events received before ``B`` into each slot it
names whose digest matches. A slot records the seeds it took per receipt day: the first
invocation (``Seed.run`` and its horizon ``upto_ms``) to reach a day claims it, each of its parts of
the day is applied once, and every other invocation's chunks for that day are ignored — so
re-running a backfill (same or different trait selection, the buffer trimmed or grown in between,
more history resolved to the user since, e.g. an anonymous visitor backfilled on their own who then
identified: the merge carries their claims along) never counts an event twice; days no run claimed
yet are taken from any run. The price: a day is filled by one invocation only (one interrupted
half-way keeps the parts it wrote). Memory: one small entry per receipt day of the user's history.

>>> from operators.definitions import load_definitions, SPEC_EXAMPLE, DAY_MS
>>> d = load_definitions(SPEC_EXAMPLE)
>>> s = ComputedState()
>>> s.observe(d, _ev("Order Completed", 5 * DAY_MS, revenue="19.99"))
True
>>> s.values(d, 5 * DAY_MS)
{'shoe_views_7d': 0, 'orders_7d': 1, 'spend_90d': 19.99}
>>> s.next_change_ms(d, 5 * DAY_MS) == 13 * DAY_MS   # bucket day 5 ends at day 6, + 7d
True
>>> s.values(d, 13 * DAY_MS)["orders_7d"]
0
"""

from __future__ import annotations

import hashlib
import math
import types
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from mypy_extensions import mypyc_attr

from operators.definitions import DAY_MS, EVENT_TYPE_NAMES, HOUR_MS, Definitions, TraitDef
from operators.events import MONEY_FIELDS, Event
from operators.money import MoneyError, to_cents
from operators.snapshot import restore

__all__ = ["ComputedState", "same_value", "DISTINCT_CAP", "Seed", "resolution_ms", "sort_key", "event_env", "is_money",
           "trait_paths", "compact_event", "event_of_compact", "plan_seeds", "seed_run", "SEED_EVENTS"]  # fmt: skip

DISTINCT_CAP = 100


def resolution_ms(window_ms: int) -> int:
    """The bucket width of a window: 1 h up to 48 h, 1 d above."""
    return HOUR_MS if window_ms <= 48 * HOUR_MS else DAY_MS


def sort_key(v: Any) -> tuple[int, Any]:
    """The order of ``unique_list``: booleans, then numbers, then strings."""
    if isinstance(v, bool):
        return (0, v)
    if isinstance(v, int | float):
        return (1, v)
    return (2, v)


def event_env(ev: Event) -> dict[str, Any]:
    """What a ``where``/``value`` path reads on an event."""
    return {"properties": ev.properties, "context": ev.context, "traits": ev.traits}


_NUMERIC = frozenset({"sum", "avg", "min", "max"})


def is_money(t: TraitDef) -> bool:
    """A ``sum``/``avg``/``min``/``max`` of a money property (``properties.revenue``, ``total``,
    ``price``, ... :data:`operators.events.MONEY_FIELDS`): aggregated exactly in integer cents."""
    v = t.value
    return t.kind in _NUMERIC and v is not None and len(v) == 2 and v[0] == "properties" and v[1] in MONEY_FIELDS


def _units(cents: int) -> int | float:
    return cents // 100 if cents % 100 == 0 else cents / 100


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v  # NaN is no number


def _is_scalar(v: Any) -> bool:
    return isinstance(v, str | bool) or _is_num(v)


# An aggregate per kind (None = empty):
#   count: int · sum: number · avg: [sum, n] · min/max: number
#   first/last: (ts, message_id, value) · most_frequent: {value: [n, ts, message_id]}
#   unique_*: set of values


def _add_count(agg: Any, v: Any, ts: int, mid: str) -> Any:
    return (agg or 0) + 1


def _add_sum(agg: Any, v: Any, ts: int, mid: str) -> Any:
    return v if agg is None else agg + v


def _add_avg(agg: Any, v: Any, ts: int, mid: str) -> Any:
    return [v, 1] if agg is None else [agg[0] + v, agg[1] + 1]


def _add_min(agg: Any, v: Any, ts: int, mid: str) -> Any:
    return v if agg is None else min(agg, v)


def _add_max(agg: Any, v: Any, ts: int, mid: str) -> Any:
    return v if agg is None else max(agg, v)


def _add_first(agg: Any, v: Any, ts: int, mid: str) -> Any:
    if agg is None:
        return (ts, mid, v)
    return (ts, mid, v) if (ts, mid) < (agg[0], agg[1]) else agg


def _add_last(agg: Any, v: Any, ts: int, mid: str) -> Any:
    if agg is None:
        return (ts, mid, v)
    return (ts, mid, v) if (ts, mid) > (agg[0], agg[1]) else agg


def _add_most_frequent(agg: Any, v: Any, ts: int, mid: str) -> Any:
    key = _key(v)
    agg = {} if agg is None else agg
    cur = agg.get(key)
    if cur is None:
        agg[key] = [1, ts, mid]
        _cap_counts(agg)
    else:
        cur[0] += 1
        if (ts, mid) > (cur[1], cur[2]):
            cur[1], cur[2] = ts, mid
    return agg


def _add_unique(agg: Any, v: Any, ts: int, mid: str) -> Any:
    agg = set() if agg is None else agg
    agg.add(_key(v))
    _cap_set(agg)
    return agg


#: per kind: the fold of one accepted value into an aggregate (``None`` = empty), and which values
#: a matching event must carry to count (``None``: any, the value is not read)
_ADD = {"count": _add_count, "sum": _add_sum, "avg": _add_avg, "min": _add_min, "max": _add_max, "first": _add_first,
        "last": _add_last, "most_frequent": _add_most_frequent, "unique_list": _add_unique, "unique_count": _add_unique}  # fmt: skip


def _not_none(v: Any) -> bool:
    return v is not None


_ACCEPT = {"count": None, "sum": _is_num, "avg": _is_num, "min": _is_num, "max": _is_num, "first": _not_none, "last": _not_none,
           "most_frequent": _is_scalar, "unique_list": _is_scalar, "unique_count": _is_scalar}  # fmt: skip


#: ``fold(state, ev, history)``: fold one event into the slots of some traits it is of the type/name of
Folder = Callable[["ComputedState", Event, bool], bool]


def _groups(traits: tuple[TraitDef, ...] | list[TraitDef]) -> list[list[TraitDef]]:
    """``traits`` grouped by their ``where`` and the value they read (``count`` reads none): a
    group shares one check and one read per event (file order within and across groups)."""
    groups: dict[tuple[str | None, tuple[str, ...] | None], list[TraitDef]] = {}
    for t in traits:
        groups.setdefault((None if t.where is None else str(t.where), t.value if t.kind != "count" else None), []).append(t)
    return list(groups.values())


def _fuse_compiled(traits: tuple[TraitDef, ...] | list[TraitDef]) -> Folder:
    """:class:`_NativeFold` as straight-line Python, generated once per event key: the same checks
    in the same order (tests/operators/test_fold_compiled.py: equal states), with each trait's slot name,
    bucket width and window bound as constants and ``count``'s fold inlined — no per-row tuple
    unpacking or kind dispatch on the hot path. The generated source holds only our own
    identifiers and integers; names, functions and sentinels are bound through the namespace."""
    ns: dict[str, Any] = {"_MISSING": _MISSING, "to_cents": to_cents, "MoneyError": MoneyError}
    lines = ["def fold(st, ev, history=False):", "    slots = st.traits", "    rec = ev.received_at", "    ts = ev.ts",
             "    mid = ev.message_id", "    max_ts = st.max_ts", "    env = None", "    changed = []"]  # fmt: skip
    k = 0
    for g, members in enumerate(_groups(traits)):
        t0 = members[0]
        where = t0.where_fn
        get = t0.value_fn if t0.kind != "count" else None
        ns[f"W{g}"], ns[f"G{g}"] = where, get
        lines += ["    state = 0", "    v = None", "    cents = _MISSING"]
        for t in members:
            ns[f"N{k}"], ns[f"A{k}"], ns[f"ADD{k}"] = t.name, _ACCEPT[t.kind], _ADD[t.kind]
            i = "    "
            lines += [f"{i}s = slots[N{k}]", f"{i}if history:", f"{i}    live = rec < s.boundary", f"{i}else:",
                      f"{i}    if rec < s.boundary and s.fluid:", f"{i}        s.boundary = rec", f"{i}    live = rec >= s.boundary",
                      f"{i}if live and state == 0:", f"{i}    if env is None:",
                      f'{i}        env = {{"properties": ev.properties, "context": ev.context, "traits": ev.traits}}']  # fmt: skip
            lines.append(f"{i}    state = 1" if where is None else f"{i}    state = 1 if W{g}(env) else 2")
            if get is not None:
                lines.append(f"{i}    if state == 1:")
                lines.append(f"{i}        v = G{g}(env)")
            lines.append(f"{i}if live and state == 1:")
            i += "    "
            x = "v"
            if is_money(t):
                lines += [f"{i}if cents is _MISSING:", f"{i}    cents = None", f"{i}    if v is not None:", f"{i}        try:",
                          f"{i}            cents = to_cents(v)", f"{i}        except MoneyError:", f"{i}            cents = None"]  # fmt: skip
                x = "cents"
            if _ACCEPT[t.kind] is not None:
                lines.append(f"{i}if A{k}({x}):")
                i += "    "
            count = t.kind == "count"
            agg = [f"{i}s.agg = (s.agg or 0) + 1" if count else f"{i}s.agg = ADD{k}(s.agg, {x}, ts, mid)", f"{i}changed.append(N{k})"]
            if t.window_ms is None:
                lines += agg
            else:
                r = resolution_ms(t.window_ms)
                w = t.window_ms
                lines += [f"{i}buckets = s.buckets", f"{i}if buckets is None:", *("    " + a for a in agg), f"{i}else:",
                          f"{i}    b = ts // {r}", f"{i}    exit_ms = b * {r} + {r + w}", f"{i}    if exit_ms > max_ts:",
                          f"{i}        buckets[b] = (buckets.get(b) or 0) + 1" if count else f"{i}        buckets[b] = ADD{k}(buckets.get(b), {x}, ts, mid)",
                          f"{i}        exp = st.expire_at", f"{i}        if exp is not None and exit_ms < exp:", f"{i}            st.expire_at = exit_ms",
                          f"{i}        changed.append(N{k})"]  # fmt: skip
            k += 1
    lines += ["    if not changed:", "        return False", "    st._changed_all(changed)", "    return True"]
    exec(compile("\n".join(lines) + "\n", "<computed fold>", "exec"), ns)  # our identifiers and integers only
    return ns["fold"]  # type: ignore[no-any-return]


#: kind codes of :class:`_Row` (the native fold dispatches on them with direct calls)
_KINDS = {"count": 0, "sum": 1, "avg": 2, "min": 3, "max": 4, "first": 5, "last": 6, "most_frequent": 7, "unique_list": 8, "unique_count": 8}


class _Row:
    """One trait of a :class:`_NativeFold` group: its slot's name, kind code (:data:`_KINDS`),
    whether its value is money (in cents), and its window and bucket width (0: all time)."""

    __slots__ = ("name", "kind", "money", "w", "r")

    def __init__(self, t: TraitDef) -> None:
        self.name: str = t.name
        self.kind: int = _KINDS[t.kind]
        self.money: bool = is_money(t)
        self.w: int = t.window_ms or 0
        self.r: int = resolution_ms(t.window_ms) if t.window_ms is not None else 0


class _Group:
    """Traits sharing one ``where`` check and one value read (:func:`_groups`)."""

    __slots__ = ("where", "get", "rows")

    def __init__(self, where: Callable[[Mapping[str, Any]], bool] | None, get: Callable[[Mapping[str, Any]], Any] | None,
                 rows: list[_Row]) -> None:  # fmt: skip
        self.where = where
        self.get = get
        self.rows = rows


def _accepts(kind: int, x: Any) -> bool:
    """:data:`_ACCEPT` by kind code."""
    if kind == 0:
        return True
    if kind <= 4:
        return _is_num(x)
    if kind <= 6:
        return x is not None
    return _is_scalar(x)


def _add(kind: int, agg: Any, x: Any, ts: int, mid: str) -> Any:
    """:data:`_ADD` by kind code (direct calls: compiled, no lookup)."""
    if kind == 0:
        return (agg or 0) + 1
    if kind == 1:
        return _add_sum(agg, x, ts, mid)
    if kind == 2:
        return _add_avg(agg, x, ts, mid)
    if kind == 3:
        return _add_min(agg, x, ts, mid)
    if kind == 4:
        return _add_max(agg, x, ts, mid)
    if kind == 5:
        return _add_first(agg, x, ts, mid)
    if kind == 6:
        return _add_last(agg, x, ts, mid)
    if kind == 7:
        return _add_most_frequent(agg, x, ts, mid)
    return _add_unique(agg, x, ts, mid)


class _NativeFold:
    """The fold of one event into the slots of ``traits`` (all over its type/name), built once.

    ``fold(st, ev, history)`` folds ``ev`` (already counted into ``st.max_ts``) into each trait's
    slot (made by :meth:`ComputedState.touch` or a seed) it counts for, and is ``True`` iff it
    counted for one. Live (``history`` false): only slots whose boundary is at or before its
    receipt (a fluid slot's boundary first comes down to an earlier receipt); history (a seed's
    event): only slots whose boundary is after it. For each trait: its ``where`` (compiled), the
    value read (a money value in cents, :func:`is_money`), whether the kind takes it
    (:data:`_ACCEPT`), then the aggregate or the event's bucket (:data:`_ADD`; a bucket already out
    of the window takes nothing). Traits with the same ``where`` and ``value`` share one check and
    one read; the folds of different traits are independent, so their order is not observable.

    A loop over a plan of :class:`_Group` / :class:`_Row` (typed attributes, kind codes, direct
    calls): what the flow runs when the operators are compiled (generated Python,
    :func:`_fuse_compiled`, runs interpreted even then; a compiled closure over the same loop
    measured 8.7 against this class's 3.5 us/event). tests/operators/test_fold_compiled.py checks
    the two against each other."""

    __slots__ = ("groups",)

    def __init__(self, traits: tuple[TraitDef, ...] | list[TraitDef]) -> None:
        self.groups: list[_Group] = [_Group(m[0].where_fn, m[0].value_fn if m[0].kind != "count" else None, [_Row(t) for t in m])
                                     for m in _groups(traits)]  # fmt: skip

    def __call__(self, st: ComputedState, ev: Event, history: bool = False) -> bool:
        slots = st.traits
        rec = ev.received_at
        ts = ev.ts
        mid = ev.message_id
        max_ts = st.max_ts
        env: dict[str, Any] | None = None
        changed: list[str] = []
        for g in self.groups:
            where = g.where
            get = g.get
            state = 0  # 0: not checked yet, 1: counts, 2: does not (``where`` false)
            v: Any = None
            cents: Any = _MISSING
            for row in g.rows:
                s = slots[row.name]
                if history:
                    if rec >= s.boundary:
                        continue
                else:
                    if rec < s.boundary and s.fluid:
                        s.boundary = rec  # a new user's earlier-received event: live, like all of theirs
                    if rec < s.boundary:
                        continue
                if state == 0:
                    if env is None:
                        env = {"properties": ev.properties, "context": ev.context, "traits": ev.traits}  # event_env
                    state = 1 if where is None or where(env) else 2
                    if get is not None and state == 1:
                        v = get(env)
                if state == 2:
                    continue  # (not break: the others' fluid boundaries still come down)
                x = v
                kind = row.kind
                if row.money:
                    if cents is _MISSING:
                        cents = None
                        if v is not None:
                            try:
                                cents = to_cents(v)
                            except MoneyError:
                                cents = None
                    x = cents
                if kind != 0 and not _accepts(kind, x):
                    continue
                buckets = s.buckets
                if buckets is None:
                    s.agg = _add(kind, s.agg, x, ts, mid)
                else:
                    r = row.r
                    b = ts // r
                    exit_ms = (b + 1) * r + row.w
                    if exit_ms <= max_ts:
                        continue  # late for a bucket that has left the window
                    if kind == 0:
                        buckets[b] = (buckets.get(b) or 0) + 1
                    else:
                        buckets[b] = _add(kind, buckets.get(b), x, ts, mid)
                    exp = st.expire_at
                    if exp is not None and exit_ms < exp:
                        st.expire_at = exit_ms
                changed.append(row.name)
        if not changed:
            return False
        st._changed_all(changed)
        return True


def _on_event(t: TraitDef, ev_type: str, ev_name: str) -> bool:
    """Is an event of this type and name one the trait is over (``where`` not checked)?"""
    if t.event in EVENT_TYPE_NAMES:
        return ev_type == t.event
    return ev_type == "track" and ev_name == t.event


#: this module runs compiled (mypyc): its functions are not Python functions
_COMPILED = not isinstance(_is_num, types.FunctionType)


def _fold_of(traits: tuple[TraitDef, ...] | list[TraitDef]) -> Folder:
    """The fastest fold of ``traits`` in this mode (measured, bench/audiences.py's 20 traits:
    compiled, :class:`_NativeFold` 2.65 us/event against the generated code's 3.84; pure, the
    generated code :func:`_fuse_compiled` 3.70 against 4.74)."""
    return _NativeFold(traits) if _COMPILED else _fuse_compiled(traits)


def _named_folders(defs: Definitions) -> dict[str, Folder]:
    """Every trait's own folder (:func:`_fold_of` it alone) by name, built once per :class:`Definitions`."""
    plans = defs.compiled.get("computed.folders.by_name")
    if plans is None:
        plans = defs.compiled["computed.folders.by_name"] = {t.name: _fold_of([t]) for t in defs.computed_traits}
    return plans  # type: ignore[no-any-return]


def _folders(defs: Definitions) -> dict[tuple[str, str | None], Folder]:
    """One folder (:func:`_fold_of`) per event key of :meth:`Definitions.traits_for`, over all its
    traits, built once per :class:`Definitions` (kept in its ``compiled`` memo)."""
    plans = defs.compiled.get("computed.folders")
    if plans is None:
        plans = defs.compiled["computed.folders"] = {k: _fold_of(ts) for k, ts in defs._by_event.items()}
    return plans  # type: ignore[no-any-return]


def _key(v: Any) -> Any:
    """Values as map keys: ``1`` and ``1.0`` are one value, ``true`` is not ``1``."""
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _unkey(k: Any) -> Any:
    return k[1] if isinstance(k, tuple) else k


def _kkey(k: Any) -> tuple[int, Any]:
    return sort_key(_unkey(k))


def _sorted_values(keys: set[Any]) -> list[Any]:
    """``[_unkey(k) for k in sorted(keys, key=_kkey)]``, by :func:`sort_key`'s groups (booleans,
    numbers, strings), each sorted on its own (keys are distinct values, so no ties)."""
    bools: list[Any] = []
    nums: list[Any] = []
    strs: list[Any] = []
    for k in keys:
        v = k[1] if isinstance(k, tuple) else k
        if isinstance(v, bool):
            bools.append(v)
        elif isinstance(v, int | float):
            nums.append(v)
        else:
            strs.append(v)
    if len(nums) > 1:
        nums.sort()
    if strs and len(strs) > 1:
        strs.sort()
    if bools:
        bools.sort()
        return bools + nums + strs
    return nums + strs if nums else strs


def _cap_set(s: set[Any]) -> None:
    while len(s) > DISTINCT_CAP:
        s.discard(max(s, key=_kkey))


def _cap_counts(m: dict[Any, list[Any]]) -> None:
    while len(m) > DISTINCT_CAP:
        worst = min(m, key=lambda k: (m[k][0], m[k][1], m[k][2], _kkey(k)))
        del m[worst]


def _combine(kind: str, a: Any, b: Any) -> Any:
    """Two aggregates of one kind as one (``a`` may be reused; ``b`` is not modified)."""
    if a is None:
        return _copy(kind, b)
    if b is None:
        return a
    if kind in ("count", "sum"):
        return a + b
    if kind == "avg":
        return [a[0] + b[0], a[1] + b[1]]
    if kind == "min":
        return min(a, b)
    if kind == "max":
        return max(a, b)
    if kind == "first":
        return a if (a[0], a[1]) <= (b[0], b[1]) else b
    if kind == "last":
        return a if (a[0], a[1]) >= (b[0], b[1]) else b
    if kind == "most_frequent":
        for k, (n, ts, mid) in b.items():
            cur = a.get(k)
            if cur is None:
                a[k] = [n, ts, mid]
            else:
                cur[0] += n
                if (ts, mid) > (cur[1], cur[2]):
                    cur[1], cur[2] = ts, mid
        _cap_counts(a)
        return a
    a |= b
    _cap_set(a)
    return a


def _copy(kind: str, agg: Any) -> Any:
    if agg is None:
        return None
    if kind == "most_frequent":
        return {k: list(v) for k, v in agg.items()}
    if kind in ("unique_list", "unique_count"):
        return set(agg)
    if kind == "avg":
        return list(agg)
    return agg


_MISSING = object()


def same_value(a: Any, b: Any) -> bool:
    """``a`` and ``b`` are the same value of the same type (so the same JSON): ``1``, ``1.0`` and
    ``true`` are three values here, and a NaN is never the same."""
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is float:
        return a == b and (a != 0.0 or math.copysign(1.0, a) == math.copysign(1.0, b))  # 0.0 is not -0.0 in JSON
    return bool(a == b)


def _final(kind: str, agg: Any, money: bool = False) -> Any:
    if agg is None:
        return 0 if kind in ("count", "sum", "unique_count") else ([] if kind == "unique_list" else None)
    if kind == "avg":
        return agg[0] / agg[1] / 100 if money else agg[0] / agg[1]
    if money:
        return _units(agg)
    if kind in ("first", "last"):
        return agg[2]
    if kind == "most_frequent":
        # the greatest (count, ts, message id), ties by the value's sort order
        top = max(agg.values())
        best = [k for k, c in agg.items() if c == top]
        return _unkey(best[0] if len(best) == 1 else max(best, key=_kkey))
    if kind == "unique_list":
        return _sorted_values(agg)
    if kind == "unique_count":
        return len(agg)
    return agg


@dataclass(slots=True)
class _Trait:
    """One trait's state: ``agg`` (all time) or ``buckets`` (bucket index → aggregate); the
    receipt-time ``boundary`` between history and live, and the seeds applied: per backfill
    invocation ``(run, upto_ms)``, receipt day → bitmask of its parts of that day taken."""

    digest: str
    agg: Any = None
    buckets: dict[int, Any] | None = None
    boundary: int = 0
    seeded: dict[tuple[str, int], dict[int, int]] | None = None
    #: the boundary may still move down: the slot belongs to a user the flow first saw under this
    #: trait (all their history is live), and no seed has been applied to it yet
    fluid: bool = False

    def __getstate__(self) -> tuple[Any, ...]:
        """The pickled state: what :func:`operators.snapshot.pack` gives (snapshot version 9),
        spelled out for these six fields (every snapshot pickles every slot of every user it
        holds; tests/operators/test_computed.py checks it equals ``pack``)."""
        mask = 1  # ``digest`` has no default: always there
        out: list[Any] = [0, self.digest]
        if self.agg is not None:
            mask |= 2
            out.append(self.agg)
        if self.buckets is not None:
            mask |= 4
            out.append(self.buckets)
        boundary = self.boundary
        if type(boundary) is not int or boundary != 0:
            mask |= 8
            out.append(boundary)
        if self.seeded is not None:
            mask |= 16
            out.append(self.seeded)
        if self.fluid is not False:
            mask |= 32
            out.append(self.fluid)
        out[0] = mask
        return tuple(out)

    def __setstate__(self, state: Any) -> None:
        """Restore a pickle of this or an earlier layout (snapshot version 6 had no ``boundary``
        and ``seeded``: they get ``0`` and ``None``)."""
        restore(self, state)


def _new_slot(t: TraitDef, boundary: int, fluid: bool = False) -> _Trait:
    return _Trait(t.digest, None, {} if t.window_ms is not None else None, boundary, None, fluid)


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class Seed:
    """One backfill chunk for one user (a ``_computed_seed`` buffer entry): ``events`` (received
    at most ``upto_ms``) for the traits ``traits`` (``(name, digest)``). ``run`` names the backfill
    run, ``day`` the receipt day (``received_at // DAY_MS``) of its events and ``part`` its index
    among the run's chunks of that day; ``seed_id`` is the entry's stable id."""

    seed_id: str
    uid: str
    run: str
    day: int
    part: int
    upto_ms: int
    traits: tuple[tuple[str, str], ...]
    events: tuple[Event, ...]


@dataclass(slots=True)
class ComputedState:
    """Every computed trait of one user (see the module doc). Picklable."""

    traits: dict[str, _Trait] = field(default_factory=dict)
    #: the latest event time observed (ms); ``-1``: none yet
    max_ts: int = -1
    #: transient, never pickled: the last :meth:`values` per trait, ``name -> (digest, value,
    #: from_ms, until_ms)`` (valid for ``from_ms <= now < until_ms``; ``until_ms`` ``None``: until
    #: the slot changes), and the owner's memo of the audiences last evaluated from them
    memo: dict[str, tuple[str, Any, int, int | None]] | None = field(default=None, repr=False, compare=False)
    audience_memo: dict[str, tuple[Any, Any, bool]] | None = field(default=None, repr=False, compare=False)
    #: transient: the last values() dict, valid for ``from <= now < until`` while no slot changes,
    #: and its JSON (``(values, from_ms, until_ms, json or None, the definitions' fingerprint)``)
    last: tuple[dict[str, Any], int, int, str | None, str] | None = field(default=None, repr=False, compare=False)
    #: transient: no bucket leaves its window before this event time (``None``: not known); when
    #: set under ``exp_defs`` it is exactly the soonest exit of the buckets (``2**62``: none)
    expire_at: int | None = field(default=None, repr=False, compare=False)
    #: transient: the definitions ``expire_at`` was computed under
    exp_defs: Definitions | None = field(default=None, repr=False, compare=False)
    #: transient: the definitions every trait of which has a slot of its digest (:meth:`touch` is a no-op)
    touched: Definitions | None = field(default=None, repr=False, compare=False)
    #: transient: the traits whose slot changed since ``last`` was computed
    dirty: set[str] | None = field(default=None, repr=False, compare=False)
    #: transient: every bucket's exit, sorted, under these definitions (``None``: not known; any
    #: change to a slot forgets it) — the timers' slow path once no bucket is left to drop
    exits: tuple[Definitions, list[int]] | None = field(default=None, repr=False, compare=False)
    #: transient: the definitions :meth:`prune` last ran under, while every slot is still one of
    #: theirs (slots are only made under the definitions passed in: other ones forget it)
    pruned: Definitions | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> list[Any]:
        return [self.traits, self.max_ts]  # the layout of snapshot versions 6 and 7: the memos are not state

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):  # (None, slots): before the memos
            slots = state[1]
            self.traits, self.max_ts = slots.get("traits", {}), slots.get("max_ts", -1)
        else:
            self.traits, self.max_ts = state[0], state[1]
        self.memo = None
        self.audience_memo = None
        self.expire_at = None
        self.last = None
        self.exp_defs = None
        self.touched = None
        self.dirty = None
        self.exits = None
        self.pruned = None

    def _forget_values(self, name: str | None = None) -> None:
        """A slot changed (``None``: any may have, or slots were added or replaced): its remembered
        value is stale."""
        self.exits = None
        if name is None:
            self.last = None
            self.memo = None
            self.audience_memo = None
            self.expire_at = None
            self.touched = None
            self.dirty = None
        else:
            self._changed(name)

    def _changed(self, name: str) -> None:
        """The slot of ``name`` changed: its remembered value is stale (the others' are not)."""
        self.exits = None
        if self.memo:
            self.memo.pop(name, None)
        if self.last is not None:
            if self.dirty is None:
                self.dirty = {name}
            else:
                self.dirty.add(name)

    def _changed_all(self, names: list[str]) -> None:
        """:meth:`_changed` for each of ``names``."""
        self.exits = None
        memo = self.memo
        if memo:
            for name in names:
                memo.pop(name, None)
        if self.last is not None:
            if self.dirty is None:
                self.dirty = set(names)
            else:
                self.dirty.update(names)

    def touch(self, defs: Definitions, received_ms: int, fluid: bool = False) -> None:
        """Give every defined trait a slot: a new or changed one starts empty with boundary
        ``received_ms`` (the receipt time of the user's first event since it appeared). ``fluid``:
        the user is new to the flow (nothing of theirs was processed before), so a live event
        received earlier than the boundary is live too and lowers it, until a seed is applied."""
        if self.touched is defs:
            return  # every slot is there (anything that drops or replaces one forgets ``touched``)
        if self.pruned is not defs:
            self.pruned = None  # slots of other definitions may come in
        for t in defs.computed_traits:
            s = self.traits.get(t.name)
            if s is None or s.digest != t.digest:
                if s is not None:
                    self.expire_at = None  # its buckets go: the soonest exit is not known any more
                self.traits[t.name] = _new_slot(t, received_ms, fluid)
                self._forget_values(t.name)
        self.touched = defs

    def observe(self, defs: Definitions, ev: Event) -> bool:
        """Fold the live event ``ev`` into every trait it matches whose boundary is at or before
        its receipt (:meth:`touch` first); ``True`` iff it counted for some trait."""
        if self.touched is not defs:
            self.touch(defs, ev.received_at)
        if self.exp_defs is not defs:
            self.expire_at = None  # computed under other definitions: recomputed below
        if ev.ts > self.max_ts:
            self.max_ts = ev.ts
        fold = _folders(defs).get((ev.type, ev.name if ev.type == "track" else None))
        changed = fold is not None and fold(self, ev, False)  # only the traits over this event's name or type
        exp = self.expire_at
        if exp is None or self.max_ts >= exp:
            self._expire(defs)
        return changed

    def apply_seed(self, defs: Definitions, seed: Seed) -> int | None:
        """Fold a backfill chunk into each slot it names whose digest matches the definitions:
        only its events received before the slot's boundary, and only if the slot has not taken
        this part of this day, nor another run's chunk of this day (see the module doc). A slot
        that does not exist yet is made with boundary ``seed.upto_ms + 1``. Returns the newest event
        time it counted (``None``: it counted none, nothing changed)."""
        newest: int | None = None
        if self.exp_defs is not defs:
            self.expire_at = None  # computed under other definitions: recomputed below
        if self.pruned is not defs:
            self.pruned = None  # slots of other definitions may come in
        for name, digest in seed.traits:
            t = defs._by_name.get(name)
            if t is None or t.digest != digest:
                continue  # the run was for another definition of this trait: nothing to apply
            s = self.traits.get(name)
            if s is None or s.digest != digest:
                if s is not None:
                    self.expire_at = None  # its buckets go: the soonest exit is not known any more
                if self.touched is not defs:
                    self.touched = None
                s = self.traits[name] = _new_slot(t, seed.upto_ms + 1)
                self.exits = None
            claims = s.seeded if s.seeded is not None else {}
            inv = (seed.run, seed.upto_ms)
            if any(seed.day in days for k, days in claims.items() if k != inv):
                continue  # this day came from another run (or invocation) already
            days = claims.setdefault(inv, {})
            bits = days.get(seed.day, 0)
            if bits & (1 << seed.part):
                continue  # this part again
            days[seed.day] = bits | (1 << seed.part)
            s.seeded = claims
            s.fluid = False  # history below the boundary now comes from seeds: it stays put
            fold = _named_folders(defs)[name]
            for ev in seed.events:
                if ev.received_at < s.boundary:
                    self.max_ts = max(self.max_ts, ev.ts)
                    if _on_event(t, ev.type, ev.name) and fold(self, ev, True):
                        newest = ev.ts if newest is None else max(newest, ev.ts)
        if newest is not None:
            self._expire(defs)
        return newest

    def _expire(self, defs: Definitions) -> None:
        if self.expire_at is not None and self.max_ts < self.expire_at:
            return  # no bucket has reached its exit yet
        soonest: int | None = None
        max_ts = self.max_ts
        slots = self.traits
        for t in defs.computed_traits:
            w = t.window_ms
            if w is None:
                continue
            s = slots.get(t.name)
            if s is None:
                continue
            buckets = s.buckets
            if not buckets or s.digest != t.digest:
                continue
            r = HOUR_MS if w <= 48 * HOUR_MS else DAY_MS  # resolution_ms
            # a bucket's exit grows with its index: the soonest is the smallest index still inside
            cut = (max_ts - w) // r  # exit (b + 1) * r + w <= max_ts  <=>  b < cut
            lo = min(buckets)
            if lo < cut:  # some have left: drop them
                dead = [b for b in buckets if b < cut]
                self._changed(t.name)
                for b in dead:
                    del buckets[b]
                if not buckets:
                    continue
                lo = min(buckets)
            e = (lo + 1) * r + w
            if soonest is None or e < soonest:
                soonest = e
        self.expire_at = soonest if soonest is not None else 2**62
        self.exp_defs = defs

    def values(self, defs: Definitions, now_ms: int) -> dict[str, Any]:
        """Every trait's value at stream time ``now_ms`` (exact for ``now_ms >= max_ts``).

        A trait's value is remembered (not pickled) until its slot changes or ``now_ms`` passes its
        next bucket exit, so rendering a profile again recomputes only the traits that changed; while
        the recomputed values are the same (type and value), the same dict (and its JSON) is returned."""
        last = self.last
        if last is not None and last[1] <= now_ms < last[2] and last[4] == defs.fingerprint:
            dirty = self.dirty
            if not dirty:
                return last[0]
            return self._refresh(defs, now_ms, last, dirty)
        self.dirty = None
        out: dict[str, Any] = {}
        memo = self.memo
        if memo is None:
            memo = self.memo = {}
        valid_until = 2**62
        for t in defs.computed_traits:
            name = t.name
            m = memo.get(name)
            if m is not None and m[0] == t.digest and m[2] <= now_ms and (m[3] is None or now_ms < m[3]):
                out[name] = m[1]
                if m[3] is not None and m[3] < valid_until:
                    valid_until = m[3]
                continue
            v, until = self._value_at(t, now_ms)
            out[name] = v
            memo[name] = (t.digest, v, now_ms, until)
            if until is not None and until < valid_until:
                valid_until = until
        self.last = (out, now_ms, valid_until, None, defs.fingerprint)
        return out

    def _value_at(self, t: TraitDef, now_ms: int) -> tuple[Any, int | None]:
        """One trait's value at ``now_ms`` and the exit until which it holds (``None``: until its slot changes)."""
        s = self.traits.get(t.name)
        agg = None
        until: int | None = None
        if s is not None and s.digest == t.digest:
            buckets = s.buckets
            if buckets is None:
                agg = s.agg
            elif buckets:
                assert t.window_ms is not None
                r = resolution_ms(t.window_ms)
                w = t.window_ms
                cut = (now_ms - w) // r  # a bucket counts at now_ms iff (b + 1) * r + w > now_ms  <=>  b >= cut
                if t.kind == "count":  # integers: any order
                    n = 0
                    first = None
                    for b, c in buckets.items():
                        if b >= cut:
                            n += c
                            if first is None or b < first:
                                first = b
                    if first is not None:
                        agg, until = n, (first + 1) * r + w
                else:
                    live = sorted(b for b in buckets if b >= cut)
                    if live:
                        until = (live[0] + 1) * r + w  # the exit grows with the bucket
                        kind = t.kind
                        for b in live:
                            agg = _combine(kind, agg, buckets[b])
        return _final(t.kind, agg, is_money(t)), until

    def _refresh(self, defs: Definitions, now_ms: int, last: tuple[dict[str, Any], int, int, str | None, str], dirty: set[str]) -> dict[str, Any]:
        """:meth:`values` when only the ``dirty`` slots changed since ``last`` (valid at ``now_ms``)."""
        self.dirty = None
        old = last[0]
        memo = self.memo
        if memo is None:
            memo = self.memo = {}
        valid_until = last[2]
        new: dict[str, Any] | None = None
        for name in dirty:
            t = defs._by_name.get(name)
            if t is None:
                continue
            v, until = self._value_at(t, now_ms)
            memo[name] = (t.digest, v, now_ms, until)
            if until is not None and until < valid_until:
                valid_until = until
            if new is None and not same_value(v, old.get(name, _MISSING)):
                new = dict(old)
            if new is not None:
                new[name] = v
        if new is None:  # every recomputed value is the one remembered: the same dict and JSON
            self.last = (old, now_ms, valid_until, last[3], last[4])
            return old
        self.last = (new, now_ms, valid_until, None, last[4])
        return new

    def values_json(self, defs: Definitions, now_ms: int) -> tuple[dict[str, Any], str]:
        """:meth:`values` and its JSON (the profile's ``computed`` field), both remembered."""
        values = self.values(defs, now_ms)
        last = self.last
        if last is not None and last[0] is values and last[3] is not None:
            return values, last[3]
        text = orjson.dumps(values).decode()
        if last is not None and last[0] is values:
            self.last = (values, last[1], last[2], text, last[4])
        return values, text

    def next_change_ms(self, defs: Definitions, now_ms: int) -> int | None:
        """The earliest bucket exit after ``now_ms`` (no windowed value changes before it)."""
        exp = self.expire_at
        if exp is not None and exp > now_ms and self.exp_defs is defs:
            return exp if exp < 2**62 else None  # the soonest exit of all the buckets is after now_ms
        exits = self._sorted_exits(defs)
        i = bisect_right(exits, now_ms)
        return exits[i] if i < len(exits) else None

    def last_change_ms(self, defs: Definitions, after_ms: int, upto_ms: int) -> int | None:
        """The latest bucket exit in ``(after_ms, upto_ms]`` (``None``: none): where following
        :meth:`next_change_ms` from ``after_ms`` ends before passing ``upto_ms``."""
        exp = self.expire_at
        if exp is not None and exp > upto_ms and self.exp_defs is defs:
            return None  # no bucket exits before upto_ms
        exits = self._sorted_exits(defs)
        i = bisect_right(exits, upto_ms)
        return exits[i - 1] if i > 0 and exits[i - 1] > after_ms else None

    def _sorted_exits(self, defs: Definitions) -> list[int]:
        """:meth:`_exits`, sorted, remembered until a slot changes (an idle user's timers ask again
        and again with the same buckets)."""
        ex = self.exits
        if ex is not None and ex[0] is defs:
            return ex[1]
        out = sorted(self._exits(defs))
        self.exits = (defs, out)
        return out

    def _exits(self, defs: Definitions) -> Iterator[int]:
        """The exit time of every bucket of every windowed trait current under ``defs``."""
        for t in defs.computed_traits:
            s = self.traits.get(t.name)
            if t.window_ms is None or s is None or not s.buckets or s.digest != t.digest:
                continue
            r = resolution_ms(t.window_ms)
            w = t.window_ms
            for b in s.buckets:
                yield (b + 1) * r + w

    def merge(self, other: ComputedState, defs: Definitions) -> None:
        """Fold ``other`` (a user merged into this one) in: exact for every kind within buckets
        (``most_frequent`` over the distinct cap excepted). ``other`` is not modified."""
        self._forget_values()
        if self.pruned is not defs:
            self.pruned = None  # slots of other definitions may come in
        self.max_ts = max(self.max_ts, other.max_ts)
        for t in defs.computed_traits:
            o = other.traits.get(t.name)
            if o is None or o.digest != t.digest:
                continue
            s = self.traits.get(t.name)
            if s is None or s.digest != t.digest:
                s = self.traits[t.name] = _new_slot(t, o.boundary)
            # each side counted live what it received from its own boundary on, and neither had
            # events between the earlier boundary and its own: the earlier one partitions the union
            s.boundary = min(s.boundary, o.boundary)
            s.fluid = s.fluid and o.fluid
            if o.seeded:  # both sides' claims (a day either side took stays taken)
                claims = s.seeded if s.seeded is not None else {}
                for inv, odays in o.seeded.items():
                    days = claims.setdefault(inv, {})
                    for day, bits in odays.items():
                        days[day] = days.get(day, 0) | bits
                s.seeded = claims
            if s.buckets is None:
                s.agg = _combine(t.kind, s.agg, o.agg)
            else:
                for b, agg in (o.buckets or {}).items():
                    s.buckets[b] = _combine(t.kind, s.buckets.get(b), agg)
        self._expire(defs)

    def prune(self, defs: Definitions) -> None:
        """Drop the state of traits no longer defined (or changed: their digest differs)."""
        if self.pruned is defs:
            return  # pruned under these already, and every slot since was made under them
        live = {t.name: t.digest for t in defs.computed_traits}
        for name in [n for n, s in self.traits.items() if live.get(n) != s.digest]:
            del self.traits[name]
            self._forget_values(name)  # (forgets the exits too)
            self.expire_at = None  # its buckets went: the soonest exit is not known any more
            if self.touched is not defs:
                self.touched = None
        self.pruned = defs


#: most events in one seed (one buffer entry)
SEED_EVENTS = 200


def seed_run(traits: tuple[TraitDef, ...] | list[TraitDef]) -> str:
    """The id of a backfill run over ``traits``: a hash of their digests (a re-run has the same)."""
    return hashlib.sha256(orjson.dumps(sorted(t.digest for t in traits))).hexdigest()[:16]


def plan_seeds(uid: str, traits: tuple[TraitDef, ...] | list[TraitDef], events: list[Event], upto_ms: int,
               max_events: int = SEED_EVENTS) -> list[Seed]:  # fmt: skip
    """The seeds of one user's history: ``events`` (the user's, deduplicated by ``messageId``,
    the earliest receipt kept) that match one of ``traits``, in receipt order, split by receipt
    day and then into parts of at most ``max_events``. Ids are stable: the run (the traits'
    digests), the user, the day and the part.

    >>> from operators.definitions import load_definitions, SPEC_EXAMPLE
    >>> d = load_definitions(SPEC_EXAMPLE)
    >>> evs = [_ev("Order Completed", DAY_MS + i, f"m{i}", revenue=1) for i in range(3)] + [_ev("Other", 1, "x")]
    >>> [(s.day, s.part, len(s.events)) for s in plan_seeds("u", d.computed_traits, evs, 2 * DAY_MS, max_events=2)]
    [(1, 0, 2), (1, 1, 1)]
    """
    run = seed_run(traits)
    seen: dict[str, Event] = {}
    for ev in sorted(events, key=lambda e: (e.received_at, e.message_id)):
        if ev.message_id not in seen and any(t.matches(ev.type, ev.name, event_env(ev)) for t in traits):
            seen[ev.message_id] = ev
    names = tuple(sorted((t.name, t.digest) for t in traits))
    by_day: dict[int, list[Event]] = {}
    for ev in seen.values():
        by_day.setdefault(ev.received_at // DAY_MS, []).append(ev)
    out: list[Seed] = []
    for day in sorted(by_day):
        evs = by_day[day]
        for part, i in enumerate(range(0, len(evs), max_events)):
            sid = hashlib.sha256(orjson.dumps([run, uid, day, part])).hexdigest()[:24]
            out.append(Seed(f"seed:{sid}", uid, run, day, part, upto_ms, names, tuple(evs[i : i + max_events])))
    return out


def trait_paths(traits: tuple[TraitDef, ...] | list[TraitDef]) -> frozenset[tuple[str, ...]]:
    """Every event path (``properties.x``, ``context.x``, ``traits.x``) the traits' ``where`` and
    ``value`` read: all a seed has to carry of an event for them."""
    out: set[tuple[str, ...]] = set()
    for t in traits:
        if t.where is not None:
            out |= t.where.fields()
        if t.value is not None:
            out.add(t.value)
    return frozenset(out)


def _put(dst: dict[str, Any], path: tuple[str, ...], v: Any) -> None:
    for part in path[:-1]:
        nxt = dst.get(part)
        if not isinstance(nxt, dict):
            nxt = dst[part] = {}
        dst = nxt
    dst[path[-1]] = v


def compact_event(ev: Event, paths: frozenset[tuple[str, ...]]) -> dict[str, Any]:
    """What a seed keeps of ``ev``: its times, ``messageId``, type, name and the values at
    ``paths`` (a path reads the same on the compact event as on ``ev``: missing stays missing).

    >>> e = _ev("Order Completed", 5, revenue="19.99", other=1)
    >>> compact_event(e, frozenset({("properties", "revenue"), ("context", "page", "url")}))
    {'ts': 5, 'receivedAt': 5, 'messageId': 'm', 'type': 'track', 'name': 'Order Completed', 'properties': {'revenue': '19.99'}}
    >>> event_of_compact(compact_event(e, trait_paths([])), "u").received_at
    5
    """
    out: dict[str, Any] = {"ts": ev.ts, "receivedAt": ev.received_at, "messageId": ev.message_id, "type": ev.type, "name": ev.name}
    env = event_env(ev)
    for path in sorted(paths):
        v: Any = env  # any JSON value on the way down
        for part in path:
            v = v.get(part) if isinstance(v, Mapping) else None
            if v is None:
                break
        if v is not None:
            sub = out.setdefault(path[0], {})
            if len(path) == 1:
                continue
            _put(sub, path[1:], v)
    return out


def event_of_compact(d: Mapping[str, Any], uid: str) -> Event:
    """The :class:`~operators.events.Event` a seed's compact event stands for (for ``uid``)."""
    return Event(message_id=str(d["messageId"]), type=str(d["type"]), name=str(d.get("name", "")), uid=uid, user_id=None,
                 anonymous_id=None, ts=int(d["ts"]), received_at=int(d["receivedAt"]), properties=dict(d.get("properties") or {}),
                 traits=dict(d.get("traits") or {}), context=dict(d.get("context") or {}))  # fmt: skip


def _ev(name: str, ts: int, mid: str = "m", type_: str = "track", **props: Any) -> Event:
    """A minimal event for doctests and tests."""
    return Event(message_id=mid, type=type_, name=name, uid="u", user_id="u", anonymous_id=None, ts=ts,
                 received_at=ts, properties=props, traits={}, context={})
