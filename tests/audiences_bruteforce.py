"""An independent brute-force evaluator of computed traits and audiences (SPEC §6), and a
generated stream to check the whole flow against it.

Contract
--------
:func:`expected` recomputes, at event time ``T``, every profile's ``computed`` object and
``audiences`` array and every ``{prefix}:audience:{name}`` set from the **full list** of events
with ``ts <= T`` — no state, no buckets kept, no incremental update: each value is a fresh pass
over the events. It does not import :mod:`operators.computed` nor the logic of
:mod:`operators.audiences`; it is written from SPEC §6, the bucket rule documented in
``operators/computed.py`` and the value rules documented there:

* a window ``W`` has resolution ``R`` = 1 h for ``W <= 48h``, else 1 d; an event at ``ts`` counts
  at ``now`` iff ``(ts // R + 1) * R + W > now`` (all time: always);
* ``count`` counts every matching event; the other kinds only events whose ``value`` is present;
  ``sum/avg/min/max`` take numbers (not booleans, not NaN, not numeric strings) — except a money
  property (``properties.revenue``, ``price``, ... ``MONEY_FIELDS``), read with
  :func:`operators.money.to_cents` (numeric strings accepted), summed in integer cents, reported
  in currency units (whole amounts as integers); empty ``count``/``sum`` are 0, empty
  ``avg/min/max/first/last/most_frequent`` ``None``;
* ``first``/``last``: by ``(ts, messageId)``; ``most_frequent``: most events, ties to the value
  seen most recently (``(ts, messageId)``, then the value's sort order); ``unique_list``: sorted
  booleans, then numbers, then strings (``1`` and ``1.0`` one value, ``true`` not ``1``),
  capped at the 100 smallest; ``unique_count`` its length.

What it shares with the flow (and why that is not the logic under test): the definitions file's
parser (:func:`operators.definitions.load_definitions`, its compiled ``where``/``when``
expressions: the expression language has its own tests), the money parser, and — for the
**profile-field side** of an audience only (``cart_value``, ``traits.plan``: fields other stages
render and other tests check) — :func:`operators.audiences.profile_env` over the fields the flow
wrote to the profile hash (the shared contract, item 2). ``computed.x`` and ``audience.x`` in
an audience's environment are this module's own values.

Identity, kept simple on purpose (:func:`generate`): a known user ``uNNN`` may have one
anonymous id ``anon-uNNN`` whose events are anonymous-only and come *before* the user's single
``identify`` (``userId`` + ``anonymousId``) in event time; after it the user sends ``userId``
only. Visitors ``vNNN`` stay anonymous. So at ``T``: a user's events are its own plus, once its
identify has ``ts <= T``, its anonymous id's (the flow merges the anonymous history in); an
anonymous id not identified by ``T`` has its own (anonymous) profile; an identified one's
anonymous profile is merged away (``merged_into``) and not compared.

Every generated event time avoids the last 5 minutes of an hour: a bucket exit is always on an
hour boundary, so when a prefix of the stream is compared at its newest event time, the stream
clock's few seconds of wall-time extrapolation while a test waits never reach an exit the brute
force has not seen.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import redis

from operators.definitions import Definitions, TraitDef, load_definitions
from operators.money import MoneyError, to_cents

__all__ = [
    "HOUR", "DAY", "START_MS", "END_MS", "SAMPLES", "RICH", "SPEC_FILE", "Stream", "generate", "expected", "Expected",
    "trait_values", "trait_value", "mismatches", "profile_state", "feed_transitions", "membership_at", "same", "load",
    "memberships", "owners", "audience_sets",
]  # fmt: skip

HOUR = 3_600_000
DAY = 24 * HOUR
#: 2024-04-22T00:00Z .. 2024-06-01T00:00Z: 40 days of event time
END_MS = 1_717_200_000_000
START_MS = END_MS - 40 * DAY
#: where to cut the stream for comparisons in the middle (each prefix is compared at its newest
#: event time, see the module doc): after the early stoppers' 7d windows
#: close, mid-stream, after the early email openers' 30d window closes
SAMPLES = (START_MS + 5 * DAY + 12 * HOUR + 30 * 60_000, START_MS + 16 * DAY + 30 * 60_000,
           START_MS + 37 * DAY + 18 * HOUR + 30 * 60_000)
#: the money properties (operators.events.MONEY_FIELDS, restated: a change there must fail here)
MONEY = ("revenue", "total", "price", "value", "subtotal", "tax", "shipping", "discount")
EVENT_TYPES = ("page", "screen", "identify", "group", "alias")
CAP = 100
PREFIX = "lp"

#: SPEC §6's example file, verbatim
SPEC_FILE = """\
version: 1
computed_traits:
  - name: shoe_views_7d          # [a-z][a-z0-9_]*, unique
    kind: count                  # count | sum | avg | min | max |
                                 # most_frequent | first | last |
                                 # unique_list | unique_count
    event: Product Viewed        # event name (track), or `page`, `identify`, ...
    where: properties.category == "shoes"   # optional condition on the event
    window: 7d                   # Nh | Nd | all (event time, sliding)
  - name: orders_7d
    kind: count
    event: Order Completed
    window: 7d
  - name: spend_90d
    kind: sum
    event: Order Completed
    value: properties.revenue    # the event field aggregated (not for count)
    window: 90d
