"""Identity merges at the operator level: operators.identity.route and the merge path of
operators.user.step / ProfileState.merge, as documented today (issue 12 will change the
semantics; these tests pin the current contract)."""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.dedupe import DedupeConfig
from operators.events import Event, Limits, parse_event
from operators.identity import Link, anon_uid, anonymous_key, route
from operators.profile import ProfileState, to_fields
from operators.user import (
    BehaviourUpdate,
    MergeExport,
    MergeIn,
    ProfileUpdate,
    Retire,
    RfmDelta,
    UserConfig,
    UserState,
    step,
)
from tests.operators import delivery

LIM = Limits(timestamp_min_ms=0)
A1 = anon_uid("a1")
DD = DedupeConfig()
T0 = delivery.T0


def _ev(i: int, etype: str, user: str | None, anon: str | None, previous: str | None = None) -> Event:
    raw: dict = {"type": etype, "messageId": f"i{i}", "timestamp": (T0 + i) / 1000, "receivedAt": (T0 + i) / 1000}
    if etype == "track":
        raw["event"] = "Product Viewed"
    if user is not None:
        raw["userId"] = user
    if anon is not None:
        raw["anonymousId"] = anon
    if previous is not None:
        raw["previousId"] = previous
    e = parse_event(raw, LIM)
    assert isinstance(e, Event), e
    return e


