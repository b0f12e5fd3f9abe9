"""A replayed identity merge counts every event exactly once.

After a ``kill -9`` the dataflow resumes from its last snapshot, and the buffer still holds the
merge export the killed process wrote (the anonymous state *with* an event ``c0`` it had
processed). The replay may read the shards in another order: the identify first, so ``c0`` is
now routed to the known user directly, and the re-emitted export (same ``merge_id``) is without
it. Whichever copy the user reads first is merged; when it was the killed run's copy and ``c0``
reached the user directly before it, ``c0`` was in the user's state twice (the merge added the
counters and the computed-trait buckets blindly, although the user's dedupe held ``c0``'s
messageId). Found by tests/e2e/test_audiences_crash.py (2 of 8 runs on bc19ee6: ``event_count`` 14 for
13 events, ``email_opens`` 3 for 2, ``computed.emails_all`` 3 for 2 for one user). The mirror
case lost events: the replay routes an event to the anonymous profile that the killed run had
sent to the user directly, so only the re-emitted copy holds it, and a user that merged the
killed run's copy first dropped the re-emitted one by its ``merge_id``.

Now an anonymous profile keeps a bounded log of the items it applied
(:class:`operators.user.MergeLog`): the first copy is merged without the logged events the user
holds (rebuilt through the step's own fold), and a later copy adds the logged events the user
lacks. Beyond the bound (the module docstring of :mod:`operators.user`) an event counts twice,
as before; the tests here pin both sides of the bound and a Hypothesis property over the
interleavings.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.definitions import load_definitions
from operators.events import Event, Limits, parse_event
from operators.identity import Link, anon_uid
from operators.user import MERGE_LOG_MIN, MergeExport, MergeIn, UserConfig, UserState, render, step

T0 = 1_715_000_000_000
MIN = 60_000
DEFS = load_definitions("version: 1\ncomputed_traits:\n  - {name: opens, kind: count, event: Email Opened}\n")
RICH = load_definitions("""\
version: 1
computed_traits:
  - {name: opens, kind: count, event: Email Opened}
  - {name: opens_1d, kind: count, event: Email Opened, window: 1d}
  - {name: spend, kind: sum, event: Order Completed, value: properties.revenue}
  - {name: spend_7d, kind: sum, event: Order Completed, value: properties.revenue, window: 7d}
  - {name: top_cat, kind: most_frequent, event: Product Viewed, value: properties.category}
  - {name: cats, kind: unique_list, event: Product Viewed, value: properties.category, window: 7d}
  - {name: first_cat, kind: first, event: Product Viewed, value: properties.category}
  - {name: max_order, kind: max, event: Order Completed, value: properties.revenue}
  - {name: ua_views, kind: count, event: Product Viewed, where: 'context.page.path == "/p"'}
audiences:
  - {name: openers, when: computed.opens >= 2}
  - {name: buyers, when: computed.spend > 20}