audiences:
  - name: shoe_browsers_no_order
    when: computed.shoe_views_7d >= 3 and computed.orders_7d == 0
"""

#: every kind, hour and day windows and all time, where-conditions, money and plain numbers,
#: audiences with and/or/not/in, audience.x, traits.x and a profile field (cart_value)
RICH = """\
version: 1
computed_traits:
  - {name: shoe_views_7d, kind: count, event: Product Viewed, where: 'properties.category == "shoes"', window: 7d}
  - {name: orders_7d, kind: count, event: Order Completed, window: 7d}
  - {name: spend_90d, kind: sum, event: Order Completed, value: properties.revenue, window: 90d}
  - {name: views_6h, kind: count, event: Product Viewed, window: 6h}
  - {name: pages_48h, kind: count, event: page, window: 48h}
  - {name: items_sum_3d, kind: sum, event: Order Completed, value: properties.items, window: 3d}
  - {name: spend_avg_30d, kind: avg, event: Order Completed, value: properties.revenue, window: 30d}
  - {name: items_avg_all, kind: avg, event: Order Completed, value: properties.items}
  - {name: cheapest_view_7d, kind: min, event: Product Viewed, value: properties.price, window: 7d}
  - {name: max_order_12h, kind: max, event: Order Completed, value: properties.revenue, window: 12h}
  - {name: max_items_all, kind: max, event: Order Completed, value: properties.items}
  - {name: fav_category_14d, kind: most_frequent, event: Product Viewed, value: properties.category, window: 14d}
  - {name: fav_campaign_all, kind: most_frequent, event: Email Opened, value: properties.campaign}
  - {name: first_category, kind: first, event: Product Viewed, value: properties.category}
  - {name: last_path_24h, kind: last, event: page, value: properties.path, window: 24h}
  - {name: last_plan, kind: last, event: identify, value: traits.plan}
  - {name: categories_7d, kind: unique_list, event: Product Viewed, value: properties.category, window: 7d}
  - {name: campaigns_30d, kind: unique_count, event: Email Opened, value: properties.campaign, window: 30d}
  - {name: pricey_views_2d, kind: count, event: Product Viewed, where: 'properties.price > 100 and properties.category in ["shoes", "bags"]', window: 2d}
  - {name: emails_30d, kind: count, event: Email Opened, window: 30d}
  - {name: emails_all, kind: count, event: Email Opened}
audiences:
  - name: shoe_browsers_no_order
    when: computed.shoe_views_7d >= 3 and computed.orders_7d == 0
  - name: big_spenders
    when: computed.spend_90d > 500
  - name: email_dormant
    when: computed.emails_30d == 0 and computed.emails_all > 0
  - name: hot_now
    when: computed.views_6h >= 1 or computed.pages_48h >= 3
  - name: hot_not_big
    when: audience.hot_now and not audience.big_spenders
  - name: pro_plan_browsers
    when: traits.plan == "pro" and computed.campaigns_30d >= 2 and computed.fav_category_14d in ["shoes", "bags"]
  - name: cart_holders
    when: cart_value > 50 and not (computed.orders_7d >= 1)