# events that pass through the identity stage of anonymous id "a1"
identity_event = st.one_of(
    st.tuples(st.sampled_from(["track", "page", "identify"]), st.sampled_from([None, "u1", "u2"]), st.just("a1"), st.none()),
    st.tuples(st.just("alias"), st.sampled_from(["u1", "u2"]), st.sampled_from([None, "a1"]), st.just("a1")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(identity_event, max_size=20))
def test_route_links_once_and_routes_every_event_once(rows: list[tuple]) -> None:
    """Through one anonymous id's identity step: exactly one Link, to the anonymous key, for
    the first event carrying a userId (before that event); each event goes on exactly once:
    to its userId if it has one, else to the user linked so far, else to the anonymous
    profile; the state is the newest userId seen (a shared device re-links)."""
    linked = None
    links: list[tuple[str, Link]] = []
    first_user = None
    for i, (etype, user, anon, prev) in enumerate(rows):
        e = _ev(i, etype, user, anon, prev)
        assert anonymous_key(e) == "a1"
        before = linked
        linked, out = route(linked, e)
        sent = [(k, x) for k, x in out if isinstance(x, Event)]
        assert len(sent) == 1 and sent[0][1] is e
        assert sent[0][0] == (user if user is not None else before if before is not None else anon_uid("a1"))
        new_links = [(k, x) for k, x in out if isinstance(x, Link)]
        if user is not None and first_user is None:
            first_user = user
            assert new_links == [(anon_uid("a1"), Link(anon_uid("a1"), user, e.ts))]
            assert out[0][1] == new_links[0][1]  # the link goes first
        else:
            assert new_links == []
        links += new_links
        assert linked == (user if user is not None else before)
    assert len(links) == (1 if first_user is not None else 0)


def test_anonymous_key_rules() -> None:
    assert anonymous_key(_ev(1, "track", "u1", None)) is None  # known user only: no identity step
    assert anonymous_key(_ev(2, "track", "u1", "u1")) is None  # same id twice: nothing to link
    assert anonymous_key(_ev(3, "track", None, "a1")) == "a1"
    assert anonymous_key(_ev(4, "alias", "u1", "a9", previous="a1")) == "a1"  # alias: previousId
    assert route(None, _ev(5, "track", "u1", None)) == (None, [("u1", _ev(5, "track", "u1", None))])


def _fold(uid: str, evs: list[Event]) -> ProfileState:
    st_ = ProfileState(uid)
    for e in evs:
        st_.apply(e, DD)
    return st_


MERGED_FIELDS = (
    "email", "event_count", "first_seen_at", "last_seen_at", "purchase_count", "revenue_total",
    "first_purchase_at", "last_purchase_at", "cart_value", "cart_items", "cart", "email_opens",
    "email_clicks", "last_email_open_at",
)  # fmt: skip


def _merged(a_specs: list, b_specs: list) -> tuple[ProfileState, ProfileState, ProfileState, ProfileState, list[Event]]:
    """(anonymous side, known side, known.merge(anonymous), anonymous.merge(known), all events);
    each side saw its events in order; the two sides' event times never tie."""
    a_evs = delivery.to_events(a_specs, uid="anon-1")
    b_evs = delivery.to_events(b_specs, uid="u1", offset_ms=500)
    a = _fold("anon-1", sorted(a_evs, key=lambda e: e.ts))
    b = _fold("u1", sorted(b_evs, key=lambda e: e.ts))
    ab, ba = pickle.loads(pickle.dumps(b)), pickle.loads(pickle.dumps(a))
    ab.merge(a, DD)
    ba.merge(b, DD)
    return a, b, ab, ba, a_evs + b_evs


def _fields(x: ProfileState) -> dict[str, str]:
    f = to_fields(x)
    return {k: f[k] for k in MERGED_FIELDS}


@settings(max_examples=200, deadline=None)
@given(delivery.specs(max_size=15), delivery.specs(max_size=15))
def test_profile_merge_does_not_depend_on_which_side_is_which(a_specs: list, b_specs: list) -> None:
    """ProfileState.merge: the result does not depend on which side is which, except the
    uid and whose id becomes an alias; seq advances by one (one input item); the merged
    dedupe state knows both sides' message ids."""
    a, b, ab, ba, evs = _merged(a_specs, b_specs)
    assert _fields(ab) == _fields(ba)
    assert ab.seq == b.seq + 1 and ba.seq == a.seq + 1
    assert set(ab.aliases) == ({"anon-1"} | set(a.aliases) | set(b.aliases)) - {"u1"}
    assert "u1" in ba.aliases
    assert not any(ab.apply(e, DD) for e in evs)  # replays after the merge: no-ops


@settings(max_examples=200, deadline=None)
@given(delivery.specs(max_size=15, anchors=delivery.ANCHORS_MIN[:3]),
       delivery.specs(max_size=15, anchors=delivery.ANCHORS_MIN[:3]))  # fmt: skip
def test_profile_merge_equals_one_history_within_hours(a_specs: list, b_specs: list) -> None:
    """Within a few hours (no 48 h expiry on either side, no timers), the merged profile is
    the one a single user who sent both histories would have."""
    _, _, ab, _, evs = _merged(a_specs, b_specs)
    one = _fold("u1", sorted(evs, key=lambda e: e.ts))
    assert _fields(ab) == _fields(one)


def _step(st_: UserState | None, uid: str, items: list) -> tuple[UserState | None, list, int]:
    return step(UserConfig(), st_, uid, items)


def test_link_exports_the_anonymous_profile_once_and_retires_it() -> None:
    cfg_evs = [_ev(1, "track", None, "a1"), _ev(2, "page", None, "a1")]
    cat = parse_event({"type": "track", "event": "Product Viewed", "anonymousId": "a1", "messageId": "v1",
                       "timestamp": (T0 + 2) / 1000, "receivedAt": (T0 + 2) / 1000,
                       "properties": {"category": "Shoes"}}, LIM)  # fmt: skip
    assert isinstance(cat, Event)
    cfg_evs.append(cat)
    order = parse_event({"type": "track", "event": "Order Completed", "anonymousId": "a1", "messageId": "o1",
                         "timestamp": (T0 + 3) / 1000, "receivedAt": (T0 + 3) / 1000,
                         "properties": {"total": 12.5}}, LIM)  # fmt: skip
    assert isinstance(order, Event)
    anon, outs, dups = _step(None, A1, [*cfg_evs, order])
    assert anon is not None and anon.profile.seq == 4 and dups == 0
    gone, outs, _ = _step(anon, A1, [Link(A1, "u1", T0 + 10)])
    assert gone is None
    exports = [o for o in outs if isinstance(o, MergeExport)]
    assert len(exports) == 1
    ex = exports[0]
    assert (ex.from_uid, ex.to_uid, ex.merge_id, ex.ts) == (A1, "u1", f"merge:{A1}:u1", T0 + 10)
    assert [o for o in outs if isinstance(o, Retire)] == [Retire(A1, "u1", 5)]
    assert [o for o in outs if isinstance(o, RfmDelta)] == [RfmDelta(anon.rfm, None)]  # leaves the population
    # a Link for an anonymous id that never had a profile exports nothing
    assert _step(None, anon_uid("a9"), [Link(anon_uid("a9"), "u1", T0)]) == (None, [], 0)

    # the known user receives it (through the buffer) and folds it in exactly once
    user, _, _ = _step(None, "u1", [_ev(20, "identify", "u1", None)])
    assert user is not None
    seq0 = user.profile.seq
    merged, outs, _ = _step(user, "u1", [MergeIn(ex.merge_id, A1, ex.ts, ex.state)])
    assert merged is not None
    upd = [o for o in outs if isinstance(o, ProfileUpdate)]
    assert len(upd) == 1 and upd[0].seq == seq0 + 1
    f = upd[0].fields
    assert (f["event_count"], f["purchase_count"], f["revenue_total"], f["anonymous_ids"]) == ("5", "1", "12.50", '["a1"]')
    assert f["top_category"] == "shoes"  # interest merged too
    assert f["session_count"] == "1"  # the anonymous and known events are minutes apart: one session
    again, outs, dups = _step(merged, "u1", [MergeIn(ex.merge_id, A1, ex.ts, ex.state)])
    assert outs == [] and again is not None and again.profile.seq == seq0 + 1  # redelivery: no-op
    # the anonymous events, replayed at the known user, are duplicates
    _, outs, dups = _step(again, "u1", [*cfg_evs, order])
    assert dups == 4 and not [o for o in outs if isinstance(o, ProfileUpdate)]
    # a redelivered merge does not stop the rest of its batch
    later = _ev(30, "track", "u1", None)
    _, outs, _ = _step(again, "u1", [MergeIn(ex.merge_id, A1, ex.ts, ex.state), later])
    assert [o.seq for o in outs if isinstance(o, ProfileUpdate)] == [seq0 + 2]


def test_link_in_a_batch_writes_what_came_before_it() -> None:
    """Events in the same batch before the Link are written (profile, abandonment trigger,
    scoring) before the anonymous profile is exported."""
    add = parse_event({"type": "track", "event": "Product Added", "anonymousId": "a1", "messageId": "c1",
                       "timestamp": T0 / 1000, "receivedAt": T0 / 1000,
                       "properties": {"product_id": "p", "price": 3}}, LIM)  # fmt: skip
    assert isinstance(add, Event)
    anon, _, _ = _step(None, A1, [add])
    views = [parse_event({"type": "track", "event": "Product Viewed", "anonymousId": "a1", "messageId": f"w{i}",
                          "timestamp": (T0 + 61 * 60_000 + i * 1000) / 1000, "receivedAt": (T0 + 61 * 60_000) / 1000},
                         LIM) for i in range(8)]  # fmt: skip
    gone, outs, _ = _step(anon, A1, [*views, Link(A1, "u1", T0 + 62 * 60_000)])
    assert gone is None
    kinds = [type(o).__name__ for o in outs]
    assert kinds.index("ProfileUpdate") < kinds.index("MergeExport")
    (upd,) = [o for o in outs if isinstance(o, ProfileUpdate)]
    assert upd.seq == 9 and upd.event is not None and upd.event["name"] == "Cart Abandoned"
    assert [o.score for o in outs if isinstance(o, BehaviourUpdate)] == [True]
    # without a trigger too: the batch's own events are written before the export
    anon, _, _ = _step(None, A1, [_ev(1, "page", None, "a1")])
    _, outs, _ = _step(anon, A1, [_ev(2, "page", None, "a1"), Link(A1, "u1", T0 + 5)])
    assert [type(o).__name__ for o in outs] == ["ProfileUpdate", "MergeExport", "Retire"]
    assert outs[0].seq == 2