""")
A1 = anon_uid("a1")
UA = "Mozilla/5.0 (X11; Linux x86_64) Chrome/123.0"


def _ev(mid: str, ts: int, name: str = "Email Opened", props: dict[str, Any] | None = None, **ids: str) -> Event:
    iso = datetime.fromtimestamp(ts / 1000, UTC).isoformat().replace("+00:00", "Z")
    body: dict[str, Any] = {"type": "track", "event": name, "messageId": mid, "timestamp": iso, "receivedAt": iso,
                            "properties": props or {}, "context": {"page": {"path": "/p"}, "ip": "10.0.0.1", "userAgent": UA}, **ids}  # fmt: skip
    ev = parse_event(body, Limits(timestamp_min_ms=0))
    assert isinstance(ev, Event), ev
    return ev


def _identify(ts: int) -> Event:
    iso = datetime.fromtimestamp(ts / 1000, UTC).isoformat().replace("+00:00", "Z")
    ev = parse_event({"type": "identify", "messageId": "i1", "timestamp": iso, "receivedAt": iso, "userId": "u1", "anonymousId": "a1",
                      "traits": {"email": "u1@example.com"}}, Limits(timestamp_min_ms=0))  # fmt: skip
    assert isinstance(ev, Event), ev
    return ev


def _export(cfg: UserConfig, state: UserState | None, events: list[Event], link_ts: int) -> MergeIn | None:
    """The anonymous profile folds ``events`` (from ``state``, as resumed) and merges on the link:
    the MergeIn the known user reads back from the buffer (``None``: nothing to merge)."""
    for ev in events:
        state, _, _ = step(cfg, state, A1, [ev])
        assert isinstance(state, UserState)
    _, outs, _ = step(cfg, state, A1, [Link(A1, "u1", link_ts)])
    ms = [o for o in outs if type(o) is MergeExport]
    return MergeIn(ms[0].merge_id, ms[0].from_uid, ms[0].ts, ms[0].state) if ms else None


def _opens(u: UserState, defs: Any = DEFS) -> tuple[int, int, int]:
    assert u.computed is not None
    return u.profile.event_count, u.profile.email_opens, u.computed.values(defs, T0 + 10 * MIN)["opens"]


def test_an_event_both_in_a_replayed_merge_copy_and_routed_directly_counts_once() -> None:
    cfg = UserConfig(definitions=DEFS)
    c0 = _ev("c0", T0, anonymousId="a1")
    killed_run_export, _, _ = step(cfg, None, A1, [c0])  # the killed run: c0 at the anonymous profile
    assert isinstance(killed_run_export, UserState)
    m1 = MergeIn(f"merge:{A1}:u1", A1, T0 + 1000, pickle.dumps(killed_run_export, protocol=pickle.HIGHEST_PROTOCOL))
    # the replay: identify, then c0 routed to u1 directly (the link is known), then the killed run's copy arrives
    u, _, _ = step(cfg, None, "u1", [_ev("i1", T0 + 1000, userId="u1"), c0])
    assert isinstance(u, UserState) and u.profile.event_count == 2
    u, _, _ = step(cfg, u, "u1", [m1])
    assert u.profile.event_count == 2 and u.profile.email_opens == 2
    assert u.computed is not None and u.computed.values(DEFS, T0 + 2000)["opens"] == 2


@pytest.mark.parametrize("order", ["direct, killed, re-emitted", "killed, direct, re-emitted", "re-emitted, direct, killed",
                                   "killed, re-emitted, direct", "direct, re-emitted, killed", "re-emitted, killed, direct"])  # fmt: skip
def test_either_copy_in_either_order_counts_the_anonymous_events_once(order: str) -> None:
    """``e1`` before the snapshot, ``c0`` at the anonymous profile in the killed run only (the replay
    routes it to u1 directly): every order of the three deliveries gives u1 i1, e1 and c0 once."""
    cfg = UserConfig(definitions=DEFS)
    e1, c0 = _ev("e1", T0, anonymousId="a1"), _ev("c0", T0 + MIN, anonymousId="a1")
    snap, _, _ = step(cfg, None, A1, [e1])
    killed = _export(cfg, pickle.loads(pickle.dumps(snap)), [c0], T0 + 2 * MIN)
    reemitted = _export(cfg, pickle.loads(pickle.dumps(snap)), [], T0 + 2 * MIN)
    assert killed.merge_id == reemitted.merge_id and killed.state != reemitted.state
    items = {"direct": c0, "killed": killed, "re-emitted": reemitted}
    u, _, _ = step(cfg, None, "u1", [_identify(T0 + 2 * MIN)])
    for name in order.split(", "):
        u, _, _ = step(cfg, u, "u1", [items[name]])
    assert isinstance(u, UserState) and _opens(u) == (3, 2, 2)
    assert orjson.loads(render(u, DEFS)["anonymous_ids"]) == ["a1"]


@pytest.mark.parametrize("order", ["killed first", "re-emitted first"])
def test_an_event_only_the_re_emitted_copy_holds_is_not_lost(order: str) -> None:
    """The mirror case: the killed run routed ``c1`` to u1 directly (lost with u1's unsnapshotted
    state), the replay routes it to the anonymous profile, so only the re-emitted copy holds it;
    reading the killed copy first used to drop the re-emitted one by its ``merge_id``."""
    cfg = UserConfig(definitions=DEFS)
    e1, c1 = _ev("e1", T0, anonymousId="a1"), _ev("c1", T0 + MIN, anonymousId="a1")
    snap, _, _ = step(cfg, None, A1, [e1])
    killed = _export(cfg, pickle.loads(pickle.dumps(snap)), [], T0 + 2 * MIN)
    reemitted = _export(cfg, pickle.loads(pickle.dumps(snap)), [c1], T0 + 2 * MIN)
    copies = [killed, reemitted] if order == "killed first" else [reemitted, killed]
    u, _, _ = step(cfg, None, "u1", [_identify(T0 + 2 * MIN), *copies])
    assert isinstance(u, UserState) and _opens(u) == (3, 2, 2)
    again, outs, _ = step(cfg, u, "u1", copies)  # redelivered: nothing more
    assert isinstance(again, UserState) and _opens(again) == (3, 2, 2) and outs == []


@pytest.mark.parametrize(("newer", "counted"), [(MERGE_LOG_MIN - 1, 1), (2 * MERGE_LOG_MIN + 1, 2)], ids=["within the log", "beyond it"])
def test_the_bound_an_event_older_than_the_log_counts_twice(newer: int, counted: int) -> None:
    """The documented bound: the anonymous profile logs at least its newest MERGE_LOG_MIN items
    (at most twice that). A held event with fewer newer items after it is left out; one with more
    than 2 * MERGE_LOG_MIN after it is in the state before the log only, and counts twice (the
    behaviour before the log)."""
    cfg = UserConfig(definitions=DEFS)
    c0 = _ev("c0", T0, anonymousId="a1")
    views = [_ev(f"v{i}", T0 + (i + 1) * 1000, "Product Viewed", anonymousId="a1") for i in range(newer)]
    m = _export(cfg, None, [c0, *views], T0 + MIN)
    u, _, _ = step(cfg, None, "u1", [_identify(T0 + MIN), c0, m])
    assert isinstance(u, UserState)
    assert _opens(u)[1:] == (counted, counted)
    assert u.profile.event_count == 1 + counted + newer


def test_the_log_is_bounded_and_keeps_only_the_context_the_folds_read() -> None:
    cfg = UserConfig(definitions=RICH)
    st_: UserState | None = None
    for i in range(5 * MERGE_LOG_MIN + 3):
        st_, _, _ = step(cfg, st_, A1, [_ev(f"v{i}", T0 + i * 1000, "Product Viewed", anonymousId="a1")])
        assert isinstance(st_, UserState) and st_.merge_log is not None
        assert min(i + 1, MERGE_LOG_MIN) <= len(st_.merge_log.items) < 2 * MERGE_LOG_MIN
    row = st_.merge_log.items[-1]
    assert isinstance(row, tuple) and Event(*row).context == {"page": {"path": "/p"}, "userAgent": UA}  # no ip
    known, _, _ = step(cfg, None, "u1", [_ev("k", T0, userId="u1")])
    assert isinstance(known, UserState) and known.merge_log is None  # known users keep no log


# ------------------------------------------------------------------ the property over interleavings

_NAMES = ("Email Opened", "Product Viewed", "Order Completed", "Product Added", "Product Removed")
_event = st.tuples(st.sampled_from(_NAMES), st.integers(0, 2 * 24 * 60), st.sampled_from(["shoes", "hats"]), st.integers(1, 30))


def _make(i: int, spec: tuple[str, int, str, int], **ids: str) -> Event:
    name, minute, cat, n = spec
    props: dict[str, Any] = {"category": cat}
    if name == "Order Completed":
        props |= {"revenue": n, "order_id": f"o{i}"}
    elif name in ("Product Added", "Product Removed"):
        props |= {"product_id": f"p{n % 3}", "price": n, "category": ("shoes", "hats", "bags")[n % 3]}  # one category per product
    anon = "anonymousId" in ids
    # distinct times: ties (two adds of a product at one instant) are decided by arrival order
    return _ev(f"{'a' if anon else 'u'}{i}", T0 + minute * MIN + i * 1000 + (0 if anon else 500), name, props, **ids)


def _view(u: UserState, now: int) -> dict[str, Any]:
    f = render(u, RICH, now)
    del f["cart_abandoned"]  # decided by the next event in processing order (or a timer): not a set function
    # sessions split by event-time gaps as events are processed: an anonymous history merged in is added as its own
    # sessions (a set function of neither side's order), so the count may differ by one from a single ordered pass
    del f["session_count"]
    f["interests"] = {k: round(v, 2) for k, v in orjson.loads(f["interests"]).items()}  # summed in another order
    return f


@settings(max_examples=200, deadline=None, derandomize=True)
@given(anon=st.lists(_event, min_size=1, max_size=MERGE_LOG_MIN + 4), own=st.lists(_event, max_size=4), data=st.data())
def test_any_interleaving_of_replayed_copies_and_direct_routing_equals_the_user_of_the_deduplicated_events(
        anon: list[tuple[str, int, str, int]], own: list[tuple[str, int, str, int]], data: st.DataObject) -> None:  # fmt: skip
    """The anonymous events ``a_1..a_n`` (in their shard's order), a snapshot after ``a_s``; the
    killed run linked after ``a_k`` (its export in the buffer, or none if it died before),
    the replay links after ``a_j`` and routes ``a_{j+1}..`` to u1 directly. u1 reads its own
    events, the direct ones, and the copies in any interleaving, in any batches: its profile
    (every rendered field, computed traits and audiences) equals that of one user who got every
    distinct event once — as long as the copies' differences are within the log (``k - s`` and
    ``j - s`` at most MERGE_LOG_MIN)."""
    cfg = UserConfig(definitions=RICH)
    # a longer history before them now and then (the log moves on: its base and mid are used)
    pad = data.draw(st.sampled_from([0, 0, MERGE_LOG_MIN + 3, 2 * MERGE_LOG_MIN + 5]), "older views")
    anon = [("Product Viewed", m * 20 // max(pad, 1), "bags", 1) for m in range(pad)] + anon
    n = len(anon)
    a = [_make(i, spec, anonymousId="a1") for i, spec in enumerate(anon)]
    mine = [_make(i, spec, userId="u1") for i, spec in enumerate(own)]
    s = data.draw(st.one_of(st.integers(0, n), st.just(max(0, n - MERGE_LOG_MIN)), st.just(pad)), "s")
    k = min(n, s + data.draw(st.integers(0, MERGE_LOG_MIN), "k - s"))
    j = min(n, s + data.draw(st.integers(0, MERGE_LOG_MIN), "j - s"))
    link_ts = T0 + 2 * 24 * 60 * MIN  # within the sessions kept exactly (SPAN_KEEP_MS) of every event
    snap = None
    for ev in a[:s]:
        snap, _, _ = step(cfg, snap, A1, [ev])
    raw = pickle.dumps(snap)
    copies = [_export(cfg, pickle.loads(raw), a[s:j], link_ts)]
    if data.draw(st.booleans(), "the killed run exported"):
        copies.append(_export(cfg, pickle.loads(raw), a[s:k], link_ts))
    copies = [c for c in copies if c is not None]
    direct: list[Any] = [_identify(link_ts), *mine, *a[j:]]
    stream: list[Any] = list(direct)
    for c in copies:
        stream.insert(data.draw(st.integers(0, len(stream)), "position"), c)
    u: UserState | None = None
    rest = stream
    while rest:
        cut = data.draw(st.integers(1, len(rest)), "batch")
        u2, _, _ = step(cfg, u, "u1", rest[:cut])
        assert isinstance(u2, UserState)
        u, rest = u2, rest[cut:]
    want, _, _ = step(cfg, None, "u1", [_identify(link_ts), *mine, *a])
    assert isinstance(u, UserState) and isinstance(want, UserState)
    now = link_ts + MIN
    assert _view(u, now) == _view(want, now)