"""


# ------------------------------------------------------------------ the stream


@dataclass
class Stream:
    """A generated stream: Segment events (dicts, event-time ordered) plus who is who."""

    events: list[dict[str, Any]]
    #: anonymous id -> (known user, the identify's event time); only identified ids
    identified: dict[str, tuple[str, int]] = field(default_factory=dict)

    def ts(self, ev: Mapping[str, Any]) -> int:
        return _ts(ev)

    def shuffled(self, seed: int, within_ms: int = 20 * 60_000) -> list[dict[str, Any]]:
        """The same events in another order: each displaced later by up to ``within_ms`` of event
        time (far inside the shortest window, 6 h: no event is late for a bucket that has left
        the window, which is the only lateness the computed state drops)."""
        rnd = random.Random(seed)
        keyed = [(_ts(e) + rnd.randrange(within_ms), i, e) for i, e in enumerate(self.events)]
        return [e for _, _, e in sorted(keyed)]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ts(ev: Mapping[str, Any]) -> int:
    return int(datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00")).timestamp() * 1000)


def _time(rnd: random.Random, lo: int, hi: int) -> int:
    """A time in [lo, hi) outside the last 5 minutes of its hour (see the module doc)."""
    while True:
        t = rnd.randrange(lo, hi)
        if t % HOUR < 55 * 60_000:
            return t


def generate(users: int = 300, visitors: int = 60, seed: int = 7) -> Stream:
    """A fixed-seed stream over 40 days: ``users`` known users (half with an anonymous history
    before their identify), ``visitors`` anonymous-only visitors; views of four categories
    (money ``price`` as numbers and numeric strings), carts, orders (money ``revenue``, integer
    ``items``), email opens of five campaigns, pages. A third of the users stop after the first
    four days, so their windows exit long after their last event; a third of the others open
    emails only in the first six days (they go email-dormant 30 days later)."""
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    identified: dict[str, tuple[str, int]] = {}
    n = 0

    def emit(ts: int, ids: dict[str, str], **body: Any) -> None:
        nonlocal n
        n += 1
        ev = {"messageId": f"m{n:06d}", "timestamp": _iso(ts), **ids, **body}
        if "type" not in ev:
            ev["type"] = "track"
        out.append(ev)

    def activity(ts: int, ids: dict[str, str], emails_until: int = END_MS) -> None:
        k = rnd.random()
        if 0.60 <= k < 0.75 and ts > emails_until:
            k = 0.9  # this one stopped opening emails: a page instead
        if k < 0.40:
            cat = rnd.choice(["shoes", "shoes", "hats", "bags", "books"])
            price: Any = rnd.choice([19, 49.5, 120, "150.00", 250, "9.99"])
            emit(ts, ids, event="Product Viewed", properties={"category": cat, "price": price, "product_id": f"p{rnd.randrange(30)}"})
        elif k < 0.50:
            emit(ts, ids, event="Product Added", properties={"product_id": f"p{rnd.randrange(30)}", "price": rnd.choice([20, 35.5, 80]), "quantity": rnd.choice([1, 2])})
        elif k < 0.60:
            rev: Any = rnd.choice([25, 99.99, "180.50", 320, 45.25])
            emit(ts, ids, event="Order Completed", properties={"order_id": f"o{n}", "revenue": rev, "items": rnd.randrange(1, 6)})
        elif k < 0.75:
            emit(ts, ids, event="Email Opened", properties={"campaign": f"c{rnd.randrange(5)}"})
        else:
            emit(ts, ids, type="page", name="Home", properties={"path": rnd.choice(["/", "/sale", "/shoes", "/bags"])})

    for i in range(users):
        uid = f"u{i:03d}"
        lo = START_MS
        hi = START_MS + 4 * DAY if rnd.random() < 1 / 3 else END_MS
        times = sorted(_time(rnd, lo, hi) for _ in range(rnd.randrange(8, 36)))
        plan = rnd.choice(["free", "pro"])
        until = START_MS + 6 * DAY if rnd.random() < 1 / 3 else END_MS
        if rnd.random() < 0.5 and len(times) > 3:
            anon = f"anon-{uid}"
            k = rnd.randrange(1, 4)
            for t in times[:k]:
                activity(t, {"anonymousId": anon}, until)
            ident = times[k]
            emit(ident, {"userId": uid, "anonymousId": anon}, type="identify", traits={"plan": plan, "email": f"{uid}@example.com"})
            identified[anon] = (uid, ident)
            rest = times[k + 1 :]
        else:
            emit(times[0], {"userId": uid}, type="identify", traits={"plan": plan})
            rest = times[1:]
        for t in rest:
            activity(t, {"userId": uid}, until)
    for i in range(visitors):
        anon = f"v{i:03d}"
        for t in sorted(_time(rnd, START_MS, END_MS) for _ in range(rnd.randrange(2, 10))):
            activity(t, {"anonymousId": anon})
    out.sort(key=lambda e: (_ts(e), e["messageId"]))
    return Stream(out, identified)


# ------------------------------------------------------------------ the brute force


def _get(ev: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = ev
    for p in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(p)
    return cur


def _is_num(v: Any) -> bool:
    return type(v) in (int, float) and not math.isnan(v) and not math.isinf(v)


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


def _matches(t: TraitDef, ev: Mapping[str, Any]) -> bool:
    typ = ev.get("type", "track")
    if t.event in EVENT_TYPES:
        if typ != t.event:
            return False
    elif typ != "track" or ev.get("event") != t.event:
        return False
    env = {"properties": ev.get("properties") or {}, "context": ev.get("context") or {}, "traits": ev.get("traits") or {}}
    return t.where is None or t.where.holds(env)


def _money(t: TraitDef) -> bool:
    return t.kind in ("sum", "avg", "min", "max") and t.value is not None and len(t.value) == 2 and t.value[0] == "properties" and t.value[1] in MONEY


def _units(cents: int) -> int | float:
    return cents // 100 if cents % 100 == 0 else cents / 100


def _takes(kind: str, v: Any) -> bool:
    """A present, non-money value counts for ``kind``: numbers for the numeric kinds, scalars for
    the distinct-value kinds, anything for ``first``/``last``."""
    if kind in ("sum", "avg", "min", "max"):
        return _is_num(v)
    if kind in ("most_frequent", "unique_list", "unique_count"):
        return type(v) in (str, bool) or _is_num(v)
    return True


def _window_has(t: TraitDef, ts: int, now: int) -> bool:
    if ts > now:
        return False
    if t.window_ms is None:
        return True
    r = HOUR if t.window_ms <= 48 * HOUR else DAY
    return (ts // r + 1) * r + t.window_ms > now


def trait_value(t: TraitDef, events: Iterable[Mapping[str, Any]], now: int) -> Any:
    """One trait's value at ``now`` from the full event list (any order)."""
    rows: list[tuple[int, str, Any]] = []  # (ts, messageId, value)
    for ev in events:
        ts = _ts(ev)
        if not _window_has(t, ts, now) or not _matches(t, ev):
            continue
        v = _get(ev, t.value) if t.value else None
        if t.kind == "count":
            rows.append((ts, ev["messageId"], None))
            continue
        if v is None:
            continue
        if _money(t):
            try:
                v = to_cents(v)
            except MoneyError:
                continue
        elif not _takes(t.kind, v):
            continue
        rows.append((ts, ev["messageId"], v))
    k = t.kind
    vs = [v for _, _, v in rows]
    if k == "count":
        return len(rows)
    if k == "sum":
        if _money(t):
            return _units(sum(vs)) if vs else 0
        return sum(vs) if vs else 0
    if k == "avg":
        if not vs:
            return None
        return sum(vs) / len(vs) / 100 if _money(t) else sum(vs) / len(vs)
    if k in ("min", "max"):
        if not vs:
            return None
        m = min(vs) if k == "min" else max(vs)
        return _units(m) if _money(t) else m
    if k in ("first", "last"):
        if not rows:
            return None
        rows.sort(key=lambda x: (x[0], x[1]))
        return rows[0 if k == "first" else -1][2]
    if k == "most_frequent":
        tally: dict[Any, list[Any]] = {}
        for ts, mid, v in rows:
            cur = tally.setdefault(_norm(v), [0, (-1, "")])
            cur[0] += 1
            cur[1] = max(cur[1], (ts, mid))
        if not tally:
            return None
        return _denorm(max(tally, key=lambda x: (tally[x][0], tally[x][1], _order(x))))
    distinct = sorted({_norm(v) for v in vs}, key=_order)[:CAP]
    return [_denorm(x) for x in distinct] if k == "unique_list" else len(distinct)


def trait_values(defs: Definitions, events: Iterable[Mapping[str, Any]], now: int) -> dict[str, Any]:
    evs = list(events)
    return {t.name: trait_value(t, evs, now) for t in defs.computed_traits}


def memberships(defs: Definitions, fields: Mapping[str, str], computed: Mapping[str, Any]) -> list[str]:
    """The audiences (sorted) of a profile whose flow-written fields are ``fields`` and whose
    computed values are ``computed`` (this module's). ``audience.x`` is evaluated here, in an
    order of this module's own: repeated passes until no audience changes (an acyclic file
    settles in at most len(audiences) passes, whatever order it is written in)."""
    from operators.audiences import profile_env  # the profile-field side only (module doc)

    env = profile_env(fields)
    inside = {a.name: False for a in defs.audiences}
    env["computed"] = dict(computed)
    env["audience"] = inside
    for _ in range(len(defs.audiences) + 1):
        changed = False
        for a in defs.audiences:
            v = a.when.holds(env)
            if v != inside[a.name]:
                inside[a.name] = v
                changed = True
        if not changed:
            break
    return sorted(n for n, v in inside.items() if v)


@dataclass
class Expected:
    """What the profiles should hold at one time: per profile key, the computed values and the
    event list they came from; the known users (sets are theirs only)."""

    at: int
    events: dict[str, list[dict[str, Any]]]  # profile key -> that profile's events (ts <= at)
    known: set[str]  # profile keys of known users
    computed: dict[str, dict[str, Any]]


def owners(stream: Stream, at: int) -> dict[str, list[dict[str, Any]]]:
    """Profile key -> its events with ``ts <= at`` (identity as in the module doc)."""
    by: dict[str, list[dict[str, Any]]] = {}
    for ev in stream.events:
        if _ts(ev) > at:
            continue
        uid, anon = ev.get("userId"), ev.get("anonymousId")
        if uid:
            key = f"{PREFIX}:profile:{uid}"
        else:
            link = stream.identified.get(anon)
            key = f"{PREFIX}:profile:{link[0]}" if link and link[1] <= at else f"{PREFIX}:profile-anon:{anon}"
        by.setdefault(key, []).append(ev)
    return by


def expected(defs: Definitions, stream: Stream, at: int) -> Expected:
    ev = owners(stream, at)
    known = {k for k in ev if k.startswith(f"{PREFIX}:profile:")}
    return Expected(at, ev, known, {k: trait_values(defs, evs, at) for k, evs in ev.items()})


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values, floats within 1e-9 (a bucketed average sums in another order)."""
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if _is_num(a) and _is_num(b):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def profile_state(r: redis.Redis, keys: Iterable[str]) -> dict[str, dict[str, str]]:
    pipe = r.pipeline(transaction=False)
    keys = list(keys)
    for k in keys:
        pipe.hgetall(k)
    return {k: {f.decode(): v.decode() for f, v in h.items()} for k, h in zip(keys, pipe.execute(), strict=True)}


def audience_sets(r: redis.Redis, defs: Definitions) -> dict[str, set[str]]:
    return {a.name: {m.decode() for m in r.smembers(f"{PREFIX}:audience:{a.name}")} for a in defs.audiences}


def mismatches(r: redis.Redis, defs: Definitions, exp: Expected, limit: int = 8) -> list[tuple[Any, ...]]:
    """Every way the profiles and audience sets in Redis differ from the brute force at
    ``exp.at``: ``(key, what, got, want)``. Empty: they agree."""
    out: list[tuple[Any, ...]] = []
    profiles = profile_state(r, exp.events)
    want_sets: dict[str, set[str]] = {a.name: set() for a in defs.audiences}
    for key, fields in profiles.items():
        if "merged_into" in fields:
            out.append((key, "merged_into", fields["merged_into"], None))
            continue
        want_c = exp.computed[key]
        got_c = orjson.loads(fields["computed"]) if "computed" in fields else None
        if not isinstance(got_c, dict) or not same(got_c, want_c):
            diff = {n: (got_c.get(n) if isinstance(got_c, dict) else None, v) for n, v in want_c.items()
                    if not isinstance(got_c, dict) or not same(got_c.get(n), v)}  # fmt: skip
            out.append((key, "computed", diff or got_c, want_c))
        want_a = memberships(defs, fields, want_c)
        got_a = orjson.loads(fields["audiences"]) if "audiences" in fields else None
        if got_a != want_a:
            out.append((key, "audiences", got_a, want_a))
        if key in exp.known:
            for name in want_a:
                want_sets[name].add(key.removeprefix(f"{PREFIX}:profile:"))
    for name, got in audience_sets(r, defs).items():
        if got != want_sets[name]:
            out.append((f"{PREFIX}:audience:{name}", "members", sorted(got - want_sets[name])[:5], sorted(want_sets[name] - got)[:5]))
    return out[:limit] if limit else out


def membership_at(defs: Definitions, events: list[dict[str, Any]], fields: Mapping[str, str], at: int) -> list[str]:
    """The brute force's audiences of one profile at ``at`` (its events up to then; the
    profile-field side from ``fields``)."""
    return memberships(defs, fields, trait_values(defs, events, at))


def feed_transitions(r: redis.Redis) -> dict[str, list[tuple[str, str, str | None]]]:
    """Per known user, the change feed's audience transitions in feed order:
    ``(audience, "entered" | "exited", event_at)``."""
    out: dict[str, list[tuple[str, str, str | None]]] = {}
    for _, f in r.xrange(f"{PREFIX}:profile-changes"):
        if f.get(b"anonymous") == b"1":
            continue
        uid = f[b"user_id"].decode()
        at = f.get(b"event_at", b"").decode() or None
        for kind in ("entered", "exited"):
            raw = f.get(f"audiences_{kind}".encode())
            for name in orjson.loads(raw) if raw else []:
                out.setdefault(uid, []).append((name, kind, at))
    return out


def load(text: str) -> Definitions:
    return load_definitions(text)
